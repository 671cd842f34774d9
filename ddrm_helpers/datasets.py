"""Data sets to evaluate on: a folder of images, a list file, or a torchvision ``ImageFolder``.

>>> data = open_data("exp/datasets/imagenet/imagenet_val_1k.txt", root="/data/imagenet/val")
>>> data = open_data("my_photos/")                      # the images in it, by name
>>> data = open_data("/data/imagenet/val")              # class subfolders: an ImageFolder
>>> data = open_data(torchvision.datasets.ImageFolder("/data/imagenet/val"))

Each gives an ordered list of :class:`Item`: the file, its name relative to the data set's root
(what records and summaries show) and its class index when the data set has one. The order is the
data set's own (the list's lines; a folder's files sorted by name; ``ImageFolder``'s samples), and
an image's index in it is what its seed comes from (:mod:`ddrm_helpers.evaluation`).

A list file is the reference's ``imagenet_val_1k.txt`` form: one path per line, relative to
``root`` (default: the list's own folder), optionally followed by an ImageNet class index; blank
lines and lines starting with ``#`` are skipped. A path without a suffix is looked for with the
usual image suffixes (the reference adds ``.jpeg``; ImageNet's files end in ``.JPEG``).

Only the paths are taken from an ``ImageFolder`` object: its ``transform`` is not used, since every
image is prepared the reference's way (its centred square, resized to the model's size;
:func:`~ddrm_helpers.images.load_image`). Its class indices are taken as ImageNet's only when it has
the 1,000 classes (the ImageNet layout, one folder per synset, sorted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ClassLabelError, ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Item:
    """One image of a data set: its file, its name relative to the data set, its class (or None)."""

    path: Path
    name: str
    label: int | None = None


@dataclass(frozen=True)
class DataSet:
    """The images of a data set, in order. ``imagenet_labels``: the labels are ImageNet class indices."""

    items: tuple[Item, ...]
    description: str
    imagenet_labels: bool = False

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]


def open_data(data, root: str | os.PathLike | None = None, limit: int | None = None) -> DataSet:
    """The data set ``data`` names: a folder of images, a folder of class subfolders, a list file,
    or an ``ImageFolder`` (any torchvision ``DatasetFolder``); the first ``limit`` images if given.

    Raises ``FileNotFoundError`` when the data set or images it lists are missing (naming the first
    few), and ``ValueError`` subclasses when it holds no image or a label is not an ImageNet class.
    """
    if root is not None and not isinstance(data, (str, os.PathLike)):
        raise ImageError("root= is for a list file, whose paths are relative to it")
    if _is_dataset_folder(data):
        data_set = _from_samples(data.samples, Path(data.root), len(data.classes), f"ImageFolder {data.root}")
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"No data set at {path}: give a folder of images, a folder of class "
                                    "subfolders, or a list file")
        if path.is_file():
            data_set = _from_list(path, Path(root).expanduser() if root is not None else path.parent)
        elif root is not None:
            raise ImageError("root= is for a list file, whose paths are relative to it; a folder is its own root")
        else:
            data_set = _from_folder(path)
    else:
        raise ImageError(f"cannot evaluate on a {type(data).__name__}: give a folder, a list file or a "
                         "torchvision ImageFolder")
    if not data_set.items:
        raise ImageError(f"{data_set.description} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    if limit is not None:
        data_set = DataSet(data_set.items[:limit], data_set.description, data_set.imagenet_labels)
    return data_set


def _is_dataset_folder(data) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return False
    from torchvision.datasets import DatasetFolder

    return isinstance(data, DatasetFolder)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _from_folder(folder: Path) -> DataSet:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
    if files:
        return DataSet(tuple(Item(p, p.name) for p in files), f"the folder {folder}")
    if any(p.is_dir() for p in folder.iterdir()):
        from torchvision.datasets import ImageFolder

        try:
            image_folder = ImageFolder(str(folder))
        except FileNotFoundError as err:  # class folders without images
            raise ImageError(f"{folder}: {err}") from None
        return _from_samples(image_folder.samples, folder, len(image_folder.classes), f"the ImageFolder {folder}")
    return DataSet((), f"the folder {folder}")


def _from_samples(samples, root: Path, classes: int, description: str) -> DataSet:
    items = []
    for file, label in samples:
        path = Path(file)
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        items.append(Item(path, name, int(label)))
    imagenet = classes == IMAGENET_CLASSES
    if not imagenet:  # its labels are its own folders' order, not ImageNet classes
        items = [Item(item.path, item.name) for item in items]
    return DataSet(tuple(items), description, imagenet)


def _from_list(list_file: Path, root: Path) -> DataSet:
    items, missing = [], []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, label = line, None
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            name, label = parts[0], int(parts[1])
            if not 0 <= label < IMAGENET_CLASSES:
                raise ClassLabelError(f"{list_file}, line {number}: class {label} is not an ImageNet class index "
                                      f"(0-{IMAGENET_CLASSES - 1})")
        path = _find(root / name)
        if path is None:
            missing.append(name)
        else:
            items.append(Item(path, name if path.name == Path(name).name else f"{name}{path.suffix}", label))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{len(missing)} of the {len(missing) + len(items)} images of {list_file} are not "
                                f"under {root} ({shown}); paths in a list are relative to --root (root=), or to the "
                                "list's folder")
    return DataSet(tuple(items), f"the list {list_file}", imagenet_labels=True)


def _find(path: Path) -> Path | None:
    """``path`` if it is a file; else, for a path without an image suffix, the file with one."""
    if path.is_file():
        return path
    if not _is_image(path):
        for suffix in IMAGE_SUFFIXES:
            for candidate in (path.with_name(path.name + suffix), path.with_name(path.name + suffix.upper())):
                if candidate.is_file():
                    return candidate
    return None
