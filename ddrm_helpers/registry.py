"""The checkpoint registry (`configs/checkpoints.yml`): what each file is and where it comes from."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError
from .paths import MANIFESTS_DIR, checkpoint_root, registry_path

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The bytes of one element of each dtype a manifest may name
ELEMENT_SIZES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
                 "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


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


def format_size(n: int) -> str:
    """Bytes for people: 454.8 MB, 2.21 GB, 10 KB."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def load_registry(path: str | os.PathLike | None = None) -> dict[str, CheckpointSpec]:
    """Read and check a registry file (default: :func:`ddrm_helpers.paths.registry_path`).

    Any mistake in it (not YAML, a field of the wrong type, a size that is not a positive whole
    number, a name that would leave the checkpoint root) is a :class:`ConfigError` naming the file,
    the entry and the field.
    """
    path = Path(path).expanduser() if path is not None else registry_path()
    try:
        stat = path.stat()
    except OSError as err:
        raise ConfigError(f"No checkpoint registry at {path} ({err.strerror or err})") from None
    if not path.is_file():
        raise ConfigError(f"The checkpoint registry {path} is not a file")
    return _load_registry_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load_registry_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, CheckpointSpec]:
    # Keyed by mtime and size too, so that an edited registry is read again.
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a registry maps keys to checkpoint entries, not a {type(raw).__name__}")
    base = Path(path).parent
    specs = {}
    targets: dict[tuple[str, str], str] = {}
    for key, entry in raw.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{path}: checkpoint keys are names, got {key!r}")
        spec = _parse_entry(key, entry, path, base)
        other = targets.setdefault((spec.subdir, spec.file), key)
        if other != key:
            raise ConfigError(f"{path}: checkpoints '{other}' and '{key}' are both {spec.subdir}/{spec.file}")
        specs[key] = spec
    return specs


_KNOWN_FIELDS = ("description", "file", "subdir", "size", "size_min", "size_max", "sha256", "md5", "manifest",
                 "urls", "sources")
# Names the store keeps beside a checkpoint; a checkpoint may not be called like one of them.
_RESERVED_ENDINGS = (".part", ".invalid", ".lock", ".soft", ".tmp", ".json")


