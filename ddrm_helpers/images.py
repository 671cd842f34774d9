"""Images in and out: any photo a user has, as a square tensor in [-1, 1]; tensors back to pictures.

>>> x = load_image("exp/datasets/demo/cat_chelsea.png", 256)   # (3, 256, 256), float32, [-1, 1]
>>> save_image(x, "out.png")

Accepted: a path, a PIL image, a NumPy array (H, W), (H, W, 3) or (H, W, 4) of 8-bit or 16-bit
integers or of floats in [0, 1] (the usual conventions of image files and arrays), or a tensor
(C, H, W) or (1, C, H, W) in [-1, 1] (this package's convention, as in every result it returns;
taken exactly, with no 8-bit rounding). Grey images become three equal channels; transparency is
laid over white; palette, CMYK and 16-bit files are converted; the EXIF orientation of camera
photos is applied.

Limits, so that no file or array can make us allocate without bound: a file is opened only if it
is a regular file (a named pipe would block the open, a device would never end), and its header's
size is checked against :data:`MAX_PIXELS` before a pixel is decoded; so is every image given in
memory before it is converted, and any size about to be allocated by a resize or a pad
(:func:`check_pixels`).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .safefs import CLOEXEC, what_is

ImageSource = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

# The most pixels an image may have, decoded or about to be allocated: 8192 x 8192, 67 megapixels
# (a 48-megapixel phone photo fits; as float32 RGB it is 0.8 GB). Above it we refuse in one line
# rather than let a header of a few bytes ask for gigabytes. PIL's own limit (89 megapixels, a
# warning; twice that, an error) is looser and global; ours is checked first, everywhere we open.
MAX_PIXELS = 8192 * 8192
NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def load_image(source: ImageSource, size: int | None = None) -> torch.Tensor:
    """An RGB image as a float32 tensor (3, H, W) in [-1, 1].

    With ``size``, the largest centred square is cut out and resized to ``size`` x ``size``
    (bicubic, antialiased), as the models want.
    """
    if isinstance(source, torch.Tensor):
        return _tensor_image(source, size)
    image = to_rgb_pil(source)
    if size is not None:
        image = center_square(image, size)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_images(sources, size: int, fit: str = "crop") -> torch.Tensor:
    """Several images as one batch (N, 3, size, size): each one's centred square (``fit="crop"``),
    or the image mirrored out to a square (``"pad"``), resized to ``size``."""
    if isinstance(sources, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
        sources = [sources]
    if fit == "crop":
        return torch.stack([load_image(s, size) for s in sources])
    return torch.stack([resize(square(load_image(s), fit), size) for s in sources])


def square(image: torch.Tensor, fit: str) -> torch.Tensor:
    """The centred square of ``[C, h, w]`` (``crop``), or the image padded to a square by mirroring
    it about its edges (``pad``; repeatedly, for a strip narrower than the padding)."""
    _, height, width = image.shape
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return image[:, top : top + side, left : left + side].clone()
    side = max(height, width)
    check_pixels(side, side, "the photo padded to a square (fit='pad')")  # a 100000x1 strip: refused here
    rows, columns = side - height, side - width
    padding = ((0, 0), (rows // 2, rows - rows // 2), (columns // 2, columns - columns // 2))
    return torch.from_numpy(np.pad(image.numpy(), padding, mode="symmetric"))


def resize(image: torch.Tensor, size) -> torch.Tensor:
    """``[C, h, w]`` or ``[N, C, h, w]`` in [-1, 1] resized to ``size`` (a side, or (height, width);
    bicubic, antialiased, clipped); as it is when it has that size already."""
    height, width = (size, size) if isinstance(size, int) else size
    if tuple(image.shape[-2:]) == (height, width):
        return image
    batch = image if image.dim() == 4 else image[None]
    out = torch.nn.functional.interpolate(batch, size=(height, width), mode="bicubic", antialias=True,
                                          align_corners=False).clamp(-1, 1)
    return out if image.dim() == 4 else out[0]


def describe(source: ImageSource) -> str:
    """A short name for a source, for titles and file names."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stem
    if isinstance(source, Image.Image) and getattr(source, "filename", ""):
        return Path(source.filename).stem
    return type(source).__name__.lower()


def to_rgb_pil(source: ImageSource) -> Image.Image:
    """Any accepted source as an 8-bit RGB PIL image."""
    if isinstance(source, (str, os.PathLike)):
        image = open_image(source)
    elif isinstance(source, Image.Image):
        check_pixels(source.height, source.width, "the image")
        image = source
    elif isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_pixels(source.shape[0], source.shape[1], "the image array")
        image = _from_array(source, "array")
    elif isinstance(source, torch.Tensor):
        if source.ndim >= 2:
            check_pixels(source.shape[-2], source.shape[-1], "the image tensor")
        image = Image.fromarray(to_uint8(_tensor_image(source, None)))
    else:
        raise ImageError(
            f"cannot use a {type(source).__name__} as an image: give a file path, a PIL image, "
            "a NumPy array or a tensor"
        )
    return _to_rgb(image)


