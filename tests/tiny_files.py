"""Small stand-ins for the official checkpoints, and registries that point at a local server."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import yaml

TINY_TENSORS = {"encoder.weight": (64, 32), "encoder.bias": (64,), "head.weight": (10, 64)}


def state_dict_bytes(tensors: dict[str, tuple[int, ...]] = TINY_TENSORS, seed: int = 0) -> bytes:
    """A real ``torch.save``d state dict of float32 tensors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({name: torch.randn(*shape, generator=gen) for name, shape in tensors.items()}, buffer)
    return buffer.getvalue()


def write_manifest(path: Path, tensors: dict[str, tuple[int, ...]] = TINY_TENSORS) -> Path:
    entries = {name: {"shape": list(shape), "dtype": "float32"} for name, shape in tensors.items()}
    path.write_text(json.dumps({"file": path.stem, "num_tensors": len(entries), "tensors": entries}))
    return path


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def write_registry(path: Path, entries: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def pinned_entry(file: str, subdir: str, payload: bytes, urls: list[str]) -> dict:
    return {"file": file, "subdir": subdir, "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(), "urls": urls}


def unpinned_entry(file: str, subdir: str, payload: bytes, urls: list[str], manifest: Path) -> dict:
    return {"file": file, "subdir": subdir, "size_min": len(payload) - 4096, "size_max": len(payload) + 4096,
            "sha256": None, "manifest": str(manifest), "urls": urls}


def rewritten_zip(payload: bytes, change) -> bytes:
    """The records of the ``torch.save`` zip ``payload`` written again into a new zip, each through
    ``change(name, data) -> [(name, data, compress_type), ...]`` (an empty list drops the record)."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(payload))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            for name, data, compress_type in change(info.filename, source.read(info.filename)):
                target.writestr(zipfile.ZipInfo(name), data, compress_type=compress_type)
    return out.getvalue()
