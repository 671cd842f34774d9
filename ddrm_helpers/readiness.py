"""`prepare_checkpoints`: fetch what the configs need, and say in one line per file what could not be had.

>>> ready = prepare_checkpoints()     # progress bars while downloading; one line per file that failed
>>> ready.ready                       # ['celeba_hq'] : the configs whose every checkpoint is verified
>>> print(ready)                      # one line: what can run, and what to do when nothing can

This is the first contact: ``python -m ddrm_helpers demo`` and the notebook's checkpoint cell call
it, often on a machine that is offline or whose hosts are down. A file that cannot be had is said
once, where the fetch failed: what each source answered, and where to put the file by hand. No
table repeats it, and the configs that cannot run are not started (the summary names them); when
none can, the last line says that ``selftest`` works offline. (``ensure_checkpoints`` is the full
account: every failed file's report, the advice, and the table of every checkpoint.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .config import available_configs, load_config
from .errors import ConfigError, DownloadError
from .store import CheckpointStore

OFFLINE_CHECK = "works offline: it checks that DDRM restores on this machine with the small prior that ships with it"


@dataclass
class Readiness:
    """Which configs can run (``ready``), which cannot and the files they miss (``missing``), and the
    line said for each file that could not be had (``failures``, by file name)."""

    ready: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.missing:
            return f"Ready to run: {', '.join(self.ready)}."
        if not self.ready:
            from .display import in_notebook

            check = "The self-test above (`selftest()`)" if in_notebook() else "`python -m ddrm_helpers selftest`"
            return f"Nothing can run: no config has its checkpoints (why above). {check} {OFFLINE_CHECK}."
        return (f"Ready to run: {', '.join(self.ready)}. Not ready: {', '.join(self.missing)} (why above); "
                "`python -m ddrm_helpers download` tries again.")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        return f"<p>{html.escape(str(self))}</p>"


def prepare_checkpoints(config_names: str | list[str] | None = None, *, store: CheckpointStore | None = None,
                        progress: bool = True, say=print) -> Readiness:
    """Fetch every checkpoint of ``config_names`` (default: every config) into ``store`` (default:
    ``exp/logs`` or ``$DDRM_CHECKPOINT_DIR``); a file already there and verified costs nothing.
    Each file that cannot be had is one line to ``say``, when it fails (:func:`failure_line`); the
    store remembers the failure, so that a later run of its config is skipped without trying again.
    Never raises for a file; an unknown config name is a ``ConfigError``."""
    store = store or CheckpointStore()
    names = [config_names] if isinstance(config_names, str) else list(config_names or available_configs())
    configs = [load_config(name) for name in names]
    failures: dict[str, str] = {}
    outcome: dict[str, str | None] = {}  # registry key -> the file's failure line, or None when verified
    for config in configs:
        for key in config.checkpoints.values():
            if key not in outcome:
                outcome[key] = _fetch(store, key, progress)
                if outcome[key] is not None:
                    failures[key] = outcome[key]
                    say(outcome[key])
    ready, missing = [], {}
    for config in configs:
        lost = [_file_name(store, key) for key in config.checkpoints.values() if outcome[key] is not None]
        if lost:
            missing[config.name] = lost
        else:
            ready.append(config.name)
    return Readiness(ready, missing, {_file_name(store, key): line for key, line in failures.items()})


def _fetch(store: CheckpointStore, key: str, progress: bool) -> str | None:
    """None when the file of ``key`` is in place and verified (fetched if needed), else its one line."""
    try:
        store.fetch(key, progress=progress, quiet=True)
    except DownloadError as err:
        return failure_line(_file_name(store, key), err)
    except ConfigError as err:
        return f"{key}: the registry entry is wrong: {err}"
    except OSError as err:  # a folder that cannot be made, a lock that cannot be taken...
        return f"{_file_name(store, key)} could not be fetched: {err.strerror or err}"
    return None


def _file_name(store: CheckpointStore, key: str) -> str:
    try:
        return store.spec(key).file
    except ConfigError:
        return key


def failure_line(file: str, err: DownloadError) -> str:
    """One line for a file that could not be had: each different answer of its sources once (with how
    many sources gave it), and where to put the file by hand."""
    if not err.attempts:
        return f"{file} could not be had: {str(err).splitlines()[0]}"
    answers = Counter(outcome for _, outcome in err.attempts)
    said = "; ".join(answer if count == 1 else f"{answer} ({count} sources)" for answer, count in answers.items())
    where = f" Put it at {err.path} by hand, or see docs/downloads.md." if err.path else " See docs/downloads.md."
    tried = len(err.attempts)
    return f"{file} could not be downloaded from its {tried} source{'s' if tried != 1 else ''}: {said}.{where}"
