"""One restoration asked for in the app: its inputs read and checked, the engine run, the pictures
and the report made of the result.

:func:`read_request` turns what the page sends (the editor's files, the menus' values) into a
:class:`Request`, or raises a ``ValueError`` subclass with one line, before any network is loaded.
:func:`run_request` restores it with :func:`~ddrm_helpers.restore.restore_photo` (the photo is the
measurement) or :func:`~ddrm_helpers.runner.run_config` (the clean photo is degraded first), never
downloading, and returns an :class:`Outcome`. No Gradio here: :mod:`ddrm_helpers.app.layout` wires
these to the page, and tests call them as they are.

Files: the page's uploads arrive as paths in Gradio's upload folder. Only such paths are opened
(:func:`uploaded_file`: inside that folder, a plain file, no link), so a client that sends any
other path gets an error and nothing is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import validate
from ..config import load_config
from ..degradations import load_mask
from ..errors import ArgumentError, DegradationError, ImageError
from ..images import to_pil
from ..results import Skipped
from ..store import CheckpointsUnavailable
from .choices import CLEAN_MODE, MASK_TASK, MODES, class_from_choice, is_conditional

# The photo is restored at its own size, in tiles of the model's (restore_photo's and run_config's ``fit``).
FIT = "full"
MAX_PIXELS = 4096 * 4096  # the largest photo taken, by default (build_app(max_pixels=...))


@dataclass(frozen=True)
class Request:
    """A restoration as asked for, checked; ``kept`` is the inpainting mask (True = kept) or None."""

    mode: str
    config: str
    task: str
    photo: Path
    sigma_y: float | str | None
    steps: int | None
    samples: int
    seed: int
    classifier_scale: float | None
    label: int | None
    kept: np.ndarray | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What the page shows: the restoration, the samples with their mean and spread (several
    samples), the degraded view, and a report in Markdown."""

    restored: Image.Image
    gallery: list[tuple[Image.Image, str]]
    degraded: Image.Image
    report: str


