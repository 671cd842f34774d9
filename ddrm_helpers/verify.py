"""Is a checkpoint file the right one? Size, sha256, tensor manifest, and a record of the answer.

Hashing 4.5 GB takes tens of seconds, so a good verification is remembered in a small record
beside the file (``.<file>.verified.json``) holding the file's name, size, modification and change
times, inode and device. The record is a cache, never a proof. It spares the hash only when

- every one of those still matches (a file replaced, rewritten or truncated since, even with its
  modification time put back, is hashed again: the change time cannot be set from user space);
- the record is a plain file of the user running us, with one link: a record another user wrote
  (in a shared folder, anyone who can write the folder can write one that matches a substitute
  file of the same size) is not believed;
- the checkpoint has one link: a file with another name elsewhere can be changed through it by
  whoever owns that name, and on the mounts where hard links appear (network, FUSE) the change
  time is not always kept as a local disk keeps it.

Whoever writes the folder as the same user could still forge a record: ``status --verify``
(``verify_file(..., use_record=False)``) hashes every file whatever its record says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointMismatchError
from .registry import CheckpointSpec, load_manifest, manifest_sizes
from .safefs import (
    blocked_message,
    is_read_only,
    open_read,
    other_owner,
    read_own,
    side_name,
    what_is,
    write_new_atomically,
)
from .torch_zip import archive_problem, is_zip

HASH_CHUNK = 8 << 20
RECORD_VERSION = 2  # 2: the key holds the device, and the record must be the user's own

# The states a checkpoint can be in, as shown by `checkpoint_status`.
VERIFIED = "verified"  # present, size and pinned sha256 match
UNPINNED = "unpinned"  # present, passed every check there is, but no published hash to compare
MISSING = "missing"
CORRUPT = "corrupt"  # present, but not the right file (or not whole)
BLOCKED = "blocked"  # a link, a folder or another special file stands at the path: left alone
UNREADABLE = "unreadable"  # present, but this process may not read it (permissions, a broken mount)


@dataclass(frozen=True)
class Verification:
    state: str
    path: Path
    size: int | None = None
    sha256: str | None = None
    detail: str = ""
    cached: bool = False  # answered from the record, without hashing

    @property
    def ok(self) -> bool:
        return self.state in (VERIFIED, UNPINNED)


def hash_file(path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, read once in large chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open_read(Path(path)) as f:
        while chunk := f.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def record_path(path: Path) -> Path:
    """``.<file>.verified.json`` beside the file (shortened with a hash where the name is long)."""
    return path.with_name(side_name(path.name, ".", ".verified.json"))


def write_record(path: Path, sha256: str, *, pinned: bool, source: str | None = None, say=print) -> bool:
    """Remember that ``path``, as it is now on disk, has hash ``sha256`` and passed verification.

    Best effort: in a folder that cannot be written (a read-only mount, a shared model folder) the
    file is simply hashed again next time; that is said once per folder. Returns whether it was written.
    """
    st = os.lstat(path)
    record = {
        "version": RECORD_VERSION,
        "file": path.name,
        "sha256": sha256,
        "pinned": pinned,
        "source": source,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **_stat_key(st),
    }
    target = record_path(path)
    try:
        write_new_atomically(target, json.dumps(record, indent=1).encode())
        return True
    except OSError as err:
        folder = str(path.parent)
        if folder not in _unrecorded_folders:
            _unrecorded_folders.add(folder)
            why = "it is read-only" if is_read_only(err) else (what_is(target) or _owner_of(target) or err.strerror
                                                                or str(err))
            say(f"note: cannot keep a verification record in {folder} ({why}); the checkpoints there are "
                "verified by hashing them each time they are used, which takes longer but is just as safe.")
        return False


_unrecorded_folders: set[str] = set()


def _owner_of(path: Path) -> str | None:
    try:
        why = other_owner(os.lstat(path))
    except OSError:
        return None
    return f"its record there {why}" if why else None


def read_record(path: Path) -> dict | None:
    """The record beside ``path`` if it is a plain file of ours with one link (else None)."""
    data = read_own(record_path(path))
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None


def _stat_key(st: os.stat_result) -> dict:
    # ctime cannot be set from user space, so an edit that restores mtime is still noticed.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
            "device": st.st_dev}


def record_matches(path: Path, record: dict | None) -> bool:
    """Whether ``record`` still describes the file at ``path``, which must have one link."""
    if not record or record.get("file") != path.name:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_nlink == 1 and all(record.get(k) == v for k, v in _stat_key(st).items())


def verify_file(spec: CheckpointSpec, path: Path, *, use_record: bool = True, say=print) -> Verification:
    """Check the file at ``path`` against ``spec``; never raises for a bad file, says why instead.

    A link, a folder or another special file at ``path`` is ``blocked``: it is not followed.
    ``use_record=False`` hashes the file whatever its record says.
    """
    what = what_is(path)
    if what is not None:
        return Verification(BLOCKED, path, detail=blocked_message(path, what))
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return Verification(MISSING, path, detail="not downloaded yet")
    except OSError as err:
        return Verification(UNREADABLE, path, detail=f"cannot be read: {err.strerror or err}")
    if not spec.size_ok(size):
        what = "incomplete" if size < (spec.size or spec.size_min) else "too large"
        return Verification(
            CORRUPT, path, size,
            detail=f"{what}: {size:,} bytes, expected {spec.expected_size_text()}"
            + (" (this looks like an error page saved as the file)" if size < 65536 else ""),
        )
    record = read_record(path) if use_record else None
    if record_matches(path, record) and (record["sha256"] == spec.sha256 or not spec.pinned):
        state = VERIFIED if spec.pinned else UNPINNED
        return Verification(state, path, size, record["sha256"], detail=_verified_detail(spec), cached=True)
    try:
        sha256 = hash_file(path)["sha256"]
    except OSError as err:
        return Verification(UNREADABLE, path, size, detail=f"cannot be read: {err.strerror or err}")
    if spec.pinned:
        if sha256 != spec.sha256:
            return Verification(
                CORRUPT, path, size, sha256,
                detail=f"sha256 mismatch: expected {spec.sha256}, got {sha256}",
            )
    else:
        problem = check_manifest(spec, path)
        if problem:
            return Verification(CORRUPT, path, size, sha256, detail=problem)
    write_record(path, sha256, pinned=spec.pinned, say=say)
    return Verification(VERIFIED if spec.pinned else UNPINNED, path, size, sha256, detail=_verified_detail(spec))


def _verified_detail(spec: CheckpointSpec) -> str:
    if spec.pinned:
        return "size and sha256 match the registry"
    return "no published sha256; size, server digests and tensor manifest checked"


def load_state_dict(path: str | os.PathLike, *, unpinned: CheckpointSpec | None = None) -> dict:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped where the file system allows.

    Before any load, a zip's directory is checked (:mod:`ddrm_helpers.torch_zip`): no record
    compressed or encrypted, none past the file's end. ``unpinned`` is the spec of a file whose
    bytes no hash vouches for: it must then be a zip whose records match the spec's tensor manifest,
    and it is loaded memory-mapped only (a plain load is the one that inflates what it reads).

    Raises :class:`CheckpointMismatchError` for a file that is not a loadable state dict, with
    what it is instead: a file holding code or Python objects (refused by ``weights_only``) is
    never loaded by this project, whatever it is.
    """
    import pickle

    import torch

    path = Path(path)
    _check_archive(path, unpinned)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, OSError, ValueError) as err:
            if unpinned is not None:
                raise CheckpointMismatchError(
                    f"{path} could not be memory-mapped ({_first_line(err)}); a file without a pinned hash is "
                    "loaded no other way. If it lies on a network or FUSE mount, copy it to a local disk "
                    "(set DDRM_CHECKPOINT_DIR to a folder there)."
                ) from None
            # Memory-mapping fails on files written by torch < 1.6 (not zip archives) and on some
            # mounts (network, FUSE): a plain read works there. A file that is really broken fails
            # again below, with its own message.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointMismatchError:
        raise
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "Unsupported global" in text:
            what = f" (it names {found.group(1)})" if found else ""
            raise CheckpointMismatchError(
                f"{path} holds Python objects or code, not only tensors{what}: loading it would mean running "
                "whatever its author put in it, so this project will not load it. The official checkpoints "
                "are plain tensors; get the file again from a source in configs/checkpoints.yml."
            ) from None
        raise CheckpointMismatchError(
            f"{path} cannot be loaded as a checkpoint: its bytes are not a PyTorch state dict "
            "(an error page, another format, or a damaged file)."
        ) from None
    except Exception as err:
        raise CheckpointMismatchError(
            f"{path} cannot be loaded as a checkpoint ({type(err).__name__}: {_first_line(err)})."
        ) from err
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointMismatchError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of tensor names to tensors)"
        )
    return obj


