"""The evaluation folder (``eval --out``): every file ``evaluate`` makes there, made safely.

Whoever else can write the folder (a shared results folder, a cluster's scratch space, a Drive
folder; in Colab everything runs as root) could plant a link at a name we write and have us
overwrite or append to the link's target, or swap a subfolder for a link while we work. So:

- The folder itself is the user's choice and may be a link. The folders below it (``records/``,
  ``restored/``) are opened with ``O_NOFOLLOW``, and every file is reached through its folder's
  descriptor (``dir_fd``): a folder renamed away and replaced by a link afterwards is not followed.
- A file is written whole under a temporary name of this process's own (``.<name>.<pid>.<random>.partial``,
  created with ``O_EXCL``, synced) and renamed over its name, so a half-written file never shows and
  a link planted at a predictable temporary name is never written through.
- A file we reuse (read, append to, or replace) must be a plain file with one link, of our own
  user; a link, a folder, a pipe, a file with several hard links or another user's file there is
  refused in one line (:class:`~ddrm_helpers.errors.OutDirError`) and left as it is.
- A failed write (a full disk, a folder turned read-only) is one line
  (:class:`~ddrm_helpers.errors.OutDirWriteError`); the temporary file is removed, what was written
  before stays.
- :class:`Lock`: one evaluation at a time per folder (``flock`` on ``.lock``).

A planted link can still win a race between our check of a final name and the rename over it;
the rename then replaces the link itself, never its target, so nothing outside is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shlex
import stat
from pathlib import Path

from . import safefs
from .errors import OutDirError, OutDirWriteError
from .safefs import CLOEXEC, NO_FLOCK, NOFOLLOW, what_is

try:
    import fcntl
except ImportError:  # Windows: no flock; the evaluation runs without a lock and says so
    fcntl = None

DIRECTORY = getattr(os, "O_DIRECTORY", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a pipe planted at a name must not block our open
# Where the platform cannot open a file relative to a folder's descriptor (Windows), paths are used.
# (os.replace takes src_dir_fd and dst_dir_fd where os.rename does, but supports_dir_fd lists only rename.)
AT_FOLDER = os.open in os.supports_dir_fd and os.rename in os.supports_dir_fd
# What O_NOFOLLOW answers on a link (Linux and macOS: ELOOP; FreeBSD: EMLINK), O_WRONLY on a folder
# (EISDIR) and O_NONBLOCK on a pipe nobody reads (ENXIO)
NOT_A_FILE = {errno.ELOOP, errno.EMLINK, errno.EISDIR, errno.ENXIO}
_said_no_lock: set[str] = set()


class Folder:
    """A folder of the evaluation, held open. Use :meth:`open` for ``--out``, :meth:`sub` below it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd

    @classmethod
    def open(cls, path, *, create: bool) -> Folder | None:
        """``path`` (made with its parents when ``create``; None when absent and not ``create``). It
        may be a link to a folder; a file, or a link to nothing, is an ``OutDirError``."""
        path = Path(path).expanduser()
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                pass  # a file or a dangling link: said below
            except OSError as err:
                raise _write_error(path, err) from None
        if not AT_FOLDER:
            if not path.exists() and not create:
                return None
            if not path.is_dir():
                raise OutDirError(_refusal(path, "the output folder", _folder_problem(path)))
            return cls(path, None)
        try:
            fd = os.open(path, os.O_RDONLY | DIRECTORY | CLOEXEC)
        except FileNotFoundError:
            if not create and not os.path.lexists(path):
                return None
            raise OutDirError(_refusal(path, "the output folder", _folder_problem(path))) from None
        except NotADirectoryError:
            raise OutDirError(_refusal(path, "the output folder", _folder_problem(path))) from None
        return cls(path, fd)

    def sub(self, name: str, role: str, *, create: bool) -> Folder | None:
        """The folder ``name`` in this one (made when ``create``), never through a link; None when
        absent and not ``create``."""
        where, at = self._at(name)
        if create:
            try:
                os.mkdir(where, 0o755, dir_fd=at)
            except FileExistsError:
                pass
            except OSError as err:
                raise _write_error(self.path / name, err) from None
        if not AT_FOLDER:
            path = self.path / name
            if not os.path.lexists(path):
                return None
            if path.is_symlink() or not path.is_dir():
                raise OutDirError(_refusal(path, role, _folder_problem(path)))
            return Folder(path, None)
        try:
            fd = os.open(where, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=at)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno in NOT_A_FILE or err.errno == errno.ENOTDIR:
                raise OutDirError(_refusal(self.path / name, role, _folder_problem(self.path / name))) from None
            raise
        return Folder(self.path / name, fd)

    def exists(self, name: str) -> bool:
        """Whether anything (a file, a folder, a link, even a dangling one) is at ``name``."""
        where, at = self._at(name)
        try:
            os.stat(where, dir_fd=at, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        return sorted(os.listdir(self._fd if self._fd is not None else self.path))

    def open_read(self, name: str, role: str):
        """Our own plain file ``name``, opened for reading (binary), or None when absent."""
        return self._open_own(name, role, os.O_RDONLY, "rb")

    def read(self, name: str, role: str, limit: int) -> bytes | None:
        """The bytes of our own plain file ``name`` (at most ``limit``), or None when absent."""
        file = self.open_read(name, role)
        if file is None:
            return None
        with file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise OutDirError(_refusal(self.path / name, role, f"is larger than {limit:,} bytes, so not a file eval "
                                                                "wrote"))
        return data

    def append(self, name: str, role: str):
        """``name`` opened for appending (binary): made with ``O_EXCL``, or our own plain file."""
        where, at = self._at(name)
        try:
            fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o644,
                         dir_fd=at)
        except FileExistsError:
            file = self._open_own(name, role, os.O_WRONLY | os.O_APPEND, "ab")
            if file is None:  # removed between the two opens: another hand is at work here
                raise OutDirError(_refusal(self.path / name, role, "changed while eval opened it")) from None
            return file
        except OSError as err:
            raise _write_error(self.path / name, err) from None
        return os.fdopen(fd, "ab")

    def replace(self, name: str, role: str, write) -> Path:
        """Put a new file at ``name``: ``write(file)`` fills a temporary file of this process's own,
        which is synced and renamed over ``name`` (absent, or our own plain file). Returns its path."""
        temporary = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        where, at = self._at(name)
        partial, _ = self._at(temporary)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o644, dir_fd=at)
        except OSError as err:
            raise _write_error(self.path / name, err) from None
        try:
            with os.fdopen(fd, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            self.check_target(name, role)
            os.replace(partial, where, src_dir_fd=at, dst_dir_fd=at)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=at)
            if isinstance(err, OSError) and not isinstance(err, OutDirWriteError):
                raise _write_error(self.path / name, err) from None
            raise
        return self.path / name

    def write_error(self, name: str, err: OSError) -> OutDirWriteError:
        """The one line for a write to ``name`` that failed with ``err``."""
        return _write_error(self.path / name, err)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _at(self, name: str) -> tuple[str, int | None]:
        """How to name ``name`` to the OS: relative to the folder's descriptor, or as a path."""
        if self._fd is None:
            return str(self.path / name), None
        return name, self._fd

    def _open_own(self, name: str, role: str, flags: int, mode: str):
        where, at = self._at(name)
        try:
            fd = os.open(where, flags | NOFOLLOW | NONBLOCK | CLOEXEC, dir_fd=at)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno in NOT_A_FILE:
                raise OutDirError(_refusal(self.path / name, role, _file_problem(self.path / name))) from None
            raise
        try:
            self._check_own(os.fstat(fd), name, role)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, mode)

    def check_target(self, name: str, role: str) -> None:
        """Refuse in one line what stands at ``name`` unless it is absent or our own plain file."""
        where, at = self._at(name)
        try:
            st = os.stat(where, dir_fd=at, follow_symlinks=False)
        except FileNotFoundError:
            return
        self._check_own(st, name, role)

    def _check_own(self, st: os.stat_result, name: str, role: str) -> None:
        """Refuse anything but a plain file with one link, of our own user."""
        path = self.path / name
        if not stat.S_ISREG(st.st_mode):
            problem = _file_problem(path)
        elif st.st_nlink != 1:
            problem = f"has {st.st_nlink} hard links (its content is shared with another name)"
        elif hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            problem = f"belongs to another user (uid {st.st_uid})"
        else:
            return
        raise OutDirError(_refusal(path, role, problem))


