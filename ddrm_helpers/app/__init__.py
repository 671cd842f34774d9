"""The restoration app: a Gradio page over the same engine as the notebook and the command line.

>>> from ddrm_helpers.app import build_app, serve
>>> app = serve(block=False)             # http://127.0.0.1:7860; app.close() stops it
>>> python -m ddrm_helpers app           # the same from a terminal (--port, --host, --share)

Gradio is an optional dependency (``requirements-app.txt``, or the ``app`` extra): this package
imports it only when :func:`build_app` or :func:`serve` is first used, and :func:`ensure_gradio`
installs it where it is missing (the notebook's app cell). docs/app.md describes the page.

Modules, one idea each: ``choices`` (the menus: configs, tasks, modes, classes), ``restoration``
(one request: read, checked, restored, reported), ``checkpoints`` (the checkpoint panel), ``layout``
(the page, its handlers, and serving it).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from ..paths import PROJECT_ROOT

GRADIO_MINIMUM = (6, 0)  # the lower bound of requirements-app.txt


def __getattr__(name: str):
    if name in ("build_app", "serve"):  # imported on first use, so that importing this needs no Gradio
        from . import layout

        return getattr(layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gradio_version() -> tuple[int, ...] | None:
    """The installed Gradio's version as numbers, or None when it is not installed."""
    try:
        text = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def ensure_gradio() -> None:
    """Install ``requirements-app.txt`` when Gradio is missing or older than the app needs (Colab
    comes with an older one); otherwise do nothing, so that it needs no network where Gradio is in
    place. A failed install raises ``OSError`` with pip's last line."""
    version = gradio_version()
    if version is not None and version >= GRADIO_MINIMUM:
        return
    print("Installing the app's requirements (Gradio)...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r",
                           str(PROJECT_ROOT / "requirements-app.txt")], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise OSError(f"Installing requirements-app.txt failed: {lines[-1] if lines else done.returncode}")
