"""The file-system rules of everything we write: the checkpoint store, and any output folder.

A folder we write into may be shared (a Google Drive folder, a lab's model folder, a cache a
notebook was pointed at, an ``--out`` given by someone else) and everything in Colab runs as root,
so whatever is found there is treated with suspicion:

- no symbolic link below the folder is followed: every file is opened with ``O_NOFOLLOW`` (and
  ``O_NONBLOCK``, so that a named pipe cannot hang the open), and a link, a folder or another
  special file found where a file belongs is reported with what it is (and where a link points),
  never followed, written or deleted;
- a new file is created only with ``O_EXCL``, so we never write into a file we did not create;
  a file we reuse (resume, append to) must be a plain file of ours with one link: another name
  elsewhere (a hard link) or another owner means that someone else could read or change the bytes
  we write, and such a file is refused (:func:`not_ours`);
- a file is replaced only by renaming a new one over it, and never when it belongs to someone else;
- we delete only what we created; a foreign file under a name we need is moved aside to a free
  ``.invalid`` name, never deleted;
- a name derived from another (``.<file>.part.json``, a temporary name) that would pass the file
  system's limit of 255 bytes is shortened with a hash of the name it comes from (:func:`side_name`),
  so that a long but legal file name works like any other.

The public functions, for any writer of the package: ``create_new`` (a new file, ``O_EXCL``),
``open_own`` (reopen a file we created, checked to be that file, ours, one link), ``open_append``
(append to a file of ours, or create it), ``write_new_atomically`` (replace through a temporary
name unique to this process, never over another user's file), ``read_small`` / ``read_own``
(``read_own``: only a file of ours), ``require_plain`` / ``blocked_folder`` (what stands in the
way), ``set_aside`` / ``discard_own`` (move a foreign file away; delete only our own),
``side_name`` (a name that fits) and ``StoreLock`` (a lock between processes).

The root folder itself is the user's choice and may be a link (a Drive folder linked into place).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
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
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# The longest file name (in bytes) that ext4, xfs, btrfs, tmpfs, NTFS and FUSE mounts all take
NAME_MAX = 255
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
    return (f"{path} ({role}) is {what}. ddrm-demo never follows links nor writes over anything that is not "
            f"a plain file, so it is left alone. If you do not need it, remove it (`{remove}`) and run again.")


def foreign_message(path: Path, why: str, role: str) -> str:
    return (f"{path} ({role}) {why}, so it is not ours to write: it is left alone. If you do not need it, "
            f"remove it (`rm {shlex.quote(str(path))}`) and run again.")


def current_owner() -> int | None:
    """The user we write as (None where the system has no user ids)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def not_ours(st: os.stat_result) -> str | None:
    """None for a plain file of ours with one link; else why we must not write into it, in words."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_nlink != 1:
        return f"has {st.st_nlink} links (another name elsewhere shares its bytes)"
    return other_owner(st)


def other_owner(st: os.stat_result) -> str | None:
    """None for a file of ours; else whose it is, in words."""
    owner = current_owner()
    return None if owner is None or st.st_uid == owner else f"belongs to another user (uid {st.st_uid})"


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
    """Open a regular file for reading without following a link, and without waiting on a named pipe
    (``OSError`` otherwise)."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK)
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
    """Open a file we created (``inode``: its device and inode) for writing; ``OSError`` if the file
    at ``path`` is another one (replaced, or a link), or is no longer ours alone (:func:`not_ours`)."""
    fd = os.open(path, os.O_RDWR | NOFOLLOW | CLOEXEC | NONBLOCK)
    st = os.fstat(fd)
    why = "was replaced by another one" if (st.st_dev, st.st_ino) != tuple(inode) else not_ours(st)
    if why:
        os.close(fd)
        raise OSError(errno.EPERM, f"the file {why}", str(path))
    return os.fdopen(fd, "r+b", buffering=0)


