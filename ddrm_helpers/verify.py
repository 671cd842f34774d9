"""Is a checkpoint file the right one? Size, sha256, tensor manifest, and a record of the answer.

Hashing 4.5 GB takes tens of seconds, so a good verification is remembered in a small record
beside the file (``.<file>.verified.json``) holding the file's size, modification and change times
and inode. The record is trusted only while all of these still match, so a file that was replaced,
rewritten or truncated since is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointMismatchError
from .registry import CheckpointSpec, load_manifest

HASH_CHUNK = 8 << 20
RECORD_VERSION = 1

# The states a checkpoint can be in, as shown by `checkpoint_status`.
VERIFIED = "verified"  # present, size and pinned sha256 match
UNPINNED = "unpinned"  # present, passed every check there is, but no published hash to compare
MISSING = "missing"
CORRUPT = "corrupt"  # present, but not the right file (or not whole)


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
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def record_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def write_record(path: Path, sha256: str, *, pinned: bool, source: str | None = None) -> None:
    """Remember that ``path``, as it is now on disk, has hash ``sha256`` and passed verification."""
    st = path.stat()
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
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target)


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None


def _stat_key(st: os.stat_result) -> dict:
    # ctime cannot be set from user space, so an edit that restores mtime is still noticed.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def record_matches(path: Path, record: dict | None) -> bool:
    if not record:
        return False
    try:
        st = path.stat()
    except OSError:
        return False
    return all(record.get(k) == v for k, v in _stat_key(st).items())


def verify_file(spec: CheckpointSpec, path: Path, *, use_record: bool = True) -> Verification:
    """Check the file at ``path`` against ``spec``; never raises for a bad file, says why instead."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Verification(MISSING, path, detail="not downloaded yet")
    except OSError as err:
        return Verification(CORRUPT, path, detail=f"cannot be read: {err}")
    if not path.is_file():
        return Verification(CORRUPT, path, detail="is not a regular file")
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
        return Verification(CORRUPT, path, size, detail=f"cannot be read: {err}")
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
    write_record(path, sha256, pinned=spec.pinned)
    return Verification(VERIFIED if spec.pinned else UNPINNED, path, size, sha256, detail=_verified_detail(spec))


def _verified_detail(spec: CheckpointSpec) -> str:
    if spec.pinned:
        return "size and sha256 match the registry"
    return "no published sha256; size, server digests and tensor manifest checked"


def load_state_dict(path: str | os.PathLike) -> dict:
    """``torch.load(weights_only=True)`` on the CPU, memory-mapped where the file format allows.

    Raises :class:`CheckpointMismatchError` for a file that is not a loadable state dict.
    """
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            # Files written by torch < 1.6 (the legacy, non-zip format) cannot be memory-mapped.
            if "zip" not in str(err).lower():
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointMismatchError(
            f"{path} cannot be loaded as a checkpoint ({type(err).__name__}: {_first_line(err)}). "
            "It is probably incomplete or not a checkpoint at all (an error page, another format); "
            "delete it and download it again."
        ) from err
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointMismatchError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of tensor names to tensors)"
        )
    return obj


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


def check_manifest(spec: CheckpointSpec, path: Path) -> str:
    """'' when the file loads with ``weights_only=True`` and matches the spec's tensor manifest."""
    try:
        state = load_state_dict(path)
    except CheckpointMismatchError as err:
        return str(err)
    import torch

    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(shapes) != len(state):
        return "the state dict holds values that are not tensors"
    differences = compare_to_manifest(shapes, load_manifest(spec))
    return f"not the expected network: {differences}" if differences else ""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""