def check_pixels(height: int, width: int, what: str) -> None:
    """Refuse, in one line naming ``what``, a size of more than :data:`MAX_PIXELS` pixels (or of
    none), before anything of that size is decoded or allocated.

    Call it with the size a resize, a pad or a decode is about to make: ``--fit pad`` of a
    100000x1 photo would ask for a 100000x100000 canvas.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ImageError(f"{what} has no pixels ({width}x{height}, width x height)")
    if height * width > MAX_PIXELS:
        raise ImageError(f"{what}: {width}x{height} pixels (width x height), more than the {MAX_PIXELS:,} pixels "
                         "this package decodes or allocates at once; downscale it first (for example to 4096 "
                         "pixels on its longer side)")


def probe(path: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) of the image file at ``path``, after checking that it can be used: a
    regular file, within :data:`MAX_PIXELS`, decoded to the end (a truncated file fails here).
    Raises ``ImageError`` (or ``FileNotFoundError``) in one line, as :func:`load_image` would."""
    return open_image(path).size


def center_square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` x ``size``."""
    check_pixels(size, size, "the resized image")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A tensor (3, H, W) or (1, H, W) in [-1, 1] as an (H, W, 3) uint8 array (values clipped)."""
    x = x.detach().float().cpu()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(x))


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a tensor in [-1, 1] as a PNG (or the format of the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(x).save(path)
    return path


def _tensor_image(tensor: torch.Tensor, size: int | None) -> torch.Tensor:
    """A tensor image in [-1, 1] as (3, H, W) float32, centre-cropped and resized in float."""
    x = tensor.detach().to("cpu", torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ImageError(f"an image tensor is (C, H, W) or (1, C, H, W) with 1 or 3 channels, in [-1, 1]; "
                         f"got shape {tuple(tensor.shape)}")
    if not torch.isfinite(x).all():
        raise ImageError("the image tensor holds NaN or infinite values")
    x = x.expand(3, -1, -1).clone()
    if size is not None:
        height, width = x.shape[1:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = x[None, :, top:top + side, left:left + side]
        if side != size:
            square = torch.nn.functional.interpolate(square, size=(size, size), mode="bicubic",
                                                     align_corners=False, antialias=side > size)
        x = square[0].contiguous()
    return x


def open_regular(path: Path):
    """``path`` opened for reading if it is a regular file (a link to one is followed: a path a
    user gives is theirs to choose); a folder, a named pipe, a device or a socket is refused
    without being opened. ``FileNotFoundError`` when nothing is there."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No image at {path}") from None
    except OSError as err:
        raise ImageError(f"{path} cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path} is a folder, not an image")
    if not stat.S_ISREG(mode):
        raise ImageError(_not_regular(path))
    # Non-blocking: a pipe swapped in after the check above does not hang the open either.
    fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(_not_regular(path))
    return os.fdopen(fd, "rb")


def _not_regular(path: Path) -> str:
    kind = what_is(Path(os.path.realpath(path))) or "not a regular file"
    return f"{path} is {kind}, not an image file: only regular files are read as images"


def read_image_file(file, name: str) -> Image.Image:
    """The image in the open binary ``file`` (``name`` says which, in messages), decoded after its
    header's size is checked against :data:`MAX_PIXELS`, with its EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            # PIL's own bomb warning: our limit, checked before decoding, is lower than its threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(file)
        with opened:
            check_pixels(opened.height, opened.width, f"{name} (as its header declares)")
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # PIL refused it before we could see its size
        declared = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise ImageError(f"{name} declares {count}, more than the {MAX_PIXELS:,} pixels this package decodes at "
                         "once; downscale it first (for example to 4096 pixels on its longer side)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"{name} is not an image that can be read ({type(err).__name__}: {err}). "
            "Give a PNG, JPEG, WebP, TIFF, BMP or GIF file."
        ) from err
    image.filename = name
    return image


def open_image(path: str | os.PathLike) -> Image.Image:
    """The image file at ``path``, decoded (as :func:`read_image_file`), if it is a regular file."""
    with open_regular(Path(path)) as file:
        return read_image_file(file, str(path))


def _from_array(array: np.ndarray, what: str) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"an image {what} must be (H, W), (H, W, 3) or (H, W, 4) (a tensor may be (C, H, W)); "
            f"got shape {tuple(array.shape)}"
        )
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        array = array.astype(np.float32)
        if np.isnan(array).any():
            raise ImageError(f"the image {what} holds NaN values")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise ImageError(
                f"a float image {what} must hold values in [0, 1]; got [{array.min():.3g}, {array.max():.3g}] "
                "(an array in [-1, 1]: pass (x + 1) / 2, or pass it as a torch tensor, which is read in [-1, 1])"
            )
        array = (array.clip(0, 1) * 255).round().astype(np.uint8)
    else:
        raise ImageError(f"an image {what} must be uint8, uint16 or float in [0, 1]; got {array.dtype}")
    return Image.fromarray(array)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (and 32-bit integer) grey: scale the range of the type, not of the picture.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
        image = Image.fromarray((array / top * 255).clip(0, 255).round().astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if array.max() <= 1.0 else 255.0
        image = Image.fromarray((array / top * 255).clip(0, 255).round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")
