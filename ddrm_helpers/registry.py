"""The checkpoint registry (`configs/checkpoints.yml`): what each file is and where it comes from."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .paths import MANIFESTS_DIR, checkpoint_root, registry_path

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Source:
    url: str
    note: str = ""


@dataclass(frozen=True)
class CheckpointSpec:
    """One checkpoint file.

    Exactly one of ``size`` or the range ``size_min``..``size_max`` is known. ``sha256`` is None
    for a file whose hash nobody publishes (the classifier): such a file is *unpinned*.
    """

    key: str
    file: str
    subdir: str
    urls: tuple[Source, ...]
    description: str = ""
    size: int | None = None
    size_min: int | None = None
    size_max: int | None = None
    sha256: str | None = None
    md5: str | None = None
    manifest: str | None = None
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None

    @property
    def max_size(self) -> int:
        return self.size if self.size is not None else self.size_max

    def size_ok(self, n: int) -> bool:
        if self.size is not None:
            return n == self.size
        return self.size_min <= n <= self.size_max

    def expected_size_text(self) -> str:
        if self.size is not None:
            return f"{self.size:,} bytes"
        return f"{self.size_min:,} to {self.size_max:,} bytes"

    def path(self, cache_dir: str | os.PathLike | None = None) -> Path:
        """Where the file lives: ``<root>/<subdir>/<file>`` (root: see :func:`checkpoint_root`)."""
        return checkpoint_root(cache_dir) / self.subdir / self.file

    def manifest_path(self) -> Path | None:
        if self.manifest is None:
            return None
        path = Path(self.manifest)
        return path if path.is_absolute() else MANIFESTS_DIR / path


def load_registry(path: str | os.PathLike | None = None) -> dict[str, CheckpointSpec]:
    """Read and check a registry file (default: :func:`ddrm_helpers.paths.registry_path`)."""
    path = Path(path) if path is not None else registry_path()
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise ConfigError(f"No checkpoint registry at {path}")
    return _load_registry_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_registry_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, CheckpointSpec]:
    # Keyed by mtime and size too, so that an edited registry is read again.
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a registry maps keys to checkpoint entries")
    base = Path(path).parent
    return {key: _parse_entry(key, entry, path, base) for key, entry in raw.items()}


def _parse_entry(key: str, entry: dict, where: str, base: Path) -> CheckpointSpec:
    def fail(why: str):
        raise ConfigError(f"{where}: checkpoint '{key}': {why}")

    if not isinstance(entry, dict):
        fail("an entry is a mapping (file, subdir, size, sha256, urls, ...)")
    known = {"description", "file", "subdir", "size", "size_min", "size_max", "sha256", "md5",
             "manifest", "urls", "sources"}
    unknown = set(entry) - known
    if unknown:
        fail(f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    for required in ("file", "subdir", "urls"):
        if not entry.get(required):
            fail(f"'{required}' is required")
    has_size = entry.get("size") is not None
    has_range = entry.get("size_min") is not None and entry.get("size_max") is not None
    if has_size == has_range:
        fail("give either 'size' or both 'size_min' and 'size_max'")
    if has_range and not 0 < entry["size_min"] <= entry["size_max"]:
        fail("size_min must be positive and at most size_max")
    sha = entry.get("sha256")
    if sha is not None and not _is_hex(sha, 64):
        fail(f"sha256 must be 64 hex digits, got {sha!r}")
    md5 = entry.get("md5")
    if md5 is not None and not _is_hex(md5, 32):
        fail(f"md5 must be 32 hex digits, got {md5!r}")
    sources = []
    for item in entry["urls"]:
        src = Source(item) if isinstance(item, str) else Source(item.get("url", ""), item.get("note", ""))
        if not is_allowed_url(src.url):
            fail(f"{src.url!r} is not an https URL (plain http is allowed only on loopback, for tests)")
        sources.append(src)
    manifest = entry.get("manifest")
    if manifest is not None and not (MANIFESTS_DIR / manifest).is_file():
        manifest = str(base / manifest)  # a registry of its own may keep manifests beside it
    return CheckpointSpec(
        key=key,
        file=entry["file"],
        subdir=entry["subdir"],
        urls=tuple(sources),
        description=entry.get("description", ""),
        size=entry.get("size"),
        size_min=entry.get("size_min"),
        size_max=entry.get("size_max"),
        sha256=sha.lower() if sha else None,
        md5=md5.lower() if md5 else None,
        manifest=manifest,
        sources=entry.get("sources") or {},
    )


def is_allowed_url(url: str) -> bool:
    """HTTPS only; plain HTTP only to a loopback address (the tests' local servers)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def get_spec(key: str, registry: dict[str, CheckpointSpec] | None = None) -> CheckpointSpec:
    registry = load_registry() if registry is None else registry
    try:
        return registry[key]
    except KeyError:
        raise ConfigError(
            f"Unknown checkpoint '{key}'; the registry knows: {', '.join(registry)}"
        ) from None


def load_manifest(spec: CheckpointSpec) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, in the order of the official file."""
    path = spec.manifest_path()
    if path is None:
        raise ConfigError(f"checkpoint '{spec.key}' has no manifest in the registry")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {name: tuple(t["shape"]) for name, t in data["tensors"].items()}


def _is_hex(text, length: int) -> bool:
    return isinstance(text, str) and len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)
