import pytest

from ddrm_helpers.classes import class_name, imagenet_classes, resolve_class, resolve_classes
from ddrm_helpers.errors import ClassLabelError


def test_names_and_indices_resolve_offline():
    assert len(imagenet_classes()) == 1000
    assert resolve_class("tabby") == resolve_class("Tabby") == resolve_class(281) == resolve_class(" 281 ") == 281
    assert class_name(967) == "espresso" and class_name(resolve_class("missile")) == "missile"
    assert resolve_classes("espresso", 3) == [967, 967, 967]
    assert resolve_classes([281, "espresso"], 2) == [281, 967]


def test_a_wrong_name_gets_suggestions():
    suggestion = r"'cat' is not an ImageNet class name\. Did you mean: 'tiger cat' \(282\)"
    with pytest.raises(ClassLabelError, match=suggestion):
        resolve_class("cat")
    with pytest.raises(ClassLabelError, match="outside 0-999"):
        resolve_class(1000)
    with pytest.raises(ClassLabelError, match="2 class label"):
        resolve_classes([1, 2], 3)
    with pytest.raises(ClassLabelError, match="index 0-999 or a name"):
        resolve_class(2.5)
