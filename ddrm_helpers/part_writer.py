"""The ``.part`` file of a download: its record, its bytes, their hash, and the disk under them.

Bytes stream into ``<file>.part`` beside the checkpoint and are hashed as they arrive. A small
record beside it (``.<file>.part.json``) says that this downloader made it, for which file, and
its inode. The record is a cache, never a proof: a ``.part`` is resumed only when the record is a
file of ours with one link that names it, and the ``.part`` itself is a plain file of ours with
one link (:func:`~ddrm_helpers.safefs.not_ours`), checked again on the open file descriptor that
writes. Anything else found under that name (a hard link to a file elsewhere with a forged record,
another user's file) is moved aside, never resumed, written or deleted, and the download starts a
new ``.part`` with ``O_EXCL``. A full disk is not a network fault: it stops the download at once
and keeps the ``.part`` for later.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import DownloadError
from .paths import CHECKPOINT_DIR_ENV
from .registry import CheckpointSpec, format_size
from .safefs import (
    create_new,
    discard_own,
    is_disk_full,
    not_ours,
    open_own,
    open_read,
    read_own,
    require_plain,
    set_aside,
    side_name,
    what_is,
    write_new_atomically,
)
from .verify import hash_file

READ_CHUNK = 8 << 20
# Received bytes are synced to the disk in steps of this size while the download goes on.
SYNC_EVERY = 64 << 20
# Room left over on the disk beyond the file itself, so that finishing a download never fills it.
DISK_MARGIN = 64 << 20


def part_path(path: Path) -> Path:
    """Where the partial download of the checkpoint at ``path`` goes."""
    return path.with_name(side_name(path.name, suffix=".part"))


def part_record_path(path: Path) -> Path:
    """Where the record beside a ``.part`` that this downloader created is kept."""
    return path.with_name(side_name(path.name, ".", ".part.json"))


class DiskFull(Exception):
    """Writing ``.part`` failed for want of space: no retry can help."""


def write_all(out, chunk: bytes) -> None:
    """Write a chunk to ``.part``; a full disk is not a network fault."""
    view = memoryview(chunk)
    try:
        while view:
            view = view[out.write(view):]  # an unbuffered file may take part of a chunk
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull() from err
        raise


class StreamHash:
    """Digests of the bytes appended to ``.part``, computed on a worker thread as they arrive.

    hashlib releases the GIL on large buffers, so hashing overlaps the network and the disk.
    ``fed`` counts the bytes hashed so far; it must equal the size of ``.part`` to be of use.
    """

    def __init__(self, algorithms: tuple[str, ...]):
        self.algorithms = algorithms
        self.fed = 0
        self._hashers = [hashlib.new(a) for a in algorithms]
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._work, name="ddrm-hash", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not None:
            for h in self._hashers:
                h.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)
        self.fed += len(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigests(self) -> dict[str, str]:
        self.close()
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers)}


class FlushBehind:
    """Writes received bytes to the disk while the download goes on.

    The file is fsync'ed before it is renamed into place (else a crash could leave a verified name
    over unwritten data); syncing every ``every`` bytes on a worker thread spreads that work over
    the download instead of adding it at the end.
    """

    def __init__(self, every: int | None = None):
        self.every, self.pending, self.unsynced = every or SYNC_EVERY, None, 0
        self.sync = getattr(os, "fdatasync", os.fsync)

    def wrote(self, out, n: int) -> None:
        self.unsynced += n
        if self.unsynced >= self.every and (self.pending is None or not self.pending.is_alive()):
            out.flush()
            self.pending = threading.Thread(target=self._sync, args=(out.fileno(),), daemon=True)
            self.pending.start()
            self.unsynced = 0

    def _sync(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports what matters
            self.sync(fd)

    def finish(self) -> None:
        if self.pending is not None:
            self.pending.join()


class PartFile:
    """The ``.part`` of one checkpoint, and the record that makes it ours."""

    def __init__(self, spec: CheckpointSpec, path: Path, say: Callable[[str], None]):
        self.spec, self.path, self.say = spec, path, say
        self.part = part_path(path)
        self.record = part_record_path(path)
        self.inode: tuple[int, int] | None = None
        self.hash: StreamHash | None = None

    # -- whose is it ------------------------------------------------------------------------------

    def adopt(self) -> None:
        """Keep a ``.part`` this store created (to resume it); move anything else there aside."""
        require_plain(self.part, "a partial download", key=self.spec.key)
        require_plain(self.record, "the record of a partial download", key=self.spec.key)
        if not os.path.lexists(self.part):
            self.forget()
            return
        st = os.lstat(self.part)
        why = self.why_not_ours(st)
        if why is None:
            self.inode = (st.st_dev, st.st_ino)
            return
        moved = set_aside(self.part)
        self.forget()
        self.say(f"{self.part.name} {why}: moved it to {moved.name}; starting afresh")

    def why_not_ours(self, st: os.stat_result) -> str | None:
        """None when the ``.part`` (of stat ``st``) is one this downloader made and may resume; else
        why not, in words. Reads only."""
        problem = not_ours(st)
        if problem:
            return f"{problem}, so it is not ours to write"
        record = _read_json(self.record)
        if not (isinstance(record, dict) and record.get("inode") == [st.st_dev, st.st_ino]
                and record.get("for") == self._identity() and record.get("file", self.path.name) == self.path.name):
            return "was not left by this downloader (or by a download of another file)"
        return None

    def _identity(self) -> str:
        return f"{self.spec.key} {self.spec.sha256 or ''} {self.spec.expected_size_text()}"

    def size(self) -> int:
        try:
            return os.lstat(self.part).st_size if what_is(self.part) is None else 0
        except FileNotFoundError:
            return 0

    # -- writing ------------------------------------------------------------------------------------

    def open(self, have: int):
        """``.part`` for writing from byte ``have``: a new file of ours, or the one we made before."""
        if self.inode is None or not os.path.lexists(self.part):
            self.forget()
            out = create_new(self.part)
            st = os.fstat(out.fileno())
            self.inode = (st.st_dev, st.st_ino)
            record = {"for": self._identity(), "file": self.path.name, "inode": list(self.inode)}
            try:
                write_new_atomically(self.record, json.dumps(record).encode(), "the record of a partial download")
            except BaseException:
                out.close()
                self.drop()  # a .part without its record would be set aside by the next run: none is left
                raise
        else:
            out = open_own(self.part, self.inode)
        out.seek(have)
        out.truncate()
        return out

    def append(self, chunks: Iterable[bytes], have: int, on_bytes: Callable[[int], None]) -> None:
        """Write ``chunks`` after the first ``have`` bytes, hashing and syncing as they go; fsync'ed at
        the end, however the stream ends."""
        digest = self.hash_up_to(have)
        flusher = FlushBehind()
        try:
            out = self.open(have)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFull() from err
            raise DownloadError(f"cannot write {self.part}: {err.strerror or err}", key=self.spec.key,
                                path=self.path) from None
        with out:
            try:
                for chunk in chunks:
                    write_all(out, chunk)
                    digest.update(chunk)
                    on_bytes(len(chunk))
                    flusher.wrote(out, len(chunk))
            finally:
                flusher.finish()
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as err:
                    if is_disk_full(err):
                        raise DiskFull() from err
                    raise

    def drop(self) -> None:
        """Delete our own ``.part`` (never anyone else's)."""
        if self.inode is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.part)
                if (st.st_dev, st.st_ino) == self.inode:
                    os.unlink(self.part)
        self.forget()

    def forget(self) -> None:
        """No ``.part`` of ours any more: delete its record (another user's is moved aside)."""
        self.inode = None
        discard_own(self.record)

    def close(self) -> None:
        if self.hash is not None:
            self.hash.close()

    # -- its hash -----------------------------------------------------------------------------------

    def algorithms(self) -> tuple[str, ...]:
        # An MD5 a server announces is worth computing only where no sha256 is pinned.
        return ("sha256",) if self.spec.pinned else ("sha256", "md5")

    def hash_up_to(self, have: int) -> StreamHash:
        """The running hash of ``.part``, caught up to its first ``have`` bytes."""
        if self.hash is None or self.hash.fed != have:
            if self.hash is not None:
                self.hash.close()
            self.hash = StreamHash(self.algorithms())
            if have:
                with open_read(self.part) as f:
                    while self.hash.fed < have and (chunk := f.read(min(READ_CHUNK, have - self.hash.fed))):
                        self.hash.update(chunk)
        return self.hash

    def digests(self) -> dict[str, str]:
        if self.hash is not None and self.hash.fed == self.size():
            digests = self.hash.hexdigests()
        else:
            digests = hash_file(self.part, self.algorithms())
        self.hash = None
        return digests

    # -- the disk -----------------------------------------------------------------------------------

    def check_disk_space(self) -> None:
        need = max(self.spec.max_size - self.size(), 0) + DISK_MARGIN
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise DownloadError(
                f"Not enough disk space for {self.spec.file}: it needs {format_size(need)} more "
                f"(the file is {format_size(self.spec.max_size)}), and {self.path.parent} "
                f"has {format_size(free)} free.\n"
                f"Free some space, or keep checkpoints on another disk: set {CHECKPOINT_DIR_ENV} "
                "(or pass cache_dir=..., or --dir on the command line) to a folder there.",
                key=self.spec.key, path=self.path,
            )

    def disk_full_error(self, err: BaseException) -> DownloadError:
        have = self.size()
        need = max(self.spec.max_size - have, 0)
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = 0
        return DownloadError(
            f"The disk is full: writing {self.part} failed ({getattr(err, 'strerror', None) or err}) after "
            f"{have:,} bytes of {self.spec.file}. It needs {format_size(need)} more and {self.path.parent} has "
            f"{format_size(free)} free. The partial download is kept: free some space (or set "
            f"{CHECKPOINT_DIR_ENV} to a folder on a larger disk and move the .part file there) and run again "
            "to resume it.",
            key=self.spec.key, path=self.path,
        )


def _read_json(path: Path):
    data = read_own(path)
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None
