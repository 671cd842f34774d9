"""The restoration as it happens: the model's guess of the clean image after every step.

At every step DDRM's network predicts ``x_0``, the clean image, from the noisy state; the sampler
hands that prediction to its ``callback``. Early guesses are blurry averages; later ones settle
on one image. :func:`collect_frames` keeps them, :func:`show_progress` draws a strip of them and
:func:`animate_progress` makes an animation that plays offline (in Colab and Jupyter alike: the
frames are embedded in the page).

>>> record, frames = collect_frames()
>>> result = restore_photo("celeba_hq", "small_face.png", "sr_bicubic4", callback=record)
>>> show_progress(frames)
>>> animate_progress(frames)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .display import in_notebook, show_grid


@dataclass(frozen=True)
class Frame:
    """One step's prediction of the clean image, ``[C, H, W]`` on the CPU, clipped to [-1, 1]."""

    step: int  # 0-based network evaluation
    t: int  # its diffusion timestep (999 is pure noise, 0 the clean end)
    x0: torch.Tensor


def collect_frames(row: int = 0) -> tuple[Callable[[dict], None], list[Frame]]:
    """A sampler callback and the list it fills with one :class:`Frame` per step.

    ``row`` chooses whose guesses are kept: in a run of N images with K samples each, row
    ``n * K + k`` is sample k of image n (0: the first sample of the first image). The callback
    takes the dict of :func:`~ddrm_helpers.sampler.ddrm_sample` (with ``batch_start`` when a run
    splits its rows into batches, as :func:`~ddrm_helpers.engine.sample_measurements` adds).
    """
    frames: list[Frame] = []

    def record(info: dict) -> None:
        index = row - info.get("batch_start", 0)
        if 0 <= index < info["x0"].shape[0]:
            frames.append(Frame(int(info["i"]), int(info["t"]), info["x0"][index].detach().clamp(-1, 1).cpu()))

    return record, frames


def show_progress(frames: Sequence[Frame], count: int = 8, *, show: bool = True):
    """A strip of ``count`` frames, evenly spaced from the first step to the last (all if fewer).

    In a notebook the strip is displayed; otherwise the figure is returned. With no frames (the
    run was skipped) it says so and draws nothing.
    """
    if not frames:
        print("No frames to show: the restoration did not run (see above).", flush=True)
        return None
    if count < 1:
        raise ValueError(f"count is how many frames to show, 1 or more; got {count}")
    last = len(frames) - 1
    picked = sorted({j * last // (count - 1) for j in range(count)}) if count > 1 else [last]
    columns = {f"step {frames[j].step + 1} (t={frames[j].t})": frames[j].x0 for j in picked}
    return show_grid(columns, title="The model's guess of the clean image, step by step", cell_inches=1.8,
                     show=show)


def animate_progress(frames: Sequence[Frame], interval_ms: int = 200, *, show: bool = True):
    """Every frame as an animation with play controls (matplotlib's ``to_jshtml``: HTML and
    JavaScript with the frames embedded, so it plays offline). In a notebook it is displayed;
    otherwise its HTML is returned. With no frames it says so and returns None."""
    if not frames:
        print("No frames to animate: the restoration did not run (see above).", flush=True)
        return None
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    from .images import to_uint8

    fig, ax = plt.subplots(figsize=(3.2, 3.4))
    ax.set_xticks([])
    ax.set_yticks([])
    shown = ax.imshow(to_uint8(frames[0].x0), interpolation="nearest")

    def draw(j: int):
        shown.set_data(to_uint8(frames[j].x0))
        ax.set_title(f"step {frames[j].step + 1} of {len(frames)} (t={frames[j].t})", fontsize=9)
        return (shown,)

    animation = FuncAnimation(fig, draw, frames=len(frames), interval=interval_ms, blit=False)
    html = animation.to_jshtml()
    plt.close(fig)
    if show and in_notebook():
        from IPython.display import HTML, display

        display(HTML(html))
        return None
    return html

