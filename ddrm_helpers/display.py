"""Pictures inline: grids of original, degraded and restored images.

`show_grid` draws any table of images (columns of batches); `show_results` draws a run's result
(see :mod:`ddrm_helpers.runner`). In a notebook the figure is shown inline; elsewhere it is
returned for the caller to save. Column titles, notes and row labels are wrapped to the width of
their column, so that neighbours never overlap.

``show_results(result, label="Section 4 (demo images)")`` also files the result under that label
for :func:`ddrm_helpers.notebook.run_summary` (see :func:`labelled_results`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence

import torch

from .images import to_uint8


def show_grid(
    columns: Mapping[str, torch.Tensor | Sequence[torch.Tensor]],
    row_labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    cell_inches: float = 2.6,
    cmap: Mapping[str, str] | None = None,
    show: bool = True,
):
    """A grid with one column per entry of ``columns`` and one row per image.

    Each column is a batch (N, C, H, W) in [-1, 1] or a list of N such images (sizes may differ:
    a low-resolution input is drawn with visible pixels, not smoothed). ``notes[column][i]`` is
    written under cell i (PSNR, for example). ``cmap[column]`` draws a one-channel column with a
    colour map and a colour bar (for a spread map; its values are shown as they are, not as
    [-1, 1]). With ``show`` in a notebook, the figure is displayed and closed, and None is
    returned; otherwise the figure is returned.
    """
    import matplotlib.pyplot as plt

    names = list(columns)
    batches = {name: _as_list(columns[name]) for name in names}
    rows = max(len(b) for b in batches.values())
    # A row is as tall as its most portrait-like picture needs at the column's width (1 for squares),
    # so that a wide photo is not drawn as a thin strip in a square cell.
    heights = [max(min(image.shape[-2] / image.shape[-1], 2.0) for image in
                   (batches[name][i] for name in names if i < len(batches[name]))) for i in range(rows)]
    fig, axes = plt.subplots(rows, len(names), figsize=(cell_inches * len(names), cell_inches * sum(heights) + 0.4),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for j, name in enumerate(names):
        for i in range(rows):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(batches[name]):
                ax.axis("off")
                continue
            image = batches[name][i]
            if cmap and name in cmap:
                shown = ax.imshow(image.detach().float().cpu().reshape(image.shape[-2:]).numpy(),
                                  cmap=cmap[name], interpolation="nearest")
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
            else:
                ax.imshow(to_uint8(image), interpolation="nearest")
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0 and row_labels is not None and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=9)
            if notes and name in notes and i < len(notes[name]) and notes[name][i]:
                ax.set_xlabel(notes[name][i], fontsize=8)
    _fit_texts(fig, axes, cell_inches, title)
    _tight_layout_under_title(fig)
    return _show_or_return(fig, show)


def _tight_layout_under_title(fig) -> None:
    """``tight_layout``, then again in the space under the figure's title if a column title (two
    lines, say) reaches up into it."""
    fig.tight_layout()
    suptitle = fig._suptitle
    if suptitle is None or not suptitle.get_text():
        return
    renderer = _renderer(fig)
    bottom = suptitle.get_window_extent(renderer).y0
    top = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes)
    if top > bottom:
        height = fig.get_figheight() * fig.dpi
        # The rect holds the axes with their titles; a little over the title's foot, as tight_layout pads.
        fig.tight_layout(rect=(0, 0, 1, max(0.5, bottom / height + 0.02)))


def _fit_texts(fig, axes, cell_inches: float, title: str | None) -> None:
    """Wrap titles and notes to their column's width, row labels to the row's height, and the
    figure's title to the figure's width (at word boundaries; a line that is one long word stays),
    and make the figure taller by the lines that wrapping added."""
    renderer = _renderer(fig)
    pitch = cell_inches * fig.dpi * 0.94  # a column's width in pixels, less a small gap
    added = 0.0  # inches
    for i, row in enumerate(axes):
        title_lines = note_lines = 1
        for ax in row:
            title_lines = max(title_lines, _wrap_to(ax.title, pitch, renderer, vertical=False))
            note_lines = max(note_lines, _wrap_to(ax.xaxis.label, pitch, renderer, vertical=False))
            _wrap_to(ax.yaxis.label, pitch, renderer, vertical=True)
        added += (note_lines - 1) * _line_inches(8) + (i == 0) * (title_lines - 1) * _line_inches(10)
    if title:
        suptitle = fig.suptitle(title, fontsize=11)
        lines = _wrap_to(suptitle, fig.get_figwidth() * fig.dpi * 0.96, renderer, vertical=False)
        added += (lines - 1) * _line_inches(11)
    if added:
        fig.set_figheight(fig.get_figheight() + added)


def _line_inches(fontsize: float) -> float:
    return fontsize * 1.25 / 72


def _renderer(fig):
    get = getattr(fig.canvas, "get_renderer", None)
    return get() if get is not None else fig._get_renderer()


def _wrap_to(text, limit: float, renderer, *, vertical: bool) -> int:
    """Wrap ``text`` until it fits in ``limit`` pixels; returns its number of lines."""
    original = text.get_text()
    if not original:
        return 1

    def size() -> float:
        box = text.get_window_extent(renderer)
        return box.height if vertical else box.width

    if size() > limit:
        longest = max(len(line) for line in original.splitlines())
        for width in range(longest - 1, 5, -1):
            text.set_text("\n".join(textwrap.fill(line, width, break_long_words=False)
                                    for line in original.splitlines()))
            if size() <= limit:
                break
    return len(text.get_text().splitlines())


# Names that image_names() gives to inputs that are not files: the type of the object.
_GENERIC_NAME = re.compile(r"^(ndarray|tensor|image|[a-z0-9]*imagefile|photo\d+)$")


def row_names(names: Sequence[str]) -> list[str]:
    """Labels for the rows of a grid: a file's name as it is, and "photo 1", "photo 2", ... (by
    row) for an array, a tensor or a PIL image that has no file name."""
    return [f"photo {i + 1}" if _GENERIC_NAME.match(name) else name for i, name in enumerate(names)]


def _sizes_differ(result) -> bool:
    """Whether the pictures of a result are at sizes of their own (a photo, an image restored at its
    own size, images of several sizes), rather than all at the model's square: then each says its size."""
    shapes = {tuple(image.shape[-2:]) for image in _as_list(result.restored)}
    return result.from_photo or len(shapes) > 1 or any(height != width for height, width in shapes)


