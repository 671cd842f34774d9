"""`CheckpointStore`: where checkpoint files live and how they are checked, in one object.

>>> store = CheckpointStore()                    # exp/logs, or $DDRM_CHECKPOINT_DIR
>>> store.status()                               # a table: verified, missing, corrupt, blocked...
>>> paths = store.paths("celeba_hq")            # {"model": Path}: verified, downloaded if needed
>>> load_pretrained("celeba_hq", paths=paths)

The store owns a root folder and a registry (``configs/checkpoints.yml`` or ``$DDRM_REGISTRY``).
Every rule about the folder lives here and in :mod:`ddrm_helpers.safefs`: registry names are plain
relative names, nothing is written outside the root or through a link, bodies are bounded by the
registry's size (the downloader: :mod:`ddrm_helpers.fetch_policy`), and reading verified files
never needs write access. Front ends (``run_config``, ``restore_photo``, the CLI, the notebook) ask the store once
and hand the paths on.

A download that failed in this process is remembered: :meth:`CheckpointStore.locate` with
``download="auto"`` (what ``run_config`` does by default) does not try it again, so that a notebook
run offline reports each missing file once, in the checkpoint cell, and each config cell says in one
line that it is skipped. ``fetch`` and ``ensure`` always try again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import Config, known_configs, load_config
from .errors import ConfigError, DownloadError
from .fetch_policy import Reporter, RetryPolicy, download_file
from .paths import PRIOR_DIR, checkpoint_root, put_back_command
from .registry import CheckpointSpec, get_spec, load_registry, plain_name_problem, read_manifest
from .safefs import PathBlockedError, blocked_folder, blocked_message
from .status import CheckpointRow, CheckpointStatus, describe
from .validate import check_folder
from .verify import BLOCKED, MISSING, UNREADABLE, Verification, verify_file

# (root, key, sha256, urls) -> the error of the last failed download of that file in this process
_failed: dict[tuple, DownloadError] = {}

# The checkpoints that ship inside the package (the digits prior): every store finds them in place,
# under PRIOR_DIR, when its own registry does not name them, and never downloads them.
BUNDLED_REGISTRY = PRIOR_DIR / "registry.yml"


def bundled_registry() -> dict[str, CheckpointSpec]:
    """The registry of the files that ship with the package (``ddrm_helpers/prior/registry.yml``)."""
    return load_registry(BUNDLED_REGISTRY)


def bundled_remedy(spec: CheckpointSpec) -> str:
    """What to do when a file that ships with the package is missing or damaged: only a command
    that works here (``git checkout`` in a checkout with git, else a fresh copy of the project)."""
    command = put_back_command(PRIOR_DIR / spec.subdir / spec.file)
    if command is not None:
        return f"put it back with `{command}`"
    return "reinstall the package from a fresh copy of the project (ddrm_helpers/prior/ is part of it)"


@dataclass(frozen=True)
class Problem:
    """Why one checkpoint of a config is not available."""

    role: str
    key: str
    file: str
    path: Path | None
    state: str  # missing, corrupt, blocked, unreadable, failed (download failed), error (registry)
    detail: str
    remedy: str | None = None  # for a file that ships with the package: how to get it back

    def phrase(self) -> str:
        """A few words for a one-line report: ``celeba_hq.ckpt is missing``."""
        if self.state == "failed":
            return f"{self.file} could not be downloaded"
        if self.state == "error":
            return f"the registry entry for {self.key} is wrong ({self.detail})"
        if self.state == BLOCKED:
            return f"{self.file} is blocked by something that is not a plain file"
        return f"{self.file} is {self.state}"


class CheckpointsUnavailable(DownloadError):
    """Some checkpoints of a config are missing; ``problems`` says which and why."""

    def __init__(self, message: str, problems: list[Problem]):
        super().__init__(message, key=problems[0].key if problems else None,
                         path=problems[0].path if problems else None)
        self.problems = problems


class CheckpointStore:
    """The checkpoint folder ``root`` (default: ``$DDRM_CHECKPOINT_DIR``, else ``exp/logs``) and the
    ``registry`` that says what belongs in it (a dict of specs, a registry file, or None for
    ``$DDRM_REGISTRY`` / ``configs/checkpoints.yml``; read when first needed)."""

    def __init__(self, root: str | os.PathLike | None = None,
                 registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None):
        self.root = check_folder(checkpoint_root(root), "the checkpoint folder")
        self._registry_arg = registry
        self._registry: dict[str, CheckpointSpec] | None = registry if isinstance(registry, dict) else None

    @classmethod
    def of(cls, store: CheckpointStore | None = None, cache_dir=None, registry=None) -> CheckpointStore:
        """``store`` itself, or a store made of the older loose arguments ``cache_dir`` and ``registry``."""
        if store is None:
            return cls(cache_dir, registry)
        if not isinstance(store, CheckpointStore):
            raise TypeError(f"store must be a CheckpointStore, got {type(store).__name__}")
        if cache_dir is not None or registry is not None:
            raise ValueError("give store=... or cache_dir=/registry=, not both")
        return store

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.root)!r})"

    @property
    def registry(self) -> dict[str, CheckpointSpec]:
        """The registry; a mistake in it raises :class:`ConfigError` naming file, entry and field."""
        if self._registry is None:
            self._registry = load_registry(self._registry_arg)
        return self._registry

    # -- one file ----------------------------------------------------------------------------------

    def spec(self, key: str | CheckpointSpec) -> CheckpointSpec:
        if isinstance(key, CheckpointSpec):
            spec = key
        elif key not in self.registry and key in bundled_registry():
            spec = bundled_registry()[key]
        else:
            spec = get_spec(key, self.registry)
        for name, value in (("file", spec.file), ("subdir", spec.subdir)):
            parts = value.split("/") if name == "subdir" else [value]
            for part in parts:
                problem = plain_name_problem(part) if isinstance(part, str) else "is not a string"
                if problem:
                    raise ConfigError(f"checkpoint '{spec.key}': '{name}' must be a plain relative name under the "
                                      f"checkpoint root: {value!r} ({part!r} {problem})")
        if not spec.pinned and spec.manifest is not None:
            read_manifest(spec)  # what an unpinned file is checked against: a broken one is a registry error
        return spec

    def path(self, key: str | CheckpointSpec) -> Path:
        """Where the file of ``key`` belongs: ``<root>/<subdir>/<file>``.

        Raises :class:`~ddrm_helpers.safefs.PathBlockedError` when a folder on the way below the root
        is a link or a file: the store does not go through it.
        """
        spec = self.spec(key)
        root = PRIOR_DIR if self.bundled(spec) else self.root
        parts = tuple(spec.subdir.split("/"))
        blocked = blocked_folder(root, parts)
        if blocked is not None:
            where, what = blocked
            raise PathBlockedError(blocked_message(where, what, f"the folder of {spec.file}"),
                                   key=spec.key, path=where)
        return root.joinpath(*parts, spec.file)

    def bundled(self, key: str | CheckpointSpec) -> bool:
        """Whether ``key`` is a file that ships with the package (found under ``PRIOR_DIR``, never
        downloaded) rather than one of this store's registry."""
        key_name = key.key if isinstance(key, CheckpointSpec) else key
        if key_name in self.registry:
            return False
        shipped = bundled_registry().get(key_name)
        return shipped is not None and (not isinstance(key, CheckpointSpec) or key == shipped)

    def verify(self, key: str | CheckpointSpec, *, quiet: bool = False, rehash: bool = False) -> Verification:
        """The state of one file (verified, unpinned, missing, corrupt, blocked, unreadable); reads only
        (but for the record of a good verification). ``rehash`` hashes it whatever its record says."""
        spec = self.spec(key)
        try:
            path = self.path(spec)
        except PathBlockedError as err:
            return Verification(BLOCKED, err.path, detail=str(err))
        except OSError as err:  # a folder on the way that cannot be looked into
            return Verification(UNREADABLE, self.root, detail=f"cannot be read: {err.strerror or err}")
        return verify_file(spec, path, use_record=not rehash, say=Reporter(spec.file, quiet))

    def fetch(self, key: str | CheckpointSpec, *, progress: bool = True, quiet: bool = False,
              retry: RetryPolicy | None = None, session=None, lock_timeout: float | None = None) -> Path:
        """The path of the verified file of ``key``, downloaded if needed (always tried, even after a
        failure earlier in this process). A file in place and verified costs no write and prints nothing.

        Raises :class:`DownloadError` saying what failed and what to do.
        """
        spec = self.spec(key)
        say = Reporter(spec.file, quiet)
        path = self.path(spec)
        current = verify_file(spec, path, say=say)
        if current.ok:
            return path
        if current.state == BLOCKED:
            raise PathBlockedError(current.detail, key=spec.key, path=path)
        if self.bundled(spec):
            raise DownloadError(f"{spec.file} ships with the package, at {path}, and is {current.state}: "
                                f"{bundled_remedy(spec)}", key=spec.key, path=path)
        memo = self._memo(spec)
        try:
            found = download_file(spec, path, say, progress=progress, retry=retry, session=session,
                                  lock_timeout=lock_timeout)
        except DownloadError as err:
            _failed[memo] = err
            raise
        _failed.pop(memo, None)
        return found

    def failed_before(self, key: str | CheckpointSpec) -> DownloadError | None:
        """The error of this process's last failed download of ``key``, if it failed and was not fetched since."""
        return _failed.get(self._memo(self.spec(key)))

    def _memo(self, spec: CheckpointSpec) -> tuple:
        return (str(self.root.absolute()), spec.key, spec.sha256, spec.urls)

    # -- one config --------------------------------------------------------------------------------

    def locate(self, config: Config | str, *, download: bool | str = "auto", progress: bool = True,
               quiet: bool = False) -> tuple[dict[str, Path], list[Problem]]:
        """The verified paths of ``config``'s checkpoints by role, and the problems of the others.

        ``download``: True fetches what is missing; False only looks; ``"auto"`` fetches what has
        not already failed to download in this process. Never raises for a file; a failed download's
        full report is printed, once, where it failed (``quiet`` silences only the progress lines).
        """
        config = config if isinstance(config, Config) else load_config(config)
        found: dict[str, Path] = {}
        problems: list[Problem] = []
        for role, key in config.checkpoints.items():
            try:
                spec = self.spec(key)
            except ConfigError as err:
                problems.append(Problem(role, key, "?", None, "error", str(err)))
                continue
            current = self.verify(spec, quiet=quiet)
            if current.ok:
                found[role] = current.path
                continue
            if self.bundled(spec):
                problems.append(Problem(role, key, spec.file, current.path, current.state, current.detail,
                                        bundled_remedy(spec)))
                continue
            earlier = self.failed_before(spec)
            wanted = download is True or (download == "auto" and earlier is None)
            if not wanted or current.state == BLOCKED:
                state, detail = ("failed", str(earlier)) if earlier is not None and current.state == MISSING \
                    else (current.state, current.detail)
                problems.append(Problem(role, key, spec.file, current.path, state, detail))
                continue
            try:
                found[role] = self.fetch(spec, progress=progress, quiet=quiet)
            except DownloadError as err:
                print(err, flush=True)
                problems.append(Problem(role, key, spec.file, err.path or current.path, "failed", str(err)))
        return found, problems

    def paths(self, config: Config | str, *, download: bool | str = True, progress: bool = True,
              quiet: bool = False) -> dict[str, Path]:
        """``{role: verified path}`` for every checkpoint of ``config`` (``model``, and ``classifier``
        for Config 3), downloading what is missing; raises :class:`CheckpointsUnavailable` otherwise."""
        config = config if isinstance(config, Config) else load_config(config)
        found, problems = self.locate(config, download=download, progress=progress, quiet=quiet)
        if problems:
            raise CheckpointsUnavailable(
                f"{config.display}: " + "; ".join(p.phrase() for p in problems)
                + f". Run `python -m ddrm_helpers download --config {config.name}`, or see docs/downloads.md.",
                problems,
            )
        return found

    # -- many configs ------------------------------------------------------------------------------

    def status(self, config_names: str | list[str] | None = None, *, verify: bool = False):
        """Per config (default: every known config, the digits prior included), each checkpoint's
        state, without downloading (a :class:`CheckpointStatus`).

        ``verify`` hashes every file again, believing no record of an earlier verification (what
        ``python -m ddrm_helpers status --verify`` does).
        """
        return self._table(config_names, fetch=False, options=dict(rehash=verify))

    def ensure(self, config_names: str | list[str] | None = None, *, progress: bool = True, quiet: bool = False,
               retry: RetryPolicy | None = None):
        """Fetch every checkpoint the configs need, as far as possible. Never raises for a file, a
        folder or the registry: each problem becomes a row of the returned status (and a failed
        download's full report is printed once). An unknown config name is a :class:`ConfigError`."""
        return self._table(config_names, fetch=True, options=dict(progress=progress, quiet=quiet, retry=retry))

    def _table(self, config_names, *, fetch: bool, options: dict | None = None):
        names = [config_names] if isinstance(config_names, str) else list(config_names or known_configs())
        configs = [load_config(name) for name in names]
        rows, seen, advice = [], {}, []
        for config in configs:
            for role, key in config.checkpoints.items():
                if key not in seen:
                    seen[key] = self._check_one(key, fetch, options or {}, advice)
                spec, found, error = seen[key]
                if spec is None:
                    rows.append(CheckpointRow(config=config.name, display=config.display, role=role, key=key,
                                              file=key, path=self.root, state="error", size=None,
                                              detail=str(error), error=str(error)))
                    continue
                rows.append(CheckpointRow(
                    config=config.name, display=config.display, role=role, key=key, file=spec.file,
                    path=found.path, state=found.state, size=found.size or spec.max_size,
                    detail=describe(spec, found, error), sha256=found.sha256,
                    error=str(error) if error else None,
                ))
        if advice:
            print("What you can do:\n" + "\n".join(f"  - {h}" for h in dict.fromkeys(advice)), flush=True)
        return CheckpointStatus(rows, self.root)

    def _check_one(self, key: str, fetch: bool, options: dict, advice: list[str]):
        try:
            spec = self.spec(key)
        except ConfigError as err:
            return None, None, err
        error = None
        rehash = options.pop("rehash", False)
        if fetch:
            try:
                self.fetch(spec, **options)
            except DownloadError as err:
                error = err
                if not isinstance(err, PathBlockedError):
                    # Each file's own account here; the advice common to all of them once, after the last
                    print(err.report or err, flush=True)
                    advice += err.hints
            except OSError as err:  # a folder that cannot be made, a lock that cannot be taken...
                error = DownloadError(f"{spec.file}: {err.strerror or err}", key=spec.key)
                print(error, flush=True)
        return spec, self.verify(spec, quiet=options.get("quiet", False), rehash=rehash), error


