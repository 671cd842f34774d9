"""Pictures inline: grids of original, degraded and restored images.

`show_grid` draws any table of images (columns of batches); `show_results` draws a run's result
(see :mod:`ddrm_helpers.runner`). In a notebook the figure is shown inline; elsewhere it is
returned for the caller to save.
"""

from __future__ import annotations

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
    fig, axes = plt.subplots(rows, len(names), figsize=(cell_inches * len(names), cell_inches * rows + 0.4),
                             squeeze=False)
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
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _show_or_return(fig, show)


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


def show_results(result, *, show: bool = True):
    """The grid of one run, a row per image: original | degraded | restored, PSNR/SSIM under each.

    With several samples, the restored column becomes the samples, their mean and their spread
    (the per-pixel standard deviation across the samples, in [0, 1] pixel units: bright where they
    disagree). A restored photo (``from_photo``) shows the photo, its bicubic upscale for
    super-resolution, and its reference only if one was given. A skipped config prints why and
    draws nothing.
    """
    if getattr(result, "skipped", False):
        print(result, flush=True)
        return None
    rows = []
    for i, name in enumerate(result.names):
        label = name
        if result.classes is not None:
            from .classes import class_name

            label += f"\n({class_name(int(result.classes[i]))})"
        rows.append(label)
    columns, notes, cmap = {}, {}, {}
    if result.original is not None:
        columns["reference" if result.from_photo else "original"] = result.original
    estimated = " (estimated)" if result.sigma_y_estimated else ""
    degraded = f"{'photo' if result.from_photo else 'degraded'}: {result.task}, sigma_y {result.sigma_y:.3g}{estimated}"
    columns[degraded] = result.degraded
    if result.from_photo and result.baseline.shape != result.degraded.shape:
        columns["bicubic upscale"] = result.baseline
    if result.num_samples == 1:
        first = "restored"
        columns[first] = result.restored
    else:
        first, mean = "sample 1", f"mean of {result.num_samples}"
        for k in range(result.num_samples):
            columns[f"sample {k + 1}"] = result.samples[:, k]
        columns[mean] = result.mean
        columns["spread (std)"] = result.spread
        cmap["spread (std)"] = "magma"
        if result.metrics:
            notes[mean] = [f"PSNR {m['psnr_mean']:.2f} dB, SSIM {m['ssim_mean']:.3f}" for m in result.metrics]
    if result.metrics:
        notes[degraded] = [f"baseline PSNR {m['psnr_degraded']:.2f} dB, SSIM {m['ssim_degraded']:.3f}"
                           for m in result.metrics]
        notes[first] = [f"PSNR {m['psnr_restored']:.2f} dB, SSIM {m['ssim_restored']:.3f}" for m in result.metrics]
    samples = f", {result.num_samples} samples" if result.num_samples > 1 else ""
    title = (f"{result.display}: {result.steps} steps, eta {result.eta:g}{samples}, {result.seconds:.1f} s "
             f"on {result.device}")
    return show_grid(columns, rows, title=title, notes=notes, cmap=cmap,
                     cell_inches=2.6 if len(columns) <= 4 else 2.0, show=show)