def _as_list(column) -> list[torch.Tensor]:
    if isinstance(column, torch.Tensor):
        return list(column) if column.ndim == 4 else [column]
    return list(column)


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


def _show_or_return(fig, show: bool):
    if show and in_notebook():
        import matplotlib.pyplot as plt
        from IPython.display import display

        display(fig)
        plt.close(fig)
        return None
    return fig


_LABELLED: dict[str, object] = {}


def labelled_results() -> dict[str, object]:
    """The results shown with a ``label`` in this process, by label, in the order the labels were
    first used (a result, a ``Skipped``, or a dict of them from ``compare_configs``)."""
    return dict(_LABELLED)


def label_result(label: str, result) -> None:
    """File ``result`` (or a dict of results) under ``label`` for ``run_summary``, as
    ``show_results(result, label=...)`` does."""
    _LABELLED[label] = result


def show_results(result, *, show: bool = True, label: str | None = None):
    """The grid of one run, a row per image: original | degraded | restored, PSNR/SSIM under each.

    With several samples, the restored column becomes the samples, their mean and their spread
    (the per-pixel standard deviation across the samples, in [0, 1] pixel units: bright where they
    disagree). A restored photo (``from_photo``) shows the photo, its bicubic upscale for
    super-resolution, and its reference only if one was given. A skipped config draws and prints
    nothing: the run that returned it has already said why, in one line.

    ``label`` (for example ``"Section 4 (demo images)"``) files the result under that name for
    :func:`~ddrm_helpers.notebook.run_summary`; showing another result with the same label
    replaces it (a rerun of the cell).
    """
    if label is not None:
        label_result(label, result)
    if getattr(result, "skipped", False):
        return None
    rows = []
    for i, name in enumerate(row_names(result.names)):
        if result.classes is not None:
            from .classes import class_name

            name += f"\n({class_name(int(result.classes[i]))})"
        rows.append(name)
    columns, notes, cmap = {}, {}, {}
    if result.original is not None:
        columns["reference" if result.from_photo else "original"] = result.original
    estimated = " (estimated)" if result.sigma_y_estimated else ""
    degraded = f"{'photo' if result.from_photo else 'degraded'}: {result.task}, sigma_y {result.sigma_y:.3g}{estimated}"
    columns[degraded] = result.degraded
    if result.from_photo and result.baseline[0].shape != result.degraded[0].shape:
        columns["bicubic upscale"] = result.baseline
    if result.num_samples == 1:
        first = "restored"
        columns[first] = result.restored
    else:
        first, mean = "sample 1", f"mean of {result.num_samples}"
        for k in range(result.num_samples):
            columns[f"sample {k + 1}"] = [samples[k] for samples in result.samples]
        columns[mean] = result.mean
        columns["spread (std)"] = result.spread
        cmap["spread (std)"] = "magma"
        if result.metrics:
            notes[mean] = [f"PSNR {m['psnr_mean']:.2f} dB, SSIM {m['ssim_mean']:.3f}" for m in result.metrics]
    if result.metrics:
        notes[degraded] = [f"baseline PSNR {m['psnr_degraded']:.2f} dB, SSIM {m['ssim_degraded']:.3f}"
                           for m in result.metrics]
        notes[first] = [f"PSNR {m['psnr_restored']:.2f} dB, SSIM {m['ssim_restored']:.3f}" for m in result.metrics]
    if _sizes_differ(result):  # each picture's own size, under it
        for name, images in columns.items():
            sizes = [f"{image.shape[-1]}x{image.shape[-2]} px" for image in _as_list(images)]
            notes[name] = [size if not extra else f"{size}; {extra}"
                           for size, extra in zip(sizes, notes.get(name) or [""] * len(sizes))]
    samples = f", {result.num_samples} samples" if result.num_samples > 1 else ""
    title = (f"{result.display}: {result.steps} steps, eta {result.eta:g}{samples}, {result.seconds:.1f} s "
             f"on {result.device}")
    return show_grid(columns, rows, title=title, notes=notes, cmap=cmap,
                     cell_inches=2.6 if len(columns) <= 4 else 2.0, show=show)
