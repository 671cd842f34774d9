"""ImageNet class labels for Config 3: an index (0-999) or a name, offline.

The names are torchvision's (the ones its ImageNet weights carry in their metadata), so no download
is needed. Matching ignores case; a name that is not a class gets the closest ones suggested.

>>> resolve_class("tabby"), resolve_class(281), class_name(967)
(281, 281, 'espresso')
"""

from __future__ import annotations

import difflib
from functools import lru_cache

from .errors import ClassLabelError


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_name(index: int) -> str:
    return imagenet_classes()[index]


def resolve_class(label: int | str) -> int:
    """The class index of ``label``: an int in 0..999, a digit string, or a class name."""
    names = imagenet_classes()
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise ClassLabelError(f"an ImageNet class is an index 0-999 or a name; got {label!r}")
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label.strip())
    if isinstance(label, int):
        if not 0 <= label < len(names):
            raise ClassLabelError(f"ImageNet class index {label} is outside 0-{len(names) - 1}")
        return label
    wanted = label.strip().lower()
    lowered = [n.lower() for n in names]
    if wanted in lowered:
        return lowered.index(wanted)
    as_word = [n for n in lowered if wanted in n.split()]
    containing = [n for n in lowered if wanted in n]
    close = difflib.get_close_matches(wanted, lowered, n=5, cutoff=0.6)
    suggestions = list(dict.fromkeys(as_word + containing + close))[:8]
    hint = (" Did you mean: " + ", ".join(f"{names[lowered.index(s)]!r} ({lowered.index(s)})" for s in suggestions)
            + "?") if suggestions else ""
    raise ClassLabelError(f"'{label}' is not an ImageNet class name.{hint} "
                          "Any index 0-999 works too (see ddrm_helpers.classes.imagenet_classes()).")


def resolve_classes(labels, count: int) -> list[int]:
    """One class per image: a single label is used for all ``count`` images."""
    if isinstance(labels, (int, str)):
        labels = [labels] * count
    labels = list(labels)
    if len(labels) != count:
        raise ClassLabelError(f"{len(labels)} class label(s) for {count} image(s): give one per image, or one for all")
    return [resolve_class(label) for label in labels]