# -- the conveniences of the public API: one call, a store of their arguments ---------------------------


def fetch_checkpoint(
    key: str | CheckpointSpec,
    cache_dir: str | os.PathLike | None = None,
    *,
    registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None,
    progress: bool = True,
    quiet: bool = False,
    retry: RetryPolicy | None = None,
    session=None,
    lock_timeout: float | None = None,
) -> Path:
    """Return the path of the verified checkpoint ``key``, downloading it if needed.

    A convenience for ``CheckpointStore(cache_dir, registry).fetch(key, ...)``: ``cache_dir`` (else
    ``$DDRM_CHECKPOINT_DIR``, else ``exp/logs``) is the checkpoint root; the file goes to
    ``<root>/<subdir>/<file>`` as listed in ``configs/checkpoints.yml``. ``progress`` shows a tqdm
    bar; ``quiet`` silences the one-line reports. ``lock_timeout`` bounds the wait for another
    process downloading the same file (None: wait).

    Raises :class:`DownloadError` (an ``OSError``) naming every source tried and what it
    answered, and what the user can do; :class:`~ddrm_helpers.errors.ChecksumError` when the
    sources served bytes that are not the pinned file.
    """
    return CheckpointStore(cache_dir, registry).fetch(
        key, progress=progress, quiet=quiet, retry=retry, session=session, lock_timeout=lock_timeout)


