"""The degradations by name: ``make_degradation("sr4", (height, width))`` and the list of names.

Each name builds one of the operators of :mod:`ddrm_helpers.operators` (exact, with its SVD; how
vectors are ordered is said there), from the 1-D factors of :mod:`ddrm_helpers.factors`; masks come
from :mod:`ddrm_helpers.masks`. This module also re-exports them, so that one import serves.

Names (see :func:`available_degradations` and ``docs/ddrm.md``): ``deno``, ``sr2`` ... ``sr16``,
``sr_bicubic4`` ... ``sr_bicubic16``, ``deblur_uni``, ``deblur_gauss``, ``deblur_aniso``,
``deblur``, ``inp``, ``inp_box``, ``inp_mask``, ``color``, ``cs2``, ``cs4``.

>>> op = make_degradation("sr4", 64)
>>> x = torch.rand(2, 3, 64, 64) * 2 - 1
>>> y = op.H(x)                                # [2, 3*16*16]: the 4x4 block means
>>> torch.allclose(y, torch.nn.functional.avg_pool2d(x, 4).reshape(2, -1), atol=1e-6)
True
>>> op.degraded_image(y).shape                 # what a person looks at
torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Sequence

import torch

from .errors import DegradationError
from .factors import (
    BUILD,
    bicubic_matrix,
    correlation_matrix,
    cpu_generator,
    gaussian_kernel,
    image_size_pair,
    kernel_1d,
    positive_int,
    positive_number,
)
from .masks import box_mask, load_mask, text_mask
from .operators import (
    BlockAverage,
    Colorization,
    Degradation,
    Denoising,
    Inpainting,
    Separable,
    WalshHadamardCS,
)

__all__ = [
    "BlockAverage",
    "Colorization",
    "Degradation",
    "Denoising",
    "Inpainting",
    "Separable",
    "WalshHadamardCS",
    "available_degradations",
    "box_mask",
    "load_mask",
    "make_degradation",
    "scale_factor",
    "text_mask",
]


def _deno(shape):
    return Denoising(shape)


def _sr(shape, factor):
    return BlockAverage(shape, factor)


def _sr_bicubic(shape, factor):
    c, h, w = shape
    return Separable(c, bicubic_matrix(h, factor), bicubic_matrix(w, factor), f"sr_bicubic{factor}")


def _blur(shape, kernel_h, kernel_w, name):
    c, h, w = shape
    return Separable(c, correlation_matrix(kernel_h, h), correlation_matrix(kernel_w, w), name)


def _deblur_uni(shape, taps=9):
    kernel = torch.full((positive_int(taps, "deblur_uni: taps"),), 1.0 / taps, **BUILD)
    return _blur(shape, kernel, kernel, "deblur_uni")


def _deblur_gauss(shape, sigma=10.0, taps=5):
    taps = positive_int(taps, "deblur_gauss: taps")
    kernel = gaussian_kernel(positive_number(sigma, "deblur_gauss: sigma"), taps)
    return _blur(shape, kernel, kernel, "deblur_gauss")


def _deblur_aniso(shape, sigma_h=1.0, sigma_w=20.0, taps=9):
    taps = positive_int(taps, "deblur_aniso: taps")
    kernel_h = gaussian_kernel(positive_number(sigma_h, "deblur_aniso: sigma_h"), taps)
    kernel_w = gaussian_kernel(positive_number(sigma_w, "deblur_aniso: sigma_w"), taps)
    return _blur(shape, kernel_h, kernel_w, "deblur_aniso")


def _deblur(shape, kernel=None, kernel_h=None, kernel_w=None):
    one_for_both = kernel is not None and kernel_h is None and kernel_w is None
    one_per_axis = kernel is None and kernel_h is not None and kernel_w is not None
    if not (one_for_both or one_per_axis):
        raise DegradationError(
            "deblur needs either kernel=[...] (the same 1-D kernel on both axes) or both kernel_h=[...] "
            "(along the height) and kernel_w=[...] (along the width)"
        )
    kernel_h = kernel_1d(kernel if kernel is not None else kernel_h, "kernel_h")
    kernel_w = kernel_1d(kernel if kernel is not None else kernel_w, "kernel_w")
    return _blur(shape, kernel_h, kernel_w, "deblur")


def _inp(shape, missing=0.5, seed=0):
    c, h, w = shape
    if not 0 <= missing < 1:
        raise DegradationError(
            f"inp: missing={missing!r} is the fraction of pixels removed; give 0 <= missing < 1"
        )
    removed = torch.randperm(h * w, generator=cpu_generator(seed))[: round(missing * h * w)]
    mask = torch.ones(h * w, dtype=torch.bool)
    mask[removed] = False
    return Inpainting(mask.reshape(1, h, w).expand(c, h, w).clone(), "inp")


def _inp_box(shape, box=None):
    c, h, w = shape
    box_h, box_w = (h // 2, w // 2) if box is None else image_size_pair(box, "inp_box: box")
    if box_h > h or box_w > w or (box_h, box_w) == (h, w):
        raise DegradationError(
            f"inp_box: a box of {box_h}x{box_w} does not fit in, or leaves no pixel of, a {h}x{w} image"
        )
    top, left = (h - box_h) // 2, (w - box_w) // 2
    mask = torch.ones(c, h, w, dtype=torch.bool)
    mask[:, top : top + box_h, left : left + box_w] = False
    return Inpainting(mask, "inp_box")


def _inp_mask(shape, mask):
    return Inpainting(load_mask(mask, shape, "inp_mask"), "inp_mask")


def _color(shape):
    if shape[0] < 2:
        raise DegradationError("color: colorization needs at least 2 channels; these images have 1")
    return Colorization(shape)


def _cs(shape, factor, seed=0):
    c, h, w = shape
    n = h * w
    if n & (n - 1):
        raise DegradationError(
            f"cs{factor}: the Walsh-Hadamard transform needs height*width to be a power of two; "
            f"{h}x{w} = {n} is not. Use sizes such as 64, 128, 256 or 512."
        )
    if factor > n:
        raise DegradationError(f"cs{factor}: cannot keep 1/{factor} of {n} coefficients per channel")
    return WalshHadamardCS(shape, factor, torch.randperm(n, generator=cpu_generator(seed)), f"cs{factor}")


# The listed names, in the order a person reads them, with what each is.
_LISTED = {
    "deno": "denoising: H = I",
    "sr2": "super-resolution by averaging 2x2 blocks",
    "sr4": "super-resolution by averaging 4x4 blocks",
    "sr8": "super-resolution by averaging 8x8 blocks",
    "sr16": "super-resolution by averaging 16x16 blocks",
    "sr_bicubic4": "super-resolution by bicubic down-sampling (a=-0.5) by 4, symmetric padding",
    "sr_bicubic8": "super-resolution by bicubic down-sampling (a=-0.5) by 8, symmetric padding",
    "sr_bicubic16": "super-resolution by bicubic down-sampling (a=-0.5) by 16, symmetric padding",
    "deblur_uni": "uniform blur, 9 taps per axis (taps=9), zero padding",
    "deblur_gauss": "Gaussian blur, sigma=10, 5 taps per axis (sigma, taps), zero padding",
    "deblur_aniso": "anisotropic Gaussian blur, sigma_h=1 (height), sigma_w=20 (width), 9 taps, zero padding",
    "deblur": "your separable blur: kernel=[...], or kernel_h=[...] and kernel_w=[...]; zero padding",
    "inp": "inpainting of a random half of the pixels (missing=0.5, seed=0)",
    "inp_box": "inpainting of a centred box (box=(h, w), default half the height and half the width)",
    "inp_mask": "inpainting under your mask=... (path, PIL image, array; white / nonzero = kept)",
    "color": "colorization: the mean over channels",
    "cs2": "compressive sensing: 1/2 of the Walsh-Hadamard coefficients per channel (seed=0)",
    "cs4": "compressive sensing: 1/4 of the Walsh-Hadamard coefficients per channel (seed=0)",
}
_BUILDERS = {
    "deno": _deno,
    "deblur_uni": _deblur_uni,
    "deblur_gauss": _deblur_gauss,
    "deblur_aniso": _deblur_aniso,
    "deblur": _deblur,
    "inp": _inp,
    "inp_box": _inp_box,
    "inp_mask": _inp_mask,
    "color": _color,
}
# sr<f>, sr_bicubic<f> and cs<f> take their factor from the name, any integer f >= 2.
_FAMILIES = {"sr": _sr, "sr_bicubic": _sr_bicubic, "cs": _cs}
_FAMILY_NAME = re.compile(r"(sr_bicubic|sr|cs)(\d+)")


def scale_factor(name: str) -> int:
    """How many times larger the image is than its measurement, per side: ``f`` for ``sr<f>`` and
    ``sr_bicubic<f>``, 1 for every other degradation (the measurement is a picture of the image's size).

    >>> scale_factor("sr4"), scale_factor("sr_bicubic8"), scale_factor("deblur_gauss")
    (4, 8, 1)
    """
    match = _FAMILY_NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(2)) if match and match.group(1) != "cs" and int(match.group(2)) >= 2 else 1


def available_degradations() -> dict[str, str]:
    """The listed degradation names and what each is. ``sr<f>``, ``sr_bicubic<f>`` and ``cs<f>``
    also take factors not listed here (``sr3``, ``cs8``, ...)."""
    return dict(_LISTED)


def make_degradation(
    name: str,
    image_size: int | Sequence[int],
    channels: int = 3,
    device: torch.device | str | None = None,
    *,
    dtype: torch.dtype | None = None,
    **params,
) -> Degradation:
    """The degradation ``name`` for images of ``channels x image_size``, with its exact SVD.

    ``image_size`` is an int (square) or ``(height, width)``. ``device`` defaults to the CPU and
    ``dtype`` to float32; the operator is built in float64 on the CPU, then moved. ``params`` are
    the degradation's own (see :func:`available_degradations`; unknown ones are refused).

    >>> make_degradation("deblur_gauss", 32, sigma=3.0, taps=7).measurement_dim
    3072
    >>> make_degradation("sr3", 30, channels=1).degraded_image(torch.zeros(1, 100)).shape
    torch.Size([1, 1, 10, 10])
    """
    height, width = image_size_pair(image_size)
    shape = (positive_int(channels, "channels"), height, width)
    build, given = _lookup(name, shape)
    accepted = [p for p in inspect.signature(build).parameters if p not in ("shape", "factor")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise DegradationError(
            f"{name} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(accepted) if accepted else 'no parameters'}"
        )
    required = [p for p, v in inspect.signature(build).parameters.items()
                if v.default is inspect.Parameter.empty and p not in ("shape", "factor") and p not in params]
    if required:
        raise DegradationError(f"{name} needs {', '.join(f'{p}=...' for p in required)}")
    operator = build(shape, **given, **params)
    return operator.to(device=device or "cpu", dtype=dtype or torch.float32)


def _lookup(name: str, shape):
    if name in _BUILDERS:
        return _BUILDERS[name], {}
    match = _FAMILY_NAME.fullmatch(name)
    if match:
        family, factor = match.group(1), int(match.group(2))
        if factor < 2:
            raise DegradationError(f"{name}: the factor must be at least 2")
        if family != "cs" and (shape[1] % factor or shape[2] % factor):
            # The image size is the model's, so the fix is another factor, not another size.
            height, width = shape[1], shape[2]
            factors = [f for f in range(2, min(height, width) // 2 + 1) if not height % f and not width % f]
            raise DegradationError(
                f"{name}: the factor {factor} does not divide the image size {height}x{width}; "
                + (f"factors that do: {', '.join(f'{family}{f}' for f in factors)}" if factors else
                   f"no factor of 2 or more divides both {height} and {width}")
            )
        return _FAMILIES[family], {"factor": factor}
    known = list(available_degradations())
    hint = difflib.get_close_matches(name, known, n=1)
    raise DegradationError(
        f"Unknown degradation '{name}'.{f' Did you mean {hint[0]!r}?' if hint else ''} "
        f"Known: {', '.join(known)} (sr<f>, sr_bicubic<f> and cs<f> take any integer factor)."
    )
