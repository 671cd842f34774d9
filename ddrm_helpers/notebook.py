"""What the notebook needs beyond one call per config: the device note, uploads, the three configs
side by side, and the closing summary. (The controls are the app's: :mod:`ddrm_helpers.app`.)

Every cell of the notebook can run on its own, in any order: an upload button is found again by its
description (``uploaded_images("Upload")``: none yet, no images), and ``run_summary()`` lists what
was shown with a label in this kernel, so no cell needs a name that another cell made.

Widgets leave blank space where they cannot run (a saved or exported copy of the notebook, GitHub's
preview), so each one comes after a line of text that says what it is and to run the cell.
"""

from __future__ import annotations

import html
import io
import re

import torch

from . import threads
from .config import available_configs
from .display import in_notebook, label_result, labelled_results, row_names, show_grid
from .runner import run_config

# The measured CPU figures of docs/performance.md (seconds per network evaluation, one 256x256 image,
# 2-core machine); tests/test_notebook_helpers.py checks them against that file's table.
CPU_SECONDS_PER_STEP = {"celeba_hq": "about 4.4 s", "imagenet": "30 to 40 s"}


def device_report() -> str:
    """Which device will run, and what that means for the waiting time. On a CPU it also sets
    PyTorch's thread count for this kernel (:func:`ddrm_helpers.threads.apply`) and says it."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        text = (f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB). A config restores its demo "
                "images in seconds to a minute; the first run of a config also loads its checkpoint.")
    else:
        text = (f"No GPU: everything runs on the CPU. One step for one image takes "
                f"{CPU_SECONDS_PER_STEP['celeba_hq']} with the face model (Config 1) and "
                f"{CPU_SECONDS_PER_STEP['imagenet']} with an ImageNet model (Configs 2 and 3), so a config's "
                "demo (20 steps) takes minutes to tens of minutes (docs/performance.md). In Colab: Runtime > "
                "Change runtime type > a GPU, then run all again.")
        chosen = threads.apply("cpu")
        waiting = ", and more threads would wait for each other" if chosen.lowered else ""
        text += f" PyTorch computes with {chosen}{waiting}; `torch.set_num_threads(N)` in a cell chooses."
    print(text)
    return text


def _show_widget(widget, what: str) -> None:
    """Display ``widget`` under one line saying what it is, which stays readable where widgets
    cannot run (an exported or saved copy shows the line and leaves the widget's space blank)."""
    from IPython.display import display

    line = f"{what}. (No widget below? Run this cell: widgets show only in a running notebook.)"
    display({"text/plain": line, "text/html": f"<small>{html.escape(line)}</small>"}, raw=True)
    display(widget)


_UPLOADS: dict = {}  # description -> the latest upload button made with it


def upload_widget(description: str = "Upload", multiple: bool = True):
    """An upload button for images (works in Jupyter, VS Code and Colab); read it with
    ``uploaded_images(widget)`` or, from any cell, ``uploaded_images(description)``."""
    import ipywidgets as w

    widget = w.FileUpload(accept="image/*", multiple=multiple, description=description)
    _UPLOADS[description] = widget
    if in_notebook():
        _show_widget(widget, f"Upload button '{description}' for {'images' if multiple else 'one image'}")
    return widget


def uploaded_images(source=None) -> list:
    """The images uploaded, as PIL images (each with its file name as ``filename``).

    ``source``: an upload widget (ipywidgets 7 or 8), the description of one made by
    :func:`upload_widget` in this kernel (``"Upload"``; none made yet: no images), a Colab
    ``files.upload()`` dict, or None (no images).
    """
    from .images import read_image_file

    if source is None:
        return []
    if isinstance(source, str):
        if source not in _UPLOADS:
            return []
        source = _UPLOADS[source]
    # google.colab.files.upload() gives {name: bytes}
    items = list(source.items()) if isinstance(source, dict) else _upload_items(source.value)
    images = []
    for name, content in items:
        image = read_image_file(io.BytesIO(bytes(content)), f"the upload {name!r}")  # its size checked first
        image.filename = name
        images.append(image)
    return images


def _upload_items(value) -> list[tuple[str, bytes]]:
    """(name, content) of each file in a FileUpload's value.

    ipywidgets 8: a tuple of dicts with ``name`` and ``content`` (a memoryview), among others.
    ipywidgets 7: a dict ``{name: {"metadata": {"name": ...}, "content": bytes}}``.
    """
    if isinstance(value, dict):
        return [(entry.get("metadata", {}).get("name", name), entry["content"]) for name, entry in value.items()]
    return [(entry["name"], entry["content"]) for entry in value]


def compare_configs(image, task: str = "sr4", sigma_y: float = 0.05, steps: int | None = None, seed: int = 0,
                    configs=None, show: bool = True, label: str | None = None, **kwargs) -> dict:
    """The same image and degradation through every config, and one grid to compare them: the
    original, the degraded image with its baseline PSNR/SSIM, and each config's restoration with its
    own. A config that is skipped has said why in one line (its run prints it) and is named in the
    figure's title. ``label`` files the results under that name for :func:`run_summary`.
    """
    results = {name: run_config(name, images=[image], task=task, sigma_y=sigma_y, steps=steps, seed=seed,
                                **kwargs)
               for name in configs or available_configs()}
    if label is not None:
        label_result(label, results)
    ran = {name: r for name, r in results.items() if not r.skipped}
    if not ran:
        return results
    first = next(iter(ran.values()))
    degraded = f"degraded ({task})"
    columns = {"original": first.original, degraded: first.degraded}
    baseline = first.metrics[0]
    notes = {degraded: [f"baseline PSNR {baseline['psnr_degraded']:.2f} dB, SSIM {baseline['ssim_degraded']:.3f}"]}
    for r in ran.values():
        columns[r.display] = r.restored
        notes[r.display] = [f"PSNR {r.metrics[0]['psnr_restored']:.2f} dB, SSIM {r.metrics[0]['ssim_restored']:.3f}"]
    skipped = [r.display for r in results.values() if r.skipped]
    title = f"{task}, sigma_y {sigma_y:g}" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    show_grid(columns, row_names(first.names[:1]), title=title, notes=notes, show=show)
    return results


def run_summary(*results) -> str:
    """What ran (with its mean PSNR/SSIM and where it was saved) and what was skipped and why, one
    line each, and printed.

    With no arguments: every result shown with a ``label`` in this process (``show_results(...,
    label=...)``, ``compare_configs(..., label=...)``), in the order the labels were first used,
    each line starting with its label. Otherwise each argument is a result, a ``Skipped``, a dict of
    them (from ``compare_configs``), None (ignored), or a ``(label, result)`` pair.
    """
    entries = list(labelled_results().items()) if not results else [
        r if isinstance(r, tuple) else (None, r) for r in results]
    flat = []
    for label, r in entries:
        for one in (r.values() if isinstance(r, dict) else [r]):
            if one is not None:
                flat.append((label, one))
    lines = []
    for label, r in flat:
        where = f"- {label}, " if label else "- "
        if r.skipped:
            lines.append(f"{where}{r.display}: skipped: {short_reason(r.reason)}")
            continue
        scores = ""
        if r.metrics:
            mean_psnr = sum(m["psnr_restored"] for m in r.metrics) / len(r.metrics)
            mean_ssim = sum(m["ssim_restored"] for m in r.metrics) / len(r.metrics)
            scores = f": PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.3f}"
        saved = f", saved in {r.out_dir}" if r.out_dir else ""
        samples = f", {r.num_samples} samples" if r.num_samples > 1 else ""
        inputs = "a photo" if r.from_photo else f"{len(r.names)} image(s)"
        lines.append(f"{where}{r.display}: ran {r.task} (sigma_y {r.sigma_y:.3g}, {r.steps} steps{samples}) on "
                     f"{inputs}{scores}{saved}")
    text = "\n".join(lines) if lines else "Nothing ran yet."
    print(text)
    return text


def short_reason(reason: str) -> str:
    """A skip's reason without its details in parentheses (the run printed them in full):
    "celeba_hq.ckpt is missing (download failed: ...)" -> "celeba_hq.ckpt is missing"."""
    previous = None
    while previous != reason:
        previous, reason = reason, re.sub(r"\s*\([^()]*\)", "", reason)
    return reason.strip() or previous
