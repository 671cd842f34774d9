"""What the app offers in its menus: the configs (the three product ones and the shipped digits
prior), the tasks, the two modes and the ImageNet classes.

No Gradio here: the menus are plain lists of ``(label, value)`` pairs, so that the handlers and
their tests need nothing but this package.
"""

from __future__ import annotations

import re

from ..config import known_configs, load_config
from ..degradations import available_degradations

PHOTO_MODE = "photo"
CLEAN_MODE = "clean"
MODES = [
    ("My photo is degraded: restore it", PHOTO_MODE),
    ("Degrade this clean photo, then restore it (PSNR/SSIM against it)", CLEAN_MODE),
]
# The drawn or uploaded mask; "inp" and "inp_box" make their own masks and suit the clean mode.
MASK_TASK = "inp_mask"
# "deblur" needs a kernel typed as numbers: the command line and restore_photo take one.
_NOT_OFFERED = ("deblur",)
GUESS = "the classifier's guess"
_CLASS_VALUE = re.compile(r"\((\d+)\)$")


def config_choices() -> list[tuple[str, str]]:
    """``(display name, config)`` for the three product configs, then the shipped digits prior."""
    return [(load_config(name).display, name) for name in known_configs()]


def task_choices() -> list[tuple[str, str]]:
    """``("name: what it is", name)`` for every degradation the app can take without typed numbers."""
    return [(f"{name}: {what}" if name != MASK_TASK else f"{name}: inpainting under the mask you draw or upload",
             name) for name, what in available_degradations().items() if name not in _NOT_OFFERED]


def class_choices() -> list[str]:
    """The classifier's guess first, then every ImageNet class as ``"name (index)"``."""
    from ..classes import imagenet_classes

    return [GUESS] + [f"{name} ({index})" for index, name in enumerate(imagenet_classes())]


def class_from_choice(choice: str | None) -> int | None:
    """The class index of a :func:`class_choices` entry; None for the classifier's guess."""
    from ..classes import resolve_class

    if choice in (None, "", GUESS):
        return None
    found = _CLASS_VALUE.search(str(choice))
    return resolve_class(int(found.group(1)) if found else str(choice))


def is_conditional(config: str) -> bool:
    """Whether ``config`` has a classifier (Config 3): its class and guidance scale apply."""
    return "classifier" in load_config(config).checkpoints
