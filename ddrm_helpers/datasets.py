"""Data sets to evaluate on: a folder of images, a list file, or a torchvision ``ImageFolder``.

>>> data = open_data("exp/datasets/imagenet/imagenet_val_1k.txt", root="/data/imagenet/val")
>>> data = open_data("my_photos/")                      # the images in it, by name
>>> data = open_data("/data/imagenet/val")              # class subfolders: an ImageFolder
>>> data = open_data(torchvision.datasets.ImageFolder("/data/imagenet/val"))

Each gives an ordered list of :class:`Item`: the file, its name relative to the data set's root
(what records and summaries show) and its class index when the data set has one. The order is the
data set's own (the list's lines; a folder's files sorted by name; ``ImageFolder``'s samples, in
torchvision's order), and an image's index in it is what its seed comes from
(:mod:`ddrm_helpers.evaluation`).

A list file is the reference's ``imagenet_val_1k.txt`` form: one path per line, relative to
``root`` (default: the list's own folder), optionally followed by an ImageNet class index; blank
lines and lines starting with ``#`` are skipped. A path without a suffix is looked for with the
usual image suffixes (the reference adds ``.jpeg``; ImageNet's files end in ``.JPEG``).

Only the paths are taken from an ``ImageFolder`` object: its ``transform`` is not used, since every
image is prepared the reference's way (its centred square, resized to the model's size;
:func:`~ddrm_helpers.images.load_image`). Its class indices are taken as ImageNet's only when it has
the 1,000 classes (the ImageNet layout, one folder per synset, sorted).

Whoever fills the data set's folder decides what we read, so nothing leads out of it: a list's
path that is absolute or climbs out of ``root`` is refused naming its line; a link (in a folder or
a list) is followed only when its target lies inside the data set's root, else the data set is
refused in one line; folders are walked once each, so a link loop ends, and an image reached by
several names is evaluated once (said in a note). An entry that is not a regular file (a pipe, a
device) stays in the data set: :func:`check_images` gives it its error, as for an image that cannot
be read.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ClassLabelError, ImageError
from .images import open_regular, probe
from .safefs import what_is

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
IMAGENET_CLASSES = 1000
LIST_MAX_BYTES = 64 << 20  # the 50,000 lines of ImageNet's validation set take 2 MB
CHECK_THREADS = 8  # images decoded at once by check_images (each at most MAX_PIXELS)
LIST_HINT = "paths in a list are relative to --root (root=), or to the list's folder"


@dataclass(frozen=True)
class Item:
    """One image of a data set: its file, its name relative to the data set, its class (or None)."""

    path: Path
    name: str
    label: int | None = None


@dataclass(frozen=True)
class DataSet:
    """The images of a data set, in order. ``imagenet_labels``: the labels are ImageNet class indices.
    ``notes``: what was found while reading it and left out (a name leading to an image already in)."""

    items: tuple[Item, ...]
    description: str
    imagenet_labels: bool = False
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]


def open_data(data, root: str | os.PathLike | None = None, limit: int | None = None) -> DataSet:
    """The data set ``data`` names: a folder of images, a folder of class subfolders, a list file,
    or an ``ImageFolder`` (any torchvision ``DatasetFolder``); the first ``limit`` images if given.

    Raises ``FileNotFoundError`` when the data set or images it lists are missing (naming the first
    few), and ``ValueError`` subclasses when it holds no image, a label is not an ImageNet class, or
    an entry leads out of the data set.
    """
    if root is not None and not isinstance(data, (str, os.PathLike)):
        raise ImageError("root= is for a list file, whose paths are relative to it")
    if _is_dataset_folder(data):
        data_set = _from_samples(data.samples, Path(data.root), len(data.classes), f"ImageFolder {data.root}")
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"No data set at {path}: give a folder of images, a folder of class "
                                    "subfolders, or a list file") from None
        if stat.S_ISREG(mode):
            data_set = _from_list(path, Path(root).expanduser() if root is not None else path.parent)
        elif not stat.S_ISDIR(mode):
            raise ImageError(f"{path} is {what_is(Path(os.path.realpath(path)))}: give a folder of images, a folder "
                             "of class subfolders, or a list file")
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
        data_set = DataSet(data_set.items[:limit], data_set.description, data_set.imagenet_labels, data_set.notes)
    return data_set


def check_images(data_set: DataSet, indices) -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    """Every image among ``indices`` opened and decoded to its end, before any model is loaded:
    those that cannot be used (by index, the one line that says why) and the sizes (width, height)
    of the rest. Decoded on up to ``CHECK_THREADS`` threads (Pillow decodes without the GIL), each
    image dropped once checked."""
    def check(index: int):
        try:
            return index, probe(data_set[index].path), None
        except (ImageError, OSError) as err:
            return index, None, str(err)

    problems, sizes = {}, {}
    with ThreadPoolExecutor(max_workers=min(CHECK_THREADS, os.cpu_count() or 1)) as pool:
        for index, size, problem in pool.map(check, indices):
            if problem is None:
                sizes[index] = size
            else:
                problems[index] = problem
    return problems, sizes


def _is_dataset_folder(data) -> bool:
    if isinstance(data, (str, os.PathLike)):
        return False
    from torchvision.datasets import DatasetFolder

    return isinstance(data, DatasetFolder)


class _Walk:
    """What is taken from a data set's root: links followed only within it, each folder walked
    once, each file taken once (by device and inode: under its own name rather than a link's),
    and the names that led to something already taken."""

    def __init__(self, root: Path, description: str):
        self.root, self.real_root = root, Path(os.path.realpath(root))
        self.description = description
        self.found: list[tuple[Path, str, int | None, tuple | None, bool]] = []
        self.folders: set[tuple[int, int]] = set()
        self.repeated: list[str] = []

    def inside(self, path: Path, name: str, where: str | None = None) -> Path:
        """The real path of ``path``; ``ImageError`` if it lies outside the root."""
        real = Path(os.path.realpath(path))
        if real == self.real_root or real.is_relative_to(self.real_root):
            return real
        if where is not None:  # a list file's line
            raise ImageError(f"{where}: {name} is a link to {real}, outside {self.root}; {LIST_HINT}, and links out "
                             "of it are not followed")
        raise ImageError(f"{self.root}: {name} is a link to {real}, outside the data set's folder; links out of a "
                         "data set are not followed (copy the file in, or give the folder that holds it)")

    def new_folder(self, path: Path, name: str, link: bool = True) -> bool:
        """Whether the folder at ``path`` is walked for the first time; if it is reached through a
        ``link``, it must lie inside the root (a folder that is not a link, in one that is inside,
        is inside)."""
        st = os.stat(self.inside(path, name) if link else path)
        key = (st.st_dev, st.st_ino)
        if key in self.folders:
            self.repeated.append(name)
            return False
        self.folders.add(key)
        return True

    def add(self, path: Path, name: str, label: int | None = None, where: str | None = None) -> None:
        """The image at ``path``, named ``name`` in the data set."""
        real = self.inside(path, name, where)
        try:
            st = os.stat(real)
            key = (st.st_dev, st.st_ino)
        except OSError:  # a link to nothing: kept, its check says so
            key = None
        self.found.append((real, name, label, key, os.path.islink(path)))

    def items(self) -> tuple[Item, ...]:
        """The images in the order found, each file once: its first name that is not a link, else
        its first name."""
        owner = {}
        for position, (_, _, _, key, link) in enumerate(self.found):
            if key is not None and (key not in owner or (self.found[owner[key]][4] and not link)):
                owner[key] = position
        taken = []
        for position, (real, name, label, key, _) in enumerate(self.found):
            if key is None or owner[key] == position:
                taken.append(Item(real, name, label))
            else:
                self.repeated.append(name)
        return tuple(taken)

    def data_set(self, imagenet_labels: bool, classes: int | None = None) -> DataSet:
        """The data set found; labels kept only if they are ImageNet's (``classes`` is 1,000)."""
        items = self.items()
        if classes is not None:
            imagenet_labels = classes == IMAGENET_CLASSES
            if not imagenet_labels:  # its labels are its own folders' order, not ImageNet classes
                items = tuple(Item(item.path, item.name) for item in items)
        notes = ()
        if self.repeated:
            notes = (f"{self.root}: {len(self.repeated)} link(s) lead to images or folders already in the data set "
                     f"(first: {self.repeated[0]}); each image is evaluated once.",)
        return DataSet(items, self.description, imagenet_labels, notes)


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as found:
        return sorted(found, key=lambda entry: entry.name)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # a link to a folder counts, as in torchvision
    except OSError:
        return False


def _from_folder(folder: Path) -> DataSet:
    entries = _entries(folder)
    files = [e for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and not _is_folder(e)]
    if files or not any(_is_folder(e) for e in entries):
        walk = _Walk(folder, f"the folder {folder}")
        for entry in files:
            walk.add(folder / entry.name, entry.name)
        return walk.data_set(imagenet_labels=False)
    return _from_class_folders(folder, [e.name for e in entries if _is_folder(e)])


def _from_class_folders(folder: Path, classes: list[str]) -> DataSet:
    """torchvision's ``ImageFolder`` layout, in its order (class folders by name; within each, the
    folders below it sorted by path, their files by name), walked without leaving the root. Every
    class's own folders are walked first, links to folders after, so that a link into another
    class (or back up) leads to folders already taken and gives no image a second label."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    walk = _Walk(folder, f"the ImageFolder {folder}")
    walk.new_folder(folder, ".", link=False)
    for name in classes:
        walk.new_folder(folder / name, name)
    below = {name: [] for name in classes}
    pending = [(path, inner, name) for name in classes for path, inner in _walk_real(walk, folder / name, name,
                                                                                      below[name])]
    while pending:
        path, inner, name = pending.pop(0)
        if walk.new_folder(path, inner):
            pending += [(more, deeper, name) for more, deeper in _walk_real(walk, path, inner, below[name])]
    empty = []
    for label, name in enumerate(classes):
        images = [(os.path.join(folder, here), file) for here, files in sorted(below[name]) for file in files
                  if file.lower().endswith(IMG_EXTENSIONS)]
        if not images:
            empty.append(name)
        for here, file in images:
            path = Path(here) / file
            walk.add(path, path.relative_to(folder).as_posix(), label)
    if empty:
        raise ImageError(f"{folder}: the class folder(s) {', '.join(empty[:3])}{', ...' if len(empty) > 3 else ''} "
                         f"hold no image ({', '.join(IMG_EXTENSIONS)})")
    return walk.data_set(False, len(classes))


def _walk_real(walk: _Walk, top: Path, name: str, below: list) -> list[tuple[Path, str]]:
    """``below`` gets ``(name, files)`` for ``top`` and each folder under it that is not a link
    (with a stack, not recursion: a tree of any depth); returns the links to folders met there,
    not followed."""
    waiting, links = [(top, name)], []
    while waiting:
        here, name = waiting.pop()
        files = []
        for entry in _entries(here):
            inner = f"{name}/{entry.name}"
            if not _is_folder(entry):
                files.append(entry.name)
            elif entry.is_symlink():
                links.append((here / entry.name, inner))
            elif walk.new_folder(here / entry.name, inner, link=False):
                waiting.append((here / entry.name, inner))
        below.append((name, files))
    return links


def _from_samples(samples, root: Path, classes: int, description: str) -> DataSet:
    walk = _Walk(root, description)
    for file, label in samples:
        path = Path(file)
        walk.add(path, path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name, int(label))
    return walk.data_set(False, classes)


def _read_list(list_file: Path) -> str:
    with open_regular(list_file) as file:
        data = file.read(LIST_MAX_BYTES + 1)
    if len(data) > LIST_MAX_BYTES:
        raise ImageError(f"{list_file} is larger than {LIST_MAX_BYTES:,} bytes, more than a list of image paths "
                         "can be: give a folder, or a list file of one path per line")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageError(f"{list_file} is not a text file: a list file holds one image path per line (to evaluate "
                         "a folder, give the folder)") from None


def _from_list(list_file: Path, root: Path) -> DataSet:
    walk = _Walk(root, f"the list {list_file}")
    missing, listed = [], 0
    for number, line in enumerate(_read_list(list_file).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, label = line, None
        parts = line.rsplit(maxsplit=1)
        where = f"{list_file}, line {number}"
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            name, label = parts[0], int(parts[1])
            if not 0 <= label < IMAGENET_CLASSES:
                raise ClassLabelError(f"{where}: class {label} is not an ImageNet class index "
                                      f"(0-{IMAGENET_CLASSES - 1})")
        if Path(name).is_absolute():
            raise ImageError(f"{where}: {name} is an absolute path; {LIST_HINT}")
        if Path(os.path.normpath(name)).parts[:1] == ("..",):
            raise ImageError(f"{where}: {name} climbs out of {root}; {LIST_HINT}")
        listed += 1
        path = _find(root / name)
        if path is None:
            missing.append(name)
        else:
            walk.add(path, name if path.name == Path(name).name else f"{name}{path.suffix}", label, where)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise FileNotFoundError(f"{len(missing)} of the {listed} images of {list_file} are not under {root} "
                                f"({shown}); {LIST_HINT}")
    return walk.data_set(imagenet_labels=True)


def _find(path: Path) -> Path | None:
    """``path`` if something other than a folder is there; else, for a path without an image
    suffix, the file with one."""
    candidates = [path]
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        candidates += [path.with_name(path.name + suffix) for suffix in IMAGE_SUFFIXES]
        candidates += [path.with_name(path.name + suffix.upper()) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        try:
            if not stat.S_ISDIR(os.stat(candidate).st_mode):
                return candidate
        except OSError:
            continue
    return None
