"""What a ``torch.save`` zip holds, read from its directory alone, before anything loads it.

``torch.save`` (PyTorch 1.6 and later) writes a zip of *stored* records, never compressed: the
pickle of the object (``<archive>/data.pkl``), one record per tensor storage
(``<archive>/data/<key>``) holding exactly that storage's bytes, and a few records of a few bytes
(``version``, ``byteorder``, ``.format_version``, ``.storage_alignment``,
``.data/serialization_id``). A loader trusts what those records say: a compressed record is
inflated to whatever size it claims (a 1 MB file can ask for gigabytes), and a memory-mapped load
of one reads its compressed bytes as weights.

:func:`archive_problem` checks the end-of-directory record and the central directory only, so
nothing is inflated and nothing is unpickled. Every file gets the checks that hold for any
``torch.save`` zip (no record compressed or encrypted, no more entries than a bound, no more
bytes in the records than in the file). A file with a tensor manifest (one without a pinned hash)
is also compared with it: as many data records as tensors, each the size of one of them
(``numel x`` the dtype's size), and at most :data:`MAX_OTHER_RECORDS` other small records.

One storage per tensor is what the official files have, and what this check requires: a file
whose tensors share storages (views of one buffer, tied weights) is refused, because which
tensors share cannot be told without unpickling. Re-saving such a file with
``torch.save({k: v.clone() for k, v in state.items()}, path)`` gives each tensor its own record.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections import Counter
from pathlib import Path

from .safefs import open_read

# Records besides the tensors' data: data.pkl and the few that torch.save adds (five in 2.x)
MAX_OTHER_RECORDS = 8
SMALL_RECORD = 4096  # each of those, but the pickle, holds a few bytes
PICKLE_PER_TENSOR = 1024  # the pickle names each tensor, its shape and its storage: ~150 bytes each
MAX_ENTRIES = 100_000  # for a file without a manifest: far more than any network has tensors
CENTRAL_ENTRY = 46  # the fixed part of a central directory entry
NAME_AND_EXTRA = 1024  # what an entry's name, extra field and comment may add
_EOCD, _EOCD64, _LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


def is_zip(path: Path) -> bool:
    with open_read(path) as f:
        return f.read(4) == b"PK\x03\x04"


def archive_problem(path: Path, sizes: list[int] | None = None) -> str:
    """'' when the zip at ``path`` can be loaded without inflating anything (and, given ``sizes``,
    the byte sizes of a manifest's tensors, matches them); else what is wrong, in a few words.

    Without ``sizes``, a zip whose directory cannot be read passes: nothing can be inflated from it,
    and ``torch.load`` says best what is wrong with it.
    """
    with open_read(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        counts = _directory_counts(f, file_size)
        unreadable = counts if isinstance(counts, str) else ""
        if not unreadable:
            entries, directory_size = counts
            bound = MAX_ENTRIES if sizes is None else len(sizes) + MAX_OTHER_RECORDS
            if entries > bound:
                return f"its directory lists {entries:,} records, more than the {bound:,} it can need"
            if directory_size > entries * (CENTRAL_ENTRY + NAME_AND_EXTRA) or directory_size > file_size:
                return f"its directory takes {directory_size:,} bytes, more than {entries:,} records can need"
            try:
                infos = zipfile.ZipFile(f).infolist()
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
                unreadable = f"its zip directory cannot be read ({err})"
    if unreadable:
        return unreadable if sizes is not None else ""
    names = Counter(info.filename for info in infos)
    twice = [name for name, n in names.items() if n > 1]
    if twice:
        return f"it holds two records named {twice[0]}"
    for info in infos:
        if info.flag_bits & 0x1:
            return f"{info.filename} is encrypted"
        if info.compress_type != zipfile.ZIP_STORED:
            method = "DEFLATE" if info.compress_type == zipfile.ZIP_DEFLATED else f"method {info.compress_type}"
            return (f"{info.filename} is compressed ({method}), which torch.save never does: a compressed "
                    "record can inflate to any size, so it is not read")
        if info.compress_size != info.file_size:
            return f"{info.filename} claims {info.file_size:,} bytes stored in {info.compress_size:,}"
    stored = sum(info.file_size for info in infos)
    if stored > file_size:
        return f"its records claim {stored:,} bytes, more than the file's {file_size:,}"
    return "" if sizes is None else _manifest_problem(infos, sizes)


def _manifest_problem(infos: list[zipfile.ZipInfo], sizes: list[int]) -> str:
    folders = {info.filename.split("/", 1)[0] for info in infos}
    if len(folders) != 1 or any("/" not in info.filename for info in infos):
        return "its records are not in one archive folder, as torch.save writes them"
    data = [info for info in infos if info.filename.split("/", 1)[1].startswith("data/")]
    others = [info for info in infos if info not in data]  # at most MAX_OTHER_RECORDS: the directory's bound
    for info in others:
        pickle = info.filename.endswith("/data.pkl")
        limit = PICKLE_PER_TENSOR * (len(sizes) + 16) if pickle else SMALL_RECORD
        if info.file_size > limit:
            return f"{info.filename} holds {info.file_size:,} bytes, more than the {limit:,} it can need"
    if not any(info.filename.endswith("/data.pkl") for info in others):
        return "it holds no data.pkl"
    if len(data) != len(sizes):
        return (f"{len(data)} data records for the {len(sizes)} tensors of the manifest (each tensor must have "
                "its own storage)")
    wanted = Counter(sizes)
    for info in sorted(data, key=lambda i: i.filename):
        if wanted[info.file_size] == 0:
            return f"{info.filename} holds {info.file_size:,} bytes, which is no tensor's size in the manifest"
        wanted[info.file_size] -= 1
    return ""


def _directory_counts(f, file_size: int) -> tuple[int, int] | str:
    """The number of entries and the size of the zip's central directory, read from its end records
    (so that a directory of millions of entries is refused before the zip module makes an object of
    each); or why they cannot be found."""
    tail_size = min(file_size, 22 + 65535)
    f.seek(file_size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return "it is not a zip archive as torch.save writes (no end of its directory)"
    entries, directory_size = struct.unpack("<xxxxxxxxxxHI", tail[at:at + 16])
    if entries != 0xFFFF and directory_size != 0xFFFFFFFF:
        return entries, directory_size
    locator = tail[max(at - 20, 0):at]  # zip64: the counts are in another record
    if len(locator) < 20 or not locator.startswith(_LOCATOR64):
        return "its zip64 directory cannot be found"
    (offset,) = struct.unpack("<Q", locator[8:16])
    f.seek(min(offset, file_size))
    record = f.read(56)
    if len(record) < 56 or not record.startswith(_EOCD64):
        return "its zip64 directory cannot be found"
    return struct.unpack("<QQ", record[32:48])
