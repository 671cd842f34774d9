"""An evaluation's records: one JSON line per image in ``records/rank-<r>.jsonl``, read back to resume.

A record is what :func:`~ddrm_helpers.evaluation.image_record` makes (index, name, file, seed, the
figures, ``finite``), or, for an image that could not be read, its index, name, file and ``error``.
Reading them back, each line is checked: a line that is not a record (cut short by a kill, not
JSON, JSON of another shape, a figure that is NaN or infinite, longer than any record) never stops
a run. :func:`set_aside` moves such lines out of the record files into ``records/set-aside.txt``
(where they were and why, then the line), says so once, and their images are computed again.

Per image the first good record counts; an image with only error records keeps its last one, and
is checked again by the next run (a file the user has since replaced is then restored).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass, field

from .outdir import Folder
from .results import json_safe

RANK_FILE = re.compile(r"rank-\d{5}\.jsonl")
SET_ASIDE = "set-aside.txt"
LINE_MAX = 1 << 16  # a record is about 500 bytes; its name and path are at most a few kB
FIGURES = ("psnr", "ssim", "psnr_degraded", "ssim_degraded", "consistency", "consistency_rel", "seconds")


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.jsonl"


def rank_role(name: str) -> str:
    return f"rank {int(name[5:10])}'s records"


def is_error(record: dict) -> bool:
    return "error" in record


@dataclass(frozen=True)
class BadLine:
    """A line of a record file that is not a record: its file, its number, its bytes (at most
    ``LINE_MAX``) and why."""

    file: str
    number: int
    text: bytes
    why: str


@dataclass
class Found:
    """The records of a folder (per index: the first good one, else the last error) and its bad lines."""

    records: dict[int, dict] = field(default_factory=dict)
    bad: list[BadLine] = field(default_factory=list)

    @property
    def done(self) -> set[int]:
        """The images that have a good record (an error record is tried again)."""
        return {index for index, record in self.records.items() if not is_error(record)}

    def keep(self, record: dict) -> None:
        index = record["index"]
        kept = self.records.get(index)
        if kept is None or is_error(kept):
            self.records[index] = record


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NotFinite(name)


def parse(line: bytes) -> tuple[dict | None, str | None]:
    """``(record, None)`` for a record, ``(None, why)`` for anything else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except _NotFinite as err:
        return None, f"a non-finite number ({err})"
    except (json.JSONDecodeError, RecursionError):
        return None, "not JSON (a line cut short, or written by hand)"
    if not isinstance(value, dict):
        return None, f"JSON but not a record (a {type(value).__name__})"
    for key, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):  # 1e999 parses as infinity
            return None, f"a non-finite number in {key}"
    if type(value.get("index")) is not int or value["index"] < 0 or not isinstance(value.get("name"), str):
        return None, "JSON but not a record (no index and name)"
    if is_error(value):
        return (value, None) if isinstance(value["error"], str) else (None, "an error record without its error")
    for key in FIGURES:
        number = value.get(key, "absent")
        if number is not None and (type(number) not in (int, float)):
            return None, f"JSON but not a record ({key} is {'absent' if number == 'absent' else 'not a number'})"
    if type(value.get("seed")) is not int or type(value.get("finite")) is not bool:
        return None, "JSON but not a record (no seed, or no finite)"
    return value, None


def _numbered_lines(file):
    """``(number, bytes, length)`` for each line of ``file``: at most ``LINE_MAX`` bytes are kept of
    a longer one, which is read to its end without being held."""
    number = 0
    while True:
        raw = file.readline(LINE_MAX + 1)
        if not raw:
            return
        number += 1
        length = len(raw)
        while not raw.endswith(b"\n") and length > LINE_MAX:
            more = file.readline(LINE_MAX + 1)
            if not more:
                break
            length += len(more)
            if more.endswith(b"\n"):
                break
        yield number, raw[:LINE_MAX].rstrip(b"\n"), length


def read_records(records: Folder | None) -> Found:
    """Every rank's records in the folder ``records`` (None: no records yet), and its bad lines."""
    found = Found()
    if records is None:
        return found
    for name in records.names():
        if not RANK_FILE.fullmatch(name):
            continue
        with records.open_read(name, rank_role(name)) as file:
            for number, line, length in _numbered_lines(file):
                if length > LINE_MAX:
                    record, why = None, f"a line of {length:,} bytes, longer than any record"
                elif not line.strip():
                    continue
                else:
                    record, why = parse(line)
                if record is None:
                    found.bad.append(BadLine(name, number, line, why))
                else:
                    found.keep(record)
    return found


def set_aside(records: Folder, found: Found) -> None:
    """Move ``found``'s bad lines out of the record files into ``set-aside.txt`` and say so once.
    Called by rank 0 under the folder's lock, before any rank appends."""
    if not found.bad:
        return
    side = records.append(SET_ASIDE, "the record lines set aside")
    try:
        with side:
            for bad in found.bad:
                side.write(f"# {bad.file} line {bad.number}: {bad.why}\n".encode() + bad.text + b"\n")
            side.flush()
            os.fsync(side.fileno())
    except OSError as err:
        raise records.write_error(SET_ASIDE, err) from None
    for name in sorted({bad.file for bad in found.bad}):
        dropped = {bad.number for bad in found.bad if bad.file == name}
        with records.open_read(name, rank_role(name)) as file:
            kept = [line + b"\n" for number, line, _ in _numbered_lines(file) if number not in dropped]
        records.replace(name, rank_role(name), lambda out, kept=kept: out.writelines(kept))
    first = found.bad[0]
    print(f"note: {len(found.bad)} line(s) of {records.path} are not records ({first.file} line {first.number}: "
          f"{first.why}); they are kept in {records.path / SET_ASIDE} and their images computed again.", flush=True)


class RecordLog:
    """A rank's record file: one JSON line per image, appended, flushed and synced to the disk."""

    def __init__(self, records: Folder, rank: int):
        self.records, self.name = records, rank_file(rank)
        ends_cut = False
        existing = records.open_read(self.name, rank_role(self.name))
        if existing is not None:
            with existing:
                if existing.seek(0, os.SEEK_END):
                    existing.seek(-1, os.SEEK_END)
                    ends_cut = existing.read(1) != b"\n"
        self.file = records.append(self.name, rank_role(self.name))
        if ends_cut:  # a line cut short by a kill: the next record starts on a line of its own
            self._put(b"\n")

    def write(self, record: dict) -> None:
        self._put((json.dumps(json_safe(record)[0], allow_nan=False) + "\n").encode())

    def _put(self, data: bytes) -> None:
        try:
            self.file.write(data)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:
            raise self.records.write_error(self.name, err) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # every line was flushed and synced; a failed one was said
            self.file.close()
