"""The shipped demo images (``exp/datasets/demo/``): which suit a config, and what each one is.

``demo.yml`` lists each image with its title, kind (``face`` or ``scene``), ImageNet class, source
and licence. The face goes to CelebA-HQ, the scenes to the ImageNet configs; the class-conditional
config restores a demo scene with the scene's own class rather than a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .paths import DEMO_DIR


def demo_entries() -> list[dict]:
    """The entries of ``exp/datasets/demo/demo.yml``: file, title, kind, ImageNet class, source, licence."""
    with open(DEMO_DIR / "demo.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)["images"]


DEFAULT_DIGITS = 4


def default_images(config) -> list:
    """The shipped demo images that suit a config: the face for CelebA-HQ, the scenes for ImageNet,
    and for the digits prior its first held-out digits (arrays in [0, 1], which it never saw)."""
    if config.data.dataset == "sklearn_digits":
        from .selftest import heldout_digits

        return heldout_digits(DEFAULT_DIGITS)[0]
    kind = "face" if config.data.dataset == "CelebA_HQ" else "scene"
    return [DEMO_DIR / e["file"] for e in demo_entries() if e["kind"] == kind]


def known_classes(sources) -> list[int | None]:
    """For each source, the ImageNet class of a demo file of that name, else None."""
    known = {e["file"]: e["imagenet_class"] for e in demo_entries()}
    classes = []
    for source in sources:
        file = Path(source).name if isinstance(source, (str, os.PathLike)) else None
        label = known.get(file)
        classes.append(None if label is None else int(label))
    return classes
