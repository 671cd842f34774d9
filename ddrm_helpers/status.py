"""The checkpoint table: which configs can run, and why not (what `CheckpointStore.status` returns).

>>> status = checkpoint_status()          # a table in a notebook, text in a terminal
>>> status.ready("celeba_hq")
False

It only presents what the store found; :func:`~ddrm_helpers.store.checkpoint_status` and
:func:`~ddrm_helpers.store.ensure_checkpoints` make it.
"""

from __future__ import annotations

import html
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import DownloadError
from .part_writer import PartFile
from .paths import CHECKPOINT_DIR_ENV
from .registry import CheckpointSpec, format_size
from .verify import MISSING, UNPINNED, VERIFIED, Verification


@dataclass(frozen=True)
class CheckpointRow:
    """One checkpoint of one config."""

    config: str
    display: str
    role: str  # "model" or "classifier"
    key: str
    file: str
    path: Path
    state: str  # verified, unpinned, missing, corrupt, blocked, unreadable, error (the registry entry)
    size: int | None  # on disk, or expected when missing
    detail: str
    sha256: str | None = None
    error: str | None = None  # the full DownloadError message when a download was tried and failed

    @property
    def ok(self) -> bool:
        return self.state in (VERIFIED, UNPINNED)


class CheckpointStatus:
    """The state of every checkpoint of the asked-for configs."""

    def __init__(self, rows: list[CheckpointRow], root: Path):
        self.rows = rows
        self.root = root

    def configs(self) -> list[str]:
        return list(dict.fromkeys(r.config for r in self.rows))

    def ready(self, config: str) -> bool:
        rows = [r for r in self.rows if r.config == config]
        return bool(rows) and all(r.ok for r in rows)

    def problems(self, config: str) -> list[CheckpointRow]:
        return [r for r in self.rows if r.config == config and not r.ok]

    @property
    def all_ready(self) -> bool:
        return all(r.ok for r in self.rows)

    def summary(self) -> str:
        ready = [c for c in self.configs() if self.ready(c)]
        waiting = [c for c in self.configs() if not self.ready(c)]
        lines = [f"Ready to run: {', '.join(ready) if ready else 'none'}."]
        if waiting:
            lines.append(
                f"Not ready: {', '.join(waiting)}. Download with `python -m ddrm_helpers download "
                + " ".join(f"--config {c}" for c in waiting)
                + "` (or `ensure_checkpoints()` in the notebook); docs/downloads.md says how to place files by hand."
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        header = ("config", "checkpoint", "state", "size", "detail")
        table = [header] + [
            (r.config, f"{r.path.parent.name}/{r.file}" if r.state != "error" else r.key, r.state, _size(r.size),
             r.detail) for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines = [f"Checkpoints under {self.root} (another folder: set {CHECKPOINT_DIR_ENV}, or --dir)"]
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
        return "\n".join(lines + ["", self.summary()])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colour = {VERIFIED: "#1a7f37", UNPINNED: "#9a6700", MISSING: "#6e7781"}
        cells = []
        for r in self.rows:
            state = html.escape(r.state)
            cells.append(
                "<tr>"
                f"<td>{html.escape(r.display)}</td><td><code>{html.escape(r.file)}</code></td>"
                f"<td style='color:{colour.get(r.state, '#cf222e')};font-weight:bold'>{state}</td>"
                f"<td>{_size(r.size)}</td><td style='text-align:left'>{html.escape(r.detail)}</td>"
                "</tr>"
            )
        summary = html.escape(self.summary()).replace("\n", "<br>")
        return (
            f"<p>Checkpoints under <code>{html.escape(str(self.root))}</code></p>"
            "<table><thead><tr><th>config</th><th>file</th><th>state</th><th>size</th><th>detail</th></tr>"
            f"</thead><tbody>{''.join(cells)}</tbody></table><p>{summary}</p>"
        )


def describe(spec: CheckpointSpec, found: Verification, error: DownloadError | None) -> str:
    """The short account of one file for the table."""
    if error and found.state == MISSING:
        outcomes = list(dict.fromkeys(outcome for _, outcome in error.attempts)) or [str(error).split("\n")[0]]
        return "download failed: " + "; ".join(outcomes) + " (the full message is printed above)"
    if found.state == MISSING:
        part = PartFile(spec, found.path, say=print)
        try:
            st = os.lstat(part.part)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            why = part.why_not_ours(st)
            if why:
                return f"not downloaded yet; the .part file there {why}: `download` moves it aside and starts afresh"
            return f"partial download, {_size(st.st_size)} of {_size(spec.max_size)}; `download` resumes it"
        return "not downloaded yet; `download` fetches it"
    if found.state == UNPINNED:
        return f"no published hash; checked by size and tensor manifest; sha256 {found.sha256[:16]}..."
    return found.detail


def _size(n: int | None) -> str:
    return "?" if n is None else format_size(n)