def non_finite(state: dict) -> list[str]:
    """The names of floating-point tensors holding NaN or infinity."""
    import torch

    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def compare_to_manifest(names_shapes: dict[str, tuple[int, ...]], manifest: dict[str, tuple[int, ...]]) -> str:
    """'' when the names and shapes equal the manifest's; else a short account of the differences."""
    missing = [n for n in manifest if n not in names_shapes]
    unexpected = [n for n in names_shapes if n not in manifest]
    reshaped = [
        f"{n}: {list(names_shapes[n])} instead of {list(manifest[n])}"
        for n in manifest
        if n in names_shapes and tuple(names_shapes[n]) != tuple(manifest[n])
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} tensor(s) {label} ({shown})")
    return "; ".join(parts)


def _check_archive(path: Path, unpinned: CheckpointSpec | None) -> None:
    """Refuse, from its zip directory alone, a file whose load could inflate or whose records are not
    the manifest's tensors (see :func:`load_state_dict`)."""
    try:
        zipped = is_zip(path)
        if not zipped and unpinned is None:
            return  # a file of torch < 1.6 (not a zip), loadable only because a pinned hash vouches for it
        problem = archive_problem(path, manifest_sizes(unpinned) if unpinned is not None else None) if zipped \
            else "it is not a zip archive as torch.save writes (a file without a pinned hash must be one)"
    except OSError as err:
        problem = f"it cannot be read ({err.strerror or err})"
    if problem:
        raise CheckpointMismatchError(f"{path} cannot be loaded as a checkpoint: {problem}.")


def check_manifest(spec: CheckpointSpec, path: Path) -> str:
    """'' when the file's zip matches the spec's tensor manifest, it loads with ``weights_only=True``,
    and its names, shapes and values are the manifest's (finite)."""
    try:
        state = load_state_dict(path, unpinned=spec)
    except CheckpointMismatchError as err:
        return str(err)
    import torch

    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(shapes) != len(state):
        return "the state dict holds values that are not tensors"
    differences = compare_to_manifest(shapes, load_manifest(spec))
    if differences:
        return f"not the expected network: {differences}"
    broken = non_finite(state)
    if broken:
        return (f"{len(broken)} tensor(s) hold NaN or infinity ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}): not usable weights")
    return ""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""