def open_append(path: Path, role: str = "a file we keep"):
    """Open ``path`` to append to it: a new file of ours, or a plain one of ours with one link.

    Raises :class:`PathBlockedError` (one line, with the ``rm`` command) for a link, a folder, a
    pipe or a device there, or for a file with another link or another owner.
    """
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC,
                                 0o644), "ab", buffering=0)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | NOFOLLOW | CLOEXEC | NONBLOCK)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
            require_plain(path, role)
        raise
    why = not_ours(os.fstat(fd))
    if why:
        os.close(fd)
        require_plain(path, role)
        raise PathBlockedError(foreign_message(path, why, role), path=path)
    return os.fdopen(fd, "ab", buffering=0)


def write_new_atomically(path: Path, data: bytes, role: str = "a bookkeeping file") -> None:
    """Replace ``path`` with ``data``: written to a new temporary file beside it (a name unique to
    this process), then renamed over it.

    ``path`` must be absent or a regular file of ours (a link there, or another user's file, is
    reported with :class:`PathBlockedError`, not replaced).
    """
    require_plain(path, role)
    with contextlib.suppress(FileNotFoundError):
        why = other_owner(os.lstat(path))
        if why:
            raise PathBlockedError(foreign_message(path, why, role), path=path)
    tmp = path.with_name(side_name(path.name, suffix=f".{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    try:
        with create_new(tmp) as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]
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


def read_own(path: Path, limit: int = 1 << 16) -> bytes | None:
    """The bytes of a small plain file of ours with one link, or None (absent, a link, too large,
    another user's, another name elsewhere): what a record must be to be believed at all."""
    try:
        with open_read(path) as f:
            if not_ours(os.fstat(f.fileno())):
                return None
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def side_name(name: str, prefix: str = "", suffix: str = "") -> str:
    """``prefix + name + suffix``, or, where that passes :data:`NAME_MAX` bytes, the same with ``name``
    cut short and a hash of it added (``<start of name>~<16 hex digits>``): the same name on every
    run, so that nothing accumulates."""
    whole = f"{prefix}{name}{suffix}"
    if len(whole.encode()) <= NAME_MAX:
        return whole
    tag = "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
    room = NAME_MAX - len(f"{prefix}{tag}{suffix}".encode())
    return prefix + name.encode()[:max(room, 0)].decode("utf-8", "ignore") + tag + suffix


def set_aside(path: Path) -> Path:
    """Move a foreign regular file out of the way to the first free ``<name>.invalid[.n]``; never
    overwrites anything."""
    for n in range(1, 1000):
        target = path.with_name(side_name(path.name, suffix=".invalid" if n == 1 else f".invalid.{n}"))
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


def discard_own(path: Path) -> Path | None:
    """Delete ``path`` if it is a plain file of ours; move another user's aside (returns where to).
    A link or a folder there is left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if other_owner(st):
        return set_aside(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return None


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
                self._fd = _open_lock_file(self.path)
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
                self._soft = self.path.with_name(side_name(self.path.name, suffix=".soft"))
                folder = str(self.path.parent)
                if folder not in StoreLock._said_soft:
                    StoreLock._said_soft.add(folder)
                    self.say(f"note: {folder} does not support file locks (flock); using a lock file "
                             f"({self._soft.name}) instead. If a download there was killed, that file may "
                             "stay behind: delete it when no other download runs.")
        soft = self._soft or self.path.with_name(side_name(self.path.name, suffix=".soft"))
        self._soft = soft
        require_plain(soft, "the download lock")
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


def _open_lock_file(path: Path) -> int:
    """The lock file, made if absent, opened read-only: a lock is never written, so whatever plain
    file stands there (even one with other names) loses nothing to it."""
    with contextlib.suppress(FileExistsError):
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o644)
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            require_plain(path, "the download lock")
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        require_plain(path, "the download lock")
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def flock(fd: int, operation: int) -> None:
    """``fcntl.flock``; a seam for the tests, which stand in a file system without it."""
    fcntl.flock(fd, operation)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_read_only(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
