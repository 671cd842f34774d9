"""The app's checkpoint panel: the status table of every config, and a download per config that
reports what the store says.

No Gradio here (:mod:`ddrm_helpers.app.layout` wires it); the store does all the work, with its own
rules (:mod:`ddrm_helpers.store`), and its failure message is shown as it is.
"""

from __future__ import annotations

from ..config import load_config
from ..download import format_size
from ..errors import DownloadError
from .choices import config_choices

HEADERS = ["config", "file", "state", "size", "detail"]


def status_rows(store) -> list[list[str]]:
    """One row per checkpoint of every config the app offers: the store's own status table."""
    return [[row.display, row.file, row.state, "?" if row.size is None else format_size(row.size), row.detail]
            for row in store.status([name for _, name in config_choices()]).rows]


def readiness(config: str, store) -> str:
    """One line: whether ``config`` can run now, and if not, which file is missing and what to do."""
    status = store.status([config])
    display = load_config(config).display
    problems = status.problems(config)
    if not problems:
        return f"{display}: ready."
    files = ", ".join(f"{row.file} is {row.state}" for row in problems)
    return f"{display}: {files}. Download it in the Checkpoints panel below; the other configs stay usable."


def download(config: str, store, *, progress: bool = True) -> str:
    """Fetch every checkpoint of ``config`` (a progress bar per file when ``progress``), and say how
    it went: ready, or the store's own message for each file that failed (every source tried, what
    each answered, what to do)."""
    loaded = load_config(config)
    failures = []
    for key in loaded.checkpoints.values():
        try:
            store.fetch(key, progress=progress, quiet=True)
        except DownloadError as err:
            failures.append(str(err))
        except OSError as err:  # a folder that cannot be made, a lock that cannot be taken...
            failures.append(f"{key}: {err.strerror or err}")
    if not failures:
        return f"{loaded.display}: downloaded and verified; ready."
    return f"{loaded.display}: the download failed.\n\n" + "\n\n".join(failures)
