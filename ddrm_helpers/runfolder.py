"""The evaluation folder (``--out``) over a run's life: looked at before anything is loaded, taken
before the first image is restored, written image by image, finished with the merged records and
the summary. Every file goes through :mod:`ddrm_helpers.outdir`'s rules.

==========================  ===============================================================
``run.json``                the settings; the same folder with other settings is refused
``.lock``                   held by rank 0 from the first write to the end: one evaluation at a time
``records/rank-<r>.jsonl``  rank r's records, one line per image (:mod:`ddrm_helpers.records`)
``records/set-aside.txt``   record lines that were not records, kept with where they were and why
``restored/<index>.png``    every restoration, 8-bit
``records.jsonl``           every record, by index; ``summary.md``, ``.csv``, ``.json``: the table
==========================  ===============================================================

:func:`survey` only reads: it refuses, in one line and before anything is downloaded, loaded or
written, a folder of other settings or another data set, a lock held by another process, files
of something else in a folder without ``run.json``, and anything in the way of a file the run
will write (a link, a folder, a file with several hard links or of another owner). :func:`begin`
then takes the lock, looks again (another process may have been quicker) and writes the settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .datasets import DataSet, Item
from .errors import ArgumentError, OutDirError
from .images import read_image_file, to_pil
from .outdir import Folder, Lock, busy_message
from .records import Found, RecordLog, read_records, set_aside
from .summary import summary_files

# What must agree between an evaluation folder and a run that resumes it
RUN_KEYS = ("config", "task", "sigma_y", "steps", "eta", "eta_b", "seed", "classifier_scale", "image_size")
SETTINGS = "run.json"
SETTINGS_MAX = 1 << 20
# The files and folders of an evaluation folder besides run.json, with what each is (in messages)
FILES = {"records.jsonl": "every record, merged", "summary.md": "the summary", "summary.csv": "the summary as CSV",
         "summary.json": "the summary as JSON"}
FOLDERS = {"records": "the records folder", "restored": "the restored images' folder"}
RESTORED_ROLE = "a restored image"


def restored_name(index: int) -> str:
    return f"{index:06d}.png"


def error_record(index: int, item: Item, error: str) -> dict:
    """The record of an image that could not be read: where it is and why."""
    return {"index": index, "name": item.name, "path": str(item.path), "error": error}


def survey(path: Path, run: dict, data_set: DataSet) -> Found:
    """What ``path`` holds for this run (nothing written); see the module docstring."""
    folder = Folder.open(path, create=False)
    if folder is None:
        return Found()
    with folder:
        if Lock.held_elsewhere(folder):
            raise OutDirError(busy_message(path))
        _check_settings(folder, run)
        records = folder.sub("records", FOLDERS["records"], create=False)
        restored = folder.sub("restored", FOLDERS["restored"], create=False)
        try:
            found = read_records(records)
            _check_names(path, found, data_set)
            for name, role in FILES.items():
                folder.check_target(name, role)
            if restored is not None:
                for index in range(len(data_set)):
                    if index not in found.done:
                        restored.check_target(restored_name(index), RESTORED_ROLE)
        finally:
            for opened in (records, restored):
                if opened is not None:
                    opened.close()
    return found


def begin(path: Path, run: dict, data_set: DataSet, problems: dict[int, str]) -> tuple[RunFolder, Found]:
    """Rank 0: take the folder (its lock), write the settings, set bad record lines aside, record
    the images of ``problems`` with their errors. Returns rank 0's :class:`RunFolder` and the
    records found."""
    folder = Folder.open(path, create=True)
    lock = Lock(folder)
    try:
        lock.acquire()
        _check_settings(folder, run)
        if not folder.exists(SETTINGS):
            text = json.dumps(run, indent=1) + "\n"
            folder.replace(SETTINGS, "the settings", lambda f: f.write(text.encode()))
        with folder.sub("records", FOLDERS["records"], create=True) as records:
            found = read_records(records)
            _check_names(path, found, data_set)
            set_aside(records, found)  # before any record file is opened for appending: it may be replaced
        run_folder = RunFolder(folder, 0, lock=lock, create=True)
    except BaseException:
        lock.release()
        folder.close()
        raise
    try:
        for index, error in sorted(problems.items()):
            kept = found.records.get(index)
            if index not in found.done and (kept is None or kept.get("error") != error):
                run_folder.log.write(error_record(index, data_set[index], error))  # not repeated by a rerun
    except BaseException:
        run_folder.close()
        raise
    return run_folder, found


class RunFolder:
    """One rank's hold on the evaluation folder: its record log, the restored images; rank 0 also
    holds the lock, released by :meth:`close`."""

    def __init__(self, folder: Folder, rank: int, *, lock: Lock | None = None, create: bool = False):
        self.folder, self.lock = folder, lock
        self.records = folder.sub("records", FOLDERS["records"], create=create)
        self.restored = folder.sub("restored", FOLDERS["restored"], create=create)
        if self.records is None or self.restored is None:
            raise OutDirError(f"{folder.path} lost its records or restored folder while the evaluation ran")
        self.log = RecordLog(self.records, rank)

    @classmethod
    def join(cls, path: Path, rank: int) -> RunFolder:
        """A rank other than 0, once rank 0 has begun."""
        folder = Folder.open(path, create=False)
        if folder is None:
            raise OutDirError(f"rank {rank} does not see {path}: --out must be a folder every machine sees")
        return cls(folder, rank)

    def save_restored(self, index: int, image: torch.Tensor) -> None:
        """``image`` ([-1, 1]) as ``restored/<index>.png``, written whole or not at all."""
        self.restored.replace(restored_name(index), RESTORED_ROLE, lambda f: to_pil(image).save(f, format="PNG"))

    def has_restored(self, index: int) -> bool:
        return self.restored.exists(restored_name(index))

    def read_restored(self, index: int) -> np.ndarray:
        """``restored/<index>.png`` as an ``(H, W, 3)`` uint8 array."""
        name = restored_name(index)
        file = self.restored.open_read(name, RESTORED_ROLE)
        if file is None:
            raise FileNotFoundError(f"{self.restored.path / name} is missing")
        with file:
            return np.array(read_image_file(file, str(self.restored.path / name)).convert("RGB"))

    def read_all(self) -> Found:
        return read_records(self.records)

    def finish(self, records: list[dict], summary: dict) -> list[Path]:
        """Rank 0: ``records.jsonl`` (every record, by index) and the summary files."""
        merged = "".join(json.dumps(record, allow_nan=False) + "\n" for record in records).encode()
        files = [self.folder.replace("records.jsonl", FILES["records.jsonl"], lambda f: f.write(merged))]
        for name, text in summary_files(summary).items():
            files.append(self.folder.replace(name, FILES[name], lambda f, text=text: f.write(text.encode())))
        return files

    def close(self) -> None:
        self.log.close()
        if self.lock is not None:
            self.lock.release()
        for folder in (self.records, self.restored, self.folder):
            folder.close()


def _check_settings(folder: Folder, run: dict) -> None:
    """The folder's settings agree with ``run``'s; a folder without them holds nothing of ours."""
    data = folder.read(SETTINGS, "the settings", SETTINGS_MAX)
    if data is None:
        for name in (*FILES, *FOLDERS):
            if folder.exists(name):
                raise OutDirError(f"{folder.path} holds {name} but no {SETTINGS}: it is not an evaluation folder, "
                                  "and eval does not write over what it did not make; give an empty or new --out")
        return
    try:
        kept = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        kept = None
    if not isinstance(kept, dict):
        raise OutDirError(f"{folder.path / SETTINGS} (the settings) is not the JSON that eval writes; remove it if "
                          "you do not need it, or give another --out")
    differ = [key for key in RUN_KEYS if kept.get(key) != run[key]]
    if differ:
        said = "; ".join(f"{key} {kept.get(key)!r} there, {run[key]!r} here" for key in differ)
        raise ArgumentError(f"{folder.path} holds an evaluation with other settings ({said}): give another output "
                            "folder, or the same settings to resume it")


def _check_names(path: Path, found: Found, data_set: DataSet) -> None:
    for index, record in found.records.items():
        if index < len(data_set) and record["name"] != data_set[index].name:
            raise ArgumentError(f"{path} holds a record of image {index} named {record['name']!r}, but image "
                                f"{index} of {data_set.description} is {data_set[index].name!r}: another data set "
                                "(or order); give another output folder")