def uploaded_file(path, upload_root, what: str) -> Path:
    """``path`` if it is a plain file inside ``upload_root`` (where the server keeps uploads);
    else :class:`ImageError`: nothing else on the server is ever opened."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ImageError(f"{what}: no file was uploaded")
    root = Path(upload_root).resolve()
    given = Path(path)
    resolved = given.resolve()
    if root not in resolved.parents or given.is_symlink() or not resolved.is_file():
        raise ImageError(f"{what}: only files uploaded to this app are read")
    return resolved


def read_request(*, mode, config, task, sigma_y, steps, samples, seed, classifier_scale=None, class_choice=None,
                 photo=None, mask_file=None, upload_root, max_pixels: int = MAX_PIXELS) -> Request:
    """Check the page's values and files; a bad one raises a ``ValueError`` subclass with one line.

    ``photo``: the editor's value, ``{"background": path, "layers": [paths], ...}``; its painted
    pixels are missing for inpainting. ``mask_file``: an uploaded mask (white = kept, black =
    missing) of the photo's size. ``max_pixels``: the largest photo taken (width x height).
    """
    if mode not in dict((value, label) for label, value in MODES):
        raise ArgumentError(f"mode is one of {', '.join(value for _, value in MODES)}; got {mode!r}")
    conditional = is_conditional(config)  # an unknown config name raises ConfigError here
    background = (photo or {}).get("background") if isinstance(photo, dict) else None
    if background is None:
        raise ImageError("No photo yet: upload one (or take one with the webcam, or paste one), or pick an example")
    path = uploaded_file(background, upload_root, "the photo")
    width, height = _image_size(path, "the photo")
    if width * height > max_pixels:
        raise ImageError(f"The photo is {width}x{height} ({width * height / 1e6:.1f} megapixels); this app takes up to "
                         f"{max_pixels / 1e6:.1f} megapixels on its device: use a smaller photo")
    painted = _painted(photo.get("layers") or [], (height, width), upload_root)
    notes = []
    kept = None
    if task == MASK_TASK:
        kept = ~painted if painted is not None else None
        if mask_file is not None:
            mask_path = uploaded_file(mask_file, upload_root, "the mask")
            given = load_mask(mask_path, (1, height, width), f"the mask for the {width}x{height} photo")[0].numpy()
            kept = given if kept is None else given & kept
        if kept is None:
            raise DegradationError("Inpainting needs a mask: paint the missing pixels on the photo with the brush, "
                                   "or upload a mask (white = kept, black = missing)")
        if kept.all():
            raise DegradationError("The mask keeps every pixel: paint the missing ones with the brush")
        if not kept.any():
            raise DegradationError("The mask keeps no pixel at all: leave some of the photo unpainted")
    elif painted is not None or mask_file is not None:
        notes.append(f"The brush strokes and the mask were not used: only {MASK_TASK} (inpainting) takes a mask.")
    return Request(
        mode=mode, config=config, task=task, photo=path, sigma_y=_sigma_y(sigma_y, mode),
        steps=_whole(steps, "steps", None), samples=_whole(samples, "samples", 1), seed=_whole(seed, "seed", 0),
        classifier_scale=float(classifier_scale) if conditional and classifier_scale is not None else None,
        label=class_from_choice(class_choice) if conditional else None, kept=kept, notes=tuple(notes),
    )


def run_request(request: Request, *, store=None, device=None, on_step=None) -> Outcome:
    """Restore ``request`` (never downloading) and make the :class:`Outcome`.

    ``on_step(done, total)`` is called before the networks load (``done`` 0) and after every
    sampler step; an exception it raises stops the restoration there. A config whose checkpoints
    are missing raises :class:`~ddrm_helpers.store.CheckpointsUnavailable` with one line.
    """
    from ..restore import restore_photo
    from ..runner import run_config

    config = load_config(request.config)
    steps = request.steps or int(config.ddrm.steps)
    done = [0]

    def step(info: dict) -> None:  # the engine says how many batches of rows (each ``steps`` long) there are
        done[0] += 1
        if on_step is not None:
            on_step(done[0], info["batches"] * steps)

    common = dict(steps=request.steps, seed=request.seed, num_samples=request.samples,
                  classes=request.label, classifier_scale=request.classifier_scale,
                  store=store, device=device, save=False, download=False,
                  progress=False, callback=step)
    if on_step is not None:
        on_step(0, steps)
    if request.mode == CLEAN_MODE:
        params = None if request.kept is None else {"mask": request.kept}
        result = run_config(request.config, images=[request.photo], task=request.task, sigma_y=request.sigma_y,
                            degradation_params=params, fit=FIT, **common)
    else:
        result = restore_photo(request.config, request.photo, request.task, sigma_y=request.sigma_y,
                               mask=request.kept, fit=FIT, **common)
    if isinstance(result, Skipped):
        raise CheckpointsUnavailable(f"{result.display} cannot run: {result.reason}. Download it in the "
                                     "Checkpoints panel below, or pick another config.", [])
    return outcome_of(result, request)


def outcome_of(result, request: Request) -> Outcome:
    """The pictures and the report of a :class:`~ddrm_helpers.results.RunResult` of one photo."""
    from ..results import spread_picture

    gallery = []
    if result.num_samples > 1:
        gallery = [(to_pil(result.samples[0, k]), f"sample {k + 1}") for k in range(result.num_samples)]
        gallery.append((to_pil(result.mean[0]), f"mean of {result.num_samples}"))
        top = float(result.spread[0].max())
        gallery.append((to_pil(spread_picture(result.spread[0])), f"spread (white = {top:.3f})"))
    return Outcome(to_pil(result.restored[0]), gallery, to_pil(result.degraded[0]), report(result, request))


def report(result, request: Request) -> str:
    """The run in Markdown: what ran, the scores against the clean photo, the class, the notes."""
    estimated = " (estimated from the photo)" if result.sigma_y_estimated else ""
    samples = f", {result.num_samples} samples" if result.num_samples > 1 else ""
    height, width = result.restored.shape[-2:]
    lines = [f"**{result.display}**: {result.task}, sigma_y {result.sigma_y:.3g}{estimated}, {result.steps} steps"
             f"{samples}; {width}x{height}, in {result.seconds:.1f} s on {result.device}."]
    if result.metrics:
        m = result.metrics[0]
        lines += ["", "| against the clean photo | PSNR (dB) | SSIM |", "|---|---|---|",
                  f"| degraded | {m['psnr_degraded']:.2f} | {m['ssim_degraded']:.3f} |",
                  f"| restored | {m['psnr_restored']:.2f} | {m['ssim_restored']:.3f} |"]
        if "psnr_mean" in m:
            lines.append(f"| mean of the samples | {m['psnr_mean']:.2f} | {m['ssim_mean']:.3f} |")
    if result.classes is not None:
        from ..classes import class_name

        chosen = result.classes[0]
        how = "chosen" if request.label is not None else "the classifier's guess; choose another in ImageNet class"
        lines += ["", f"ImageNet class: {class_name(chosen)} ({chosen}), {how}."]
    notes = [*result.notes, *request.notes]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def painted_pixels(photo, upload_root) -> tuple[int | None, int | None, int]:
    """The editor's photo's width and height (None without a photo) and how many pixels are painted."""
    background = (photo or {}).get("background") if isinstance(photo, dict) else None
    if background is None:
        return None, None, 0
    width, height = _image_size(uploaded_file(background, upload_root, "the photo"), "the photo")
    painted = _painted(photo.get("layers") or [], (height, width), upload_root)
    return width, height, 0 if painted is None else int(painted.sum())


def _image_size(path: Path, what: str) -> tuple[int, int]:
    """Width and height from the file's header (nothing is decoded)."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError) as err:
        raise ImageError(f"{what} is not an image that can be read ({type(err).__name__}); give a PNG, JPEG, WebP, "
                         "TIFF, BMP or GIF file") from err