def checkpoint_status(
    config_names: str | list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None,
    store: CheckpointStore | None = None,
    verify: bool = False,
) -> CheckpointStatus:
    """Per config, each checkpoint: verified, unpinned (verified as far as possible), missing, corrupt,
    blocked (a link or a folder in the way) or unreadable; reads only, never downloads.

    A convenience for ``CheckpointStore(cache_dir, registry).status(config_names)`` (or ``store``'s).
    A file is hashed at most once where a record of a good verification can be kept beside it, so
    calling this again is cheap; ``verify=True`` hashes every file again, believing no record.
    """
    return CheckpointStore.of(store, cache_dir, registry).status(config_names, verify=verify)


def ensure_checkpoints(
    config_names: str | list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None,
    store: CheckpointStore | None = None,
    progress: bool = True,
    quiet: bool = False,
    retry: RetryPolicy | None = None,
) -> CheckpointStatus:
    """Fetch every checkpoint the configs need, as far as possible; never raises for a failed download,
    a folder in the way or a bad registry.

    Returns the status afterwards: a problem shows in its row (``detail`` in short, ``error`` in
    full) and a failed download's message is printed, so that "run all" goes on to the next cell.
    """
    return CheckpointStore.of(store, cache_dir, registry).ensure(config_names, progress=progress, quiet=quiet,
                                                                  retry=retry)
