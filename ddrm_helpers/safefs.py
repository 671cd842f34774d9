"""The file-system rules of the checkpoint store, in one place.

The checkpoint folder is often shared (a Google Drive folder, a lab's model folder, a cache that a
notebook was pointed at) and everything in Colab runs as root, so the store treats whatever it
finds there with suspicion:

- it never follows a symbolic link below the root: every file it reads or writes is opened with
  ``O_NOFOLLOW``, and a link, a directory or another special file found where a file belongs is
  reported with what it is (and where a link points), never followed, written or deleted;
- it creates a new file only with ``O_EXCL``, so it never writes into a file it did not create;
- it deletes only what it created; a foreign file under a name it needs is moved aside to a free
  ``.invalid`` name, never deleted.

The root itself is the user's choice and may be a link (a Drive folder linked into place).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import stat
import time
from pathlib import Path

from .errors import DownloadError

try:
    import fcntl
except ImportError:  # Windows: no flock, the soft lock below is used
    fcntl = None

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# flock answers these where the file system does not support it (some network and FUSE mounts)
NO_FLOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class PathBlockedError(DownloadError):
    """Something that is not a plain file (a link, a folder, a device) stands where the store needs
    one. It is reported and left alone; the message says how to remove it."""


def what_is(path: Path) -> str | None:
    """None when ``path`` is absent or a regular file; else what it is, in words."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link (to {target})"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def blocked_message(path: Path, what: str, role: str = "the checkpoint") -> str:
    remove = f"rm -r {shlex.quote(str(path))}" if what == "a folder" else f"rm {shlex.quote(str(path))}"
    return (f"{path} ({role}) is {what}. The store never follows links nor writes over anything that is not "
            f"a plain file, so it leaves it alone. If you do not need it, remove it (`{remove}`) and run again.")


def require_plain(path: Path, role: str = "the checkpoint", key: str | None = None) -> None:
    """Raise :class:`PathBlockedError` when ``path`` exists and is not a regular file."""
    what = what_is(path)
    if what is not None:
        raise PathBlockedError(blocked_message(path, what, role), key=key, path=path)


def blocked_folder(root: Path, parts: tuple[str, ...]) -> tuple[Path, str] | None:
    """The first component of ``root / parts`` that exists and is not a real folder (a link, a file)."""
    here = root
    for part in parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            return here, what_is(here) or "a file"
    return None


def open_read(path: Path):
    """Open a regular file for reading without following a link (``OSError`` otherwise)."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def create_new(path: Path, mode: int = 0o644):
    """Create ``path``, which must not exist in any form, and open it for writing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, mode)
    return os.fdopen(fd, "r+b", buffering=0)


def open_own(path: Path, inode: tuple[int, int]):
    """Open a file the store created (``inode``: its device and inode) for writing; ``OSError`` if the
    file at ``path`` is another one (replaced, or a link)."""
    fd = os.open(path, os.O_RDWR | NOFOLLOW | CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != tuple(inode):
        os.close(fd)
        raise OSError(errno.EPERM, "the file was replaced by another one", str(path))
    return os.fdopen(fd, "r+b", buffering=0)


def write_new_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a new temporary file beside ``path`` and rename it over ``path``.

    ``path`` must be absent or a regular file (a link there is reported, not replaced).
    """
    require_plain(path, "a bookkeeping file")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with create_new(tmp) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_small(path: Path, limit: int = 1 << 16) -> bytes | None:
    """The bytes of a small regular file, or None (absent, a link, too large, unreadable)."""
    try:
        with open_read(path) as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def set_aside(path: Path) -> Path:
    """Move a foreign regular file out of the way to the first free ``<name>.invalid[.n]``; never
    overwrites anything."""
    for n in range(1, 1000):
        target = path.with_name(path.name + (".invalid" if n == 1 else f".invalid.{n}"))
        try:
            os.link(path, target, follow_symlinks=False)  # fails if target exists, in any form
        except FileExistsError:
            continue
        except OSError:
            # No hard links here (some FUSE mounts): rename after checking the name is free.
            if os.path.lexists(target):
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target
    raise OSError(errno.EEXIST, "no free .invalid name", str(path))


class StoreLock:
    """An exclusive lock between processes on ``path``, opened without following links.

    ``flock`` where the file system has it; where it has not (some network and FUSE mounts), a
    soft lock (a file created with ``O_EXCL`` beside it, removed on release), said once.
    """

    _said_soft: set[str] = set()

    def __init__(self, path: Path, say=print):
        self.path, self.say = path, say
        self._fd: int | None = None
        self._soft: Path | None = None

    def acquire(self, timeout: float | None, on_wait=None) -> bool:
        """True once held; False if ``timeout`` seconds passed first (None: wait for ever)."""
        require_plain(self.path, "the download lock")
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            if self._try():
                return True
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _try(self) -> bool:
        if self._soft is None and fcntl is not None:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | CLOEXEC, 0o644)
            try:
                flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as err:
                if err.errno not in NO_FLOCK:
                    raise
                os.close(self._fd)
                self._fd = None
                self._soft = self.path.with_name(self.path.name + ".soft")
                folder = str(self.path.parent)
                if folder not in StoreLock._said_soft:
                    StoreLock._said_soft.add(folder)
                    self.say(f"note: {folder} does not support file locks (flock); using a lock file "
                             f"({self._soft.name}) instead. If a download there was killed, that file may "
                             "stay behind: delete it when no other download runs.")
        soft = self._soft or self.path.with_name(self.path.name + ".soft")
        self._soft = soft
        try:
            os.close(os.open(soft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o644))
        except FileExistsError:
            return False
        self._fd = -1  # held through the soft file
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        elif self._soft is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._soft)
        self._fd = None


def flock(fd: int, operation: int) -> None:
    """``fcntl.flock``; a seam for the tests, which stand in a file system without it."""
    fcntl.flock(fd, operation)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_read_only(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