def _parse_entry(key: str, entry, where: str, base: Path) -> CheckpointSpec:
    def fail(why: str):
        raise ConfigError(f"{where}: checkpoint '{key}': {why}")

    if not isinstance(entry, dict):
        fail("an entry is a mapping (file, subdir, size, sha256, urls, ...)")
    unknown = sorted(str(k) for k in set(entry) - set(_KNOWN_FIELDS))
    if unknown:
        fail(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_FIELDS))}")
    for required in ("file", "subdir", "urls"):
        if entry.get(required) in (None, "", []):
            fail(f"'{required}' is required")
    for name in ("description", "file", "subdir", "sha256", "md5", "manifest"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            fail(f"'{name}' must be a string, got {type(entry[name]).__name__} {entry[name]!r}")
    problem = plain_name_problem(entry["file"])
    if problem:
        fail(f"'file' must be a plain file name: {entry['file']!r} {problem}")
    for part in entry["subdir"].split("/"):
        problem = plain_name_problem(part)
        if problem:
            fail(f"'subdir' must be a relative folder under the checkpoint root: {entry['subdir']!r} "
                 f"(part {part!r} {problem})")
    for name in ("size", "size_min", "size_max"):
        value = entry.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            fail(f"'{name}' must be a positive whole number of bytes, got {value!r}")
    has_size = entry.get("size") is not None
    has_range = entry.get("size_min") is not None and entry.get("size_max") is not None
    if has_size == has_range or (not has_size and (entry.get("size_min") is None) != (entry.get("size_max") is None)):
        fail("give either 'size' or both 'size_min' and 'size_max'")
    if has_range and not entry["size_min"] <= entry["size_max"]:
        fail("size_min must be at most size_max")
    sha = entry.get("sha256")
    if sha is not None and not _is_hex(sha, 64):
        fail(f"sha256 must be 64 hex digits, got {sha!r}")
    md5 = entry.get("md5")
    if md5 is not None and not _is_hex(md5, 32):
        fail(f"md5 must be 32 hex digits, got {md5!r}")
    if not isinstance(entry["urls"], list):
        fail(f"'urls' must be a list of URLs, got {type(entry['urls']).__name__} {entry['urls']!r}")
    sources = []
    for item in entry["urls"]:
        if isinstance(item, dict):
            extra = sorted(str(k) for k in set(item) - {"url", "note"})
            if extra:
                fail(f"a source has unknown field(s) {', '.join(extra)}; known: url, note")
            url, note = item.get("url"), item.get("note", "")
        else:
            url, note = item, ""
        if not isinstance(url, str) or not isinstance(note, str):
            fail(f"a source is a URL string, or a mapping with 'url' and 'note' strings; got {item!r}")
        if not is_allowed_url(url):
            fail(f"{url!r} is not an https URL (plain http is allowed only on loopback, for tests)")
        sources.append(Source(url, note))
    if entry.get("sources") is not None and not isinstance(entry["sources"], dict):
        fail("'sources' must be a mapping of field to where its value came from")
    manifest = entry.get("manifest")
    if manifest is not None and not (MANIFESTS_DIR / manifest).is_file():
        manifest = str(base / manifest)  # a registry of its own may keep manifests beside it
    return CheckpointSpec(
        key=key,
        file=entry["file"],
        subdir=entry["subdir"],
        urls=tuple(sources),
        description=entry.get("description") or "",
        size=entry.get("size"),
        size_min=entry.get("size_min"),
        size_max=entry.get("size_max"),
        sha256=sha.lower() if sha else None,
        md5=md5.lower() if md5 else None,
        manifest=manifest,
        sources=entry.get("sources") or {},
    )


def plain_name_problem(name: str) -> str:
    """'' for a plain file or folder name; else why it is not one (absolute, ``..``, a separator...)."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "points out of its folder"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(ord(c) < 32 for c in name):
        return "holds a control character"
    if name.startswith(".") or name.startswith("~"):
        return "starts with '.' or '~'"
    if len(name) > 2 and name[1] == ":":
        return "is a drive path"
    if len(name.encode()) > 255:
        return "is longer than 255 bytes, more than file systems allow in a name"
    if name.endswith(_RESERVED_ENDINGS):
        return f"ends like a file the store keeps beside checkpoints ({', '.join(_RESERVED_ENDINGS)})"
    return ""


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
    return {name: shape for name, (shape, _) in read_manifest(spec).items()}


def read_manifest(spec: CheckpointSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) from the spec's manifest; a manifest that is missing, not JSON
    or not a manifest is a :class:`ConfigError` naming the file and the checkpoint."""
    path = spec.manifest_path()
    if path is None:
        raise ConfigError(f"checkpoint '{spec.key}' has no manifest in the registry")
    try:
        stat = path.stat()
    except OSError as err:
        raise ConfigError(f"the manifest {path} of checkpoint '{spec.key}' cannot be read "
                          f"({err.strerror or err})") from None
    return _read_manifest_cached(str(path), spec.key, stat.st_mtime_ns, stat.st_size)


def manifest_sizes(spec: CheckpointSpec) -> list[int]:
    """The bytes of each tensor of the spec's manifest (numel times the dtype's size)."""
    return [math.prod(shape) * ELEMENT_SIZES[dtype] for shape, dtype in read_manifest(spec).values()]


@lru_cache(maxsize=16)
def _read_manifest_cached(path: str, key: str, _mtime_ns: int, _size: int) -> dict:
    def fail(why: str):
        raise ConfigError(f"the manifest {path} of checkpoint '{key}' {why}")

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot be read ({err})")
    except ValueError as err:
        fail(f"is not valid JSON ({err})")
    tensors = data.get("tensors") if isinstance(data, dict) else None
    if not isinstance(tensors, dict) or not tensors:
        fail("has no 'tensors' mapping of names to {shape, dtype}")
    manifest = {}
    for name, tensor in tensors.items():
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        dtype = tensor.get("dtype", "float32") if isinstance(tensor, dict) else None
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                for n in shape)):
            fail(f"gives tensor {name!r} no shape (a list of whole numbers)")
        if dtype not in ELEMENT_SIZES:
            fail(f"gives tensor {name!r} the dtype {dtype!r}; known: {', '.join(ELEMENT_SIZES)}")
        manifest[name] = (tuple(shape), dtype)
    return manifest


def _is_hex(text, length: int) -> bool:
    return isinstance(text, str) and len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)
