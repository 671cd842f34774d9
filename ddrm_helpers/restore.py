"""Restore a real photo: the user's degraded photo is the measurement ``y``, and DDRM restores it.

Everywhere else a clean image is degraded and restored again. Here the photo already is the
degraded image: a small photo is the measurement of super-resolution, a grey one that of
colorization, a blurred one that of a known blur, a photo with holes (and a mask saying where) that
of inpainting, a noisy one that of denoising. DDRM restores it whenever the degradation is known
exactly.

>>> result = restore_photo("celeba_hq", "small_face.png", "sr_bicubic4", num_samples=4)  # 64x64 -> 256x256
>>> result = restore_photo("imagenet_256", "old.jpg", "color", sigma_y="estimate")
>>> result = restore_photo("imagenet_256", "scratched.png", "inp_mask", mask="scratches.png")
>>> show_results(result)

From photo to ``y``, with ``fit="full"`` (the default): the photo is restored at its own size, a
``w x h`` photo giving ``f*w x f*h`` for super-resolution by ``f`` and ``w x h`` otherwise; the
operator is built at that size and the network sees it in tiles of its own size
(:mod:`ddrm_helpers.tiles`). A photo too small for one tile is padded by mirroring, restored and cut
back (:mod:`ddrm_helpers.canvas`); nothing is resized. With ``fit="crop"`` or ``"pad"`` the photo is
made square (its centred square, or padded by mirroring its edges) and resized to the size the
operator measures at the model's size (``image_size / f`` for super-resolution, ``image_size``
otherwise). Each step is said in a printed line and kept in ``result.notes``. Then ``y`` is what
the photo shows (``degradation.measurement_of``): the low-resolution, blurred or noisy picture
itself, the one grey channel for colorization, the kept pixels for inpainting; so
``degraded_image(y)`` is the photo again.

Seeds: a run draws the measurement noise first and then the sampler's, from one generator (see
:mod:`ddrm_helpers.engine`). A photo holds its own noise, so that draw is made and dropped: the
same seed then gives exactly the same restoration as :func:`run_config` does when its simulated
measurement is handed in as the photo (``tests/test_restore.py`` checks it for every task).

Photos as tensors are taken as this package's images are, in [-1, 1], exactly as they are (no
rounding to 8 bits, no clipping), so that ``run_config(...).degraded[0]`` can be handed in as it
is. Files, PIL images and NumPy arrays are read as everywhere (8-bit, or floats in [0, 1]; see
:mod:`ddrm_helpers.images`).
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
from PIL import Image

from . import budget, engine
from .canvas import Canvas, plan_canvas
from .config import load_config
from .degradations import Colorization, Degradation, Inpainting, load_mask, make_degradation, scale_factor
from .engine import Inputs, Skipped, resolve_settings
from .errors import DegradationError, ImageError, SamplingError
from .images import load_image, resize, square, to_pil
from .noise import estimate_noise
from .results import RunResult, image_names, report
from .sampler import sigma_0_from_sigma_y
from .store import CheckpointStore

FITS = ("full", "crop", "pad")


def restore_photo(
    config_name: str,
    photo,
    task: str,
    sigma_y: float | str | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    num_samples: int = 1,
    mask=None,
    fit: str = "full",
    tile_overlap: int | None = None,
    reference=None,
    classes=None,
    eta: float | None = None,
    eta_b: float | None = None,
    classifier_scale: float | None = None,
    degradation_params: dict | None = None,
    batch_size: int | None = None,
    store=None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    save: bool = True,
    download: bool | None = None,
    progress: bool = True,
    callback=None,
    registry=None,
) -> RunResult | Skipped:
    """Restore ``photo``, degraded by ``task``, with config ``config_name``; see the module docstring.

    ``photo``: a path, PIL image, array, or a tensor in [-1, 1]. ``task``: the degradation the
    photo went through (``sr4``, ``sr_bicubic4``, ``color``, ``inp_mask``, ``deblur_gauss``,
    ``deblur`` with ``degradation_params={"kernel": [...]}``, ``deno``, ...). ``sigma_y``: the
    photo's noise in [0, 1] pixel units, ``"estimate"`` to measure it from the photo
    (:func:`~ddrm_helpers.noise.estimate_noise`), or None for the config's. ``mask`` (for
    ``inp_mask``): an image, array or tensor of the photo's size, white / nonzero = keep, black / 0
    = missing; it is taken at the photo's size. ``fit``: ``"full"`` (restore the photo at its own size,
    in tiles of the model's size), or ``"crop"`` (the centred square) / ``"pad"`` (mirror the edges
    out to a square), resized to the model's size. ``tile_overlap``: pixels shared by neighbouring
    tiles (default a quarter of a tile, :func:`~ddrm_helpers.tiles.default_overlap`). ``reference``:
    the undamaged image, if there is one, for PSNR/SSIM (at the result's size). ``num_samples``:
    restorations to draw; the result holds them all, their mean and their per-pixel spread. The
    other arguments are :func:`~ddrm_helpers.runner.run_config`'s.

    Returns a :class:`RunResult` with ``from_photo=True`` (``degraded`` is the photo as used,
    ``baseline`` its natural inverse, ``notes`` what was done to make it fit), or ``Skipped`` when
    a checkpoint is missing. Bad input raises a ``ValueError`` before any download.
    """
    config = load_config(config_name)
    estimate = isinstance(sigma_y, str)
    if estimate and sigma_y != "estimate":
        raise SamplingError(f"sigma_y is a noise level in [0, 1] pixel units, or 'estimate'; got {sigma_y!r}")
    settings = resolve_settings(config, task, 0.0 if estimate else sigma_y, steps, eta, eta_b, seed, num_samples,
                                classifier_scale=classifier_scale, batch_size=batch_size, device=device,
                                out_dir=out_dir, save=save, degradation_params=degradation_params,
                                callback=callback, tile_overlap=tile_overlap)
    size = int(config.data.image_size)
    name = image_names([photo])[0]

    def check(canvas):  # before the operator is built at the canvas's size, and before any download
        budget.check_canvas(config, settings, canvas, images=1, what=name)

    degradation, y, notes, canvas = _measure_photo(photo, settings.task, size, mask, fit, degradation_params, check)
    if estimate:
        kept = degradation.mask if isinstance(degradation, Inpainting) else None
        settings = dataclasses.replace(settings, sigma_y=estimate_noise(degradation.degraded_image(y)[0], kept))
        notes.append(f"sigma_y {settings.sigma_y:.3g} estimated from the photo (from its finest detail; "
                     "docs/real-photos.md says how, and when it reads too high).")
    original = None if reference is None else _reference(reference, size, canvas, notes)
    for note in notes:
        print(note, flush=True)
    inputs = Inputs(degradation=degradation, names=[name], sources=[photo], measurement=y,
                    original=original, classes=classes, notes=notes, sigma_y_estimated=estimate)
    restoration = engine.run(config, settings, inputs, store=CheckpointStore.of(store, cache_dir, registry),
                             download=download, progress=progress, callback=callback)
    if canvas is not None and not isinstance(restoration, Skipped):
        restoration = canvas.cut_restoration(restoration)
    return report(config, settings, inputs, restoration, out_dir=out_dir, save=save)


def _reference(reference, size: int, canvas: Canvas | None, notes: list[str]) -> torch.Tensor:
    """The reference image ``[1, 3, H, W]``: at the model's size (crop, pad), or at the result's size
    (full; a reference of another size is resized to it, and the user told)."""
    if canvas is None:
        return load_image(reference, size)[None]
    image = load_image(reference)
    height, width = canvas.size
    if tuple(image.shape[1:]) != (height, width):
        notes.append(f"The reference is {image.shape[2]}x{image.shape[1]}: resized to the result's {width}x{height} "
                     "to be compared with it.")
        image = resize(image, (height, width))
    return image[None]


def measurement_from_photo(degradation: Degradation, photo: torch.Tensor) -> torch.Tensor:
    """The measurement ``y`` ``[1, M]`` that ``photo`` shows: ``degradation.degraded_image(y)`` is
    ``photo`` again (for inpainting: where the mask keeps pixels; for colorization: a colour photo
    comes back grey, ``H(photo)``, the mean of its channels).

    ``photo``: ``[C, h, w]`` or ``[1, C, h, w]`` in [-1, 1], of the size the operator measures,
    ``degradation.measured_shape`` (a quarter of the image size for ``sr4``, the image size otherwise).
    """
    photo = photo if photo.dim() == 4 else photo[None]
    expected = tuple(degradation.measured_shape)
    if tuple(photo.shape) != (1, *expected):
        degradation.measurement_of(torch.zeros(1, *expected))  # a task no photo can be says so first
        raise DegradationError(
            f"{degradation.name} measures a picture of {'x'.join(map(str, expected))} (channels x height x width); "
            f"the photo is {'x'.join(map(str, photo.shape[1:]))}"
        )
    return degradation.measurement_of(photo)


def degraded_photo(image, task: str, image_size: int, *, sigma_y: float = 0.0, seed: int = 0,
                   **params) -> Image.Image:
    """What ``task`` makes of ``image``, as an 8-bit photo: a stand-in for a real degraded photo.

    ``image`` is loaded at ``image_size`` (centred square), degraded by ``make_degradation(task,
    image_size, **params)``, given noise of std ``sigma_y`` ([0, 1] pixel units, from a CPU
    generator seeded with ``seed``), and returned as the picture of the measurement, rounded to
    8 bits and clipped as a saved photo is (a quarter of the size for ``sr4``).

    >>> blurred = degraded_photo("exp/datasets/demo/rocket.jpg", "deblur_gauss", 256)
    """
    x = load_image(image, image_size)[None]
    degradation = make_degradation(task, image_size, **params)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, degradation.measurement_dim, generator=generator)
    y = degradation.H(x) + sigma_0_from_sigma_y(sigma_y) * noise
    return to_pil(degradation.degraded_image(y)[0])


def _measure_photo(photo, task: str, size: int, mask, fit: str, params: dict | None, check=None):
    """The operator, ``y``, the notes and (``fit="full"``) the canvas for ``photo`` (see the module docstring)."""
    if fit not in FITS:
        raise ImageError(f"fit={fit!r}: give 'full' (the photo at its own size), 'crop' (the centred square) or "
                         "'pad' (mirror the edges to a square)")
    params = dict(params or {})
    if "mask" in params:
        raise DegradationError("give the inpainting mask as restore_photo(..., mask=...): it is taken with the photo")
    if task == "inp_mask" and mask is None:
        raise DegradationError("inp_mask needs mask=...: an image or array of the photo's size, white (nonzero) "
                               "where the photo is to be kept, black (0) where it is missing")
    if task != "inp_mask":
        if mask is not None:
            raise DegradationError(f"mask= is for task='inp_mask'; {task} does not use a mask")
        probe = make_degradation(task, size, **params)  # an unknown task or parameter fails here, before the photo
        probe.measurement_of(torch.zeros(1, *probe.measured_shape))  # and a task no photo can be
    image, grey = _load_photo(photo)
    notes, canvas = [], None
    _, height, width = image.shape
    kept = None if mask is None else load_mask(mask, tuple(image.shape),
                                               f"inp_mask on a {width}x{height} photo (width x height)")
    if fit == "full":
        canvas = plan_canvas((height, width), scale_factor(task), size)
        if check is not None:
            check(canvas)
        image = canvas.pad_photo(image)
        kept = None if kept is None else canvas.pad_photo(kept)
        extra = {} if kept is None else {"mask": kept}
        degradation = make_degradation(task, canvas.padded, **extra, **params)
        if canvas.describe():
            notes.append(canvas.describe())
    elif task == "inp_mask":
        image, kept, fitted = _fit(image, size, fit, task, size, kept)
        degradation = make_degradation(task, size, mask=kept, **params)
        if fitted:
            fitted.append("The mask was cut and resized with the photo.")
        notes.extend(fitted)
    else:
        degradation = make_degradation(task, size, **params)
        image, _, fitted = _fit(image, degradation.measured_shape[1], fit, task, size)
        notes.extend(fitted)
    if isinstance(degradation, Colorization) and not grey:
        notes.append("The photo is in colour: made grey (the mean of its channels, what colorization measures) "
                     "to be coloured again.")
    elif grey and not isinstance(degradation, Colorization):
        notes.append("The photo is grey: used as three equal channels (R = G = B), so the model sees a grey "
                     "picture; task='color' colours a grey photo.")
    return degradation, measurement_from_photo(degradation, image), notes, canvas


def _load_photo(photo) -> tuple[torch.Tensor, bool]:
    """The photo as ``[3, h, w]`` in [-1, 1], and whether it is grey (its channels equal)."""
    image = load_image(photo)  # tensors exactly as they are; grey files as three equal channels
    return image, _is_grey(image)


def _is_grey(image: torch.Tensor) -> bool:
    return bool((image == image[:1]).all())


def _fit(image: torch.Tensor, side: int, fit: str, task: str, size: int, mask: torch.Tensor | None = None):
    """``image`` (and ``mask``) made square by ``fit``, then resized to ``side``; and the notes."""
    notes = []
    _, height, width = image.shape
    if height != width:
        image = square(image, fit)
        if mask is not None:
            mask = square(mask, fit)
        side_now = image.shape[-1]
        notes.append(
            f"The photo is {width}x{height} (width x height), not square: cut to its centred {side_now}x{side_now} "
            "square (fit='crop'; fit='pad' keeps all of it)." if fit == "crop" else
            f"The photo is {width}x{height} (width x height), not square: padded to {side_now}x{side_now} by "
            "mirroring its edges (fit='pad')."
        )
    if image.shape[-1] != side:
        resized = f"Resized from {image.shape[-1]}x{image.shape[-1]} to {side}x{side}"
        notes.append(f"{resized}: {task} makes the model's {size}x{size} out of {side}x{side}." if side != size
                     else f"{resized}, the model's size.")
        image = resize(image, side)
        if mask is not None:  # nearest, so that the mask stays white and black
            mask = F.interpolate(mask[None].float(), size=(side, side), mode="nearest-exact")[0] >= 0.5
    return image, mask, notes
