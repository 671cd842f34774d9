"""An inpainting mask or a blur kernel named on the command line, read and checked before anything runs.

    python -m ddrm_helpers run --config imagenet_256 --task inp_mask --mask m.png --images photo.jpg
    python -m ddrm_helpers run --config celeba_hq --task deblur --kernel psf.png
    python -m ddrm_helpers restore --config celeba_hq --task deblur --photo blurred.png --kernel 0.25 0.5 0.25

A mask is an image (white, grey level >= 128, is kept; black is missing) or an array in a ``.npy``
or text file (nonzero is kept). ``run`` cuts it to its centred square and resizes it to the model's
size (nearest neighbour, so that it stays black and white), as the images are; ``restore`` wants it
at the photo's size and cuts it with the photo.

A kernel is numbers (``--kernel 0.25 0.5 0.25``: one 1-D kernel for both axes), or a file: an array
in a ``.npy`` or text file (used as it is) or a small image (grey levels, normalised to sum 1,
since an image holds no scale). A 1-D kernel blurs both axes; a 2-D one must be separable (the
blurs here are: one 1-D kernel along the height, one along the width), and is split into the two
(``kernel_h``, ``kernel_w``) by its SVD; one that is not separable is refused, saying so.
``--kernel-h`` and ``--kernel-w`` give the two 1-D kernels apart.

Every problem is an :class:`~ddrm_helpers.errors.ArgumentError` naming the flag, raised by
:func:`degradation_arguments` before any download or model load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ArgumentError

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".dat")
# A 2-D kernel is separable when its second singular value is this small against the first: float
# rounding for an array; for an image, its 8-bit grey levels round a separable kernel by up to half a
# level, which leaves up to 0.3% (Gaussians of sigma 1 to 3 over 5 to 15 taps, saved as PNGs); a disk
# (defocus) gives 25%, a diagonal streak 100%.
SEPARABLE = {"array": 1e-6, "image": 0.01}


def read_array(path, flag: str) -> tuple[np.ndarray, str]:
    """The numbers in the file ``path`` as a float array, and what it was (``"array"`` or ``"image"``).

    ``.npy`` (no pickled objects) and text files (``.txt``, ``.csv``, ``.tsv``, ``.dat``: numbers
    separated by spaces or commas, one row per line) are arrays; anything else is read as an image
    in grey levels 0 to 255."""
    file = Path(path)
    if not file.is_file():
        what = "a folder" if file.is_dir() else "not a regular file" if file.exists() else "no such file"
        raise ArgumentError(f"{flag} {path}: {what}; give an image, a .npy file or a text file of numbers")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            return np.asarray(np.load(file, allow_pickle=False), dtype=float), "array"
        if suffix in TEXT_SUFFIXES:
            text = file.read_text(encoding="utf-8").replace(",", " ")
            return np.loadtxt(text.splitlines(), dtype=float, ndmin=1), "array"
        from PIL import Image

        with Image.open(file) as image:
            return np.asarray(image.convert("L"), dtype=float), "image"
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ArgumentError(f"{flag} {path}: cannot be read as {'an array' if suffix else 'an image'} "
                            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def read_mask(path, flag: str = "--mask", size: int | None = None) -> np.ndarray:
    """The mask in the file ``path`` as a bool array ``[H, W]`` (True = kept); with ``size``, its centred
    square resized to ``size x size`` (nearest neighbour)."""
    values, kind = read_array(path, flag)
    if values.ndim != 2:
        raise ArgumentError(f"{flag} {path}: a mask is a 2-D picture or array; this one has shape {list(values.shape)}")
    kept = values >= 128 if kind == "image" else values != 0
    if size is not None and kept.shape != (size, size):
        from PIL import Image

        height, width = kept.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = Image.fromarray(kept[top:top + side, left:left + side].astype(np.uint8) * 255)
        kept = np.asarray(square.resize((size, size), Image.NEAREST)) >= 128
    if not kept.any():
        raise ArgumentError(f"{flag} {path}: the mask keeps no pixel (everything is black / 0); white (nonzero) "
                            "marks the pixels that are kept")
    return kept


def read_kernel(values: list[str], flag: str) -> np.ndarray:
    """``--kernel``'s words: numbers (a 1-D kernel) or the name of one file (module docstring).
    Returns a 1-D or a 2-D float array; an image is normalised to sum 1."""
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        pass
    if len(values) != 1:
        raise ArgumentError(f"{flag} {' '.join(values)}: give numbers (a 1-D kernel) or one file (an image, a .npy "
                            "or a text file)")
    kernel, kind = read_array(values[0], flag)
    if kind == "image":
        total = kernel.sum()
        if total <= 0:
            raise ArgumentError(f"{flag} {values[0]}: the kernel image is black; white marks where the blur spreads")
        kernel = kernel / total
    if kernel.ndim == 2 and 1 in kernel.shape:
        kernel = kernel.reshape(-1)
    if kernel.ndim not in (1, 2) or kernel.size == 0 or not np.isfinite(kernel).all():
        raise ArgumentError(f"{flag} {values[0]}: a kernel is a 1-D or 2-D array of finite numbers; got shape "
                            f"{list(kernel.shape)}")
    if kernel.ndim == 2:
        kernel = _checked_separable(kernel, flag, values[0], SEPARABLE[kind])
    return kernel


def _checked_separable(kernel: np.ndarray, flag: str, name: str, tolerance: float) -> np.ndarray:
    """``kernel`` (2-D) if it is the outer product of two 1-D kernels, within ``tolerance`` (relative)."""
    singular = np.linalg.svd(kernel, compute_uv=False)
    if singular[0] == 0 or (len(singular) > 1 and singular[1] > tolerance * singular[0]):
        ratio = singular[1] / singular[0] if singular[0] else float("inf")
        raise ArgumentError(
            f"{flag} {name}: this {kernel.shape[0]}x{kernel.shape[1]} kernel is not separable (its second singular "
            f"value is {ratio:.1%} of the first, at most {tolerance:.1%} allowed); the blurs here are one 1-D "
            "kernel along the height and one along the width: give --kernel-h and --kernel-w")
    return kernel


def split_kernel(kernel: np.ndarray) -> dict[str, list[float]]:
    """``make_degradation("deblur", ...)``'s parameters for a 1-D kernel (both axes) or a separable
    2-D one: its best rank-1 factors ``kernel_h`` (the height, rows) and ``kernel_w`` (the width)."""
    if kernel.ndim == 1:
        return {"kernel": kernel.tolist()}
    u, s, vt = np.linalg.svd(kernel)
    column, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])
    if column.sum() < 0:  # the factors' signs are arbitrary: make both blurs sum to a positive number
        column, row = -column, -row
    return {"kernel_h": column.tolist(), "kernel_w": row.tolist()}


def degradation_arguments(task: str | None, *, mask=None, kernel=None, kernel_h=None, kernel_w=None,
                          mask_size: int | None = None) -> tuple[dict, np.ndarray | None]:
    """The command line's ``--mask`` / ``--kernel*`` for ``task``: ``make_degradation``'s parameters
    (the kernels) and the mask (a bool array, resized to ``mask_size`` when given), or an
    ``ArgumentError`` saying which flag the task needs or does not take."""
    kernels = {"--kernel": kernel, "--kernel-h": kernel_h, "--kernel-w": kernel_w}
    given = [flag for flag, value in kernels.items() if value]
    if task == "inp_mask" and mask is None:
        raise ArgumentError("--task inp_mask needs --mask FILE: an image of what is kept (white) and missing "
                            "(black), or a .npy / text array (nonzero = kept)")
    if mask is not None and task != "inp_mask":
        raise ArgumentError(f"--mask is for --task inp_mask; --task {task or '(the config default)'} takes no mask")
    if given and task != "deblur":
        raise ArgumentError(f"{given[0]} is for --task deblur (your own blur); --task {task or '(the config default)'} "
                            "takes no kernel")
    if task == "deblur" and (not given or (kernel and (kernel_h or kernel_w)) or (not kernel and not (
            kernel_h and kernel_w))):
        raise ArgumentError("--task deblur needs --kernel (numbers or a file: the same blur on both axes, or a "
                            "separable 2-D kernel), or both --kernel-h and --kernel-w, not both kinds")
    params = {}
    if kernel:
        params = split_kernel(read_kernel(kernel, "--kernel"))
    elif kernel_h:
        for flag, key, words in (("--kernel-h", "kernel_h", kernel_h), ("--kernel-w", "kernel_w", kernel_w)):
            one = read_kernel(words, flag)
            if one.ndim != 1:
                raise ArgumentError(f"{flag} {' '.join(words)}: give a 1-D kernel here (one row or column)")
            params[key] = one.tolist()
    kept = read_mask(mask, "--mask", mask_size) if mask is not None else None
    return params, kept