class Lock:
    """One evaluation at a time in a folder: an exclusive ``flock`` on its ``.lock``, held from the
    first write to the end. Ranks of one ``torchrun`` job share it: rank 0 holds it for all."""

    NAME = ".lock"
    ROLE = "the evaluation's lock"

    def __init__(self, folder: Folder):
        self.folder = folder
        self._file = None

    @classmethod
    def held_elsewhere(cls, folder: Folder) -> bool:
        """Whether another process holds the lock, found without writing anything."""
        file = folder.open_read(cls.NAME, cls.ROLE)
        if file is None or fcntl is None:
            return False
        with file:
            try:
                safefs.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            except OSError as err:
                if err.errno not in NO_FLOCK:
                    raise
        return False

    def acquire(self) -> None:
        """Hold the lock, or raise ``OutDirError`` saying another evaluation runs there."""
        if fcntl is None:
            _no_lock(self.folder.path)
            return
        file = self.folder.append(self.NAME, self.ROLE)  # never written: the lock is the flock
        try:
            safefs.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise OutDirError(busy_message(self.folder.path)) from None
        except OSError as err:
            file.close()
            if err.errno not in NO_FLOCK:
                raise
            _no_lock(self.folder.path)
            return
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases its flock
            self._file = None


def busy_message(folder: Path) -> str:
    return (f"another evaluation is running in {folder} (it holds {folder / Lock.NAME}); wait for it to finish, "
            "or give another --out (two at once would restore every image twice)")


def _no_lock(folder: Path) -> None:
    if str(folder) not in _said_no_lock:
        _said_no_lock.add(str(folder))
        print(f"note: {folder} does not support file locks (flock): nothing stops a second evaluation there from "
              "restoring the same images.", flush=True)


def _file_problem(path: Path) -> str:
    what = what_is(path)
    return f"is {what}" if what else "is not a plain file"


def _folder_problem(path: Path) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a symbolic link (to {os.readlink(path)}) that leads nowhere"
    what = what_is(path)
    return "is a file, not a folder" if what is None else f"is {what}"


def _refusal(path: Path, role: str, problem: str) -> str:
    remove = "rm -r" if os.path.isdir(path) and not os.path.islink(path) else "rm"
    return (f"{path} ({role}) {problem}. eval never follows a link nor writes over anything but its own plain "
            f"files, so it leaves it as it is: remove it (`{remove} {shlex.quote(str(path))}`) if you do not need "
            "it, or give another --out")


def _write_error(path: Path, err: OSError) -> OutDirWriteError:
    reason = err.strerror or str(err)
    if safefs.is_disk_full(err):
        return OutDirWriteError(f"The disk of {path.parent} is full: writing {path} failed ({reason}). Free some "
                                "space and run the same command again: every image already recorded is kept.")
    if safefs.is_read_only(err):
        return OutDirWriteError(f"{path} cannot be written ({reason}). Make the folder writable and run the same "
                                "command again, or give another --out.")
    return OutDirWriteError(f"writing {path} failed ({reason}); run the same command again to resume.")