def _painted(layers, size: tuple[int, int], upload_root) -> np.ndarray | None:
    """Where the brush painted on any layer (alpha above 0), ``[H, W]`` bool, or None if nowhere."""
    painted = None
    for layer in layers:
        path = uploaded_file(layer, upload_root, "a layer of the photo")
        with Image.open(path) as image:
            if image.size[::-1] != size:
                raise DegradationError(f"A painted layer is {image.size[0]}x{image.size[1]}, the photo "
                                       f"{size[1]}x{size[0]}: paint on the photo as it is shown")
            alpha = np.asarray(image.convert("RGBA").getchannel("A")) > 0
        painted = alpha if painted is None else painted | alpha
    return painted if painted is not None and painted.any() else None


def _sigma_y(value, mode: str) -> float | str | None:
    """A number in [0, 1], "estimate" (a degraded photo only), or None/empty for the config's."""
    text = str(value).strip().lower() if value is not None else ""
    if text == "":
        return None
    if text == "estimate":
        if mode == CLEAN_MODE:
            raise ArgumentError("sigma_y 'estimate' measures a degraded photo's noise; for a clean photo give the "
                                "noise to add, a number in [0, 1]")
        return "estimate"
    try:
        number = float(text)
    except ValueError:
        raise ArgumentError(f"sigma_y is a noise level in [0, 1] pixel units (0.05 is 5%), or 'estimate'; "
                            f"got {value!r}") from None
    return validate.check_sigma_y(number)


def _whole(value, label: str, default: int | None) -> int | None:
    """A whole number from a slider or a number box (which may send 3.0); empty: ``default``."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{label} is a whole number; got {value!r}") from None
    if not number.is_integer():
        raise ArgumentError(f"{label} is a whole number; got {value!r}")
    return int(number)
