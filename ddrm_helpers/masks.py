"""Inpainting masks: text (like the reference's "lolcat" and "lorem" masks), boxes, and a mask given
as a file, an image, an array or a tensor. A mask is bool, True (white) = kept, False (black) = missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import DegradationError
from .factors import image_size_pair, positive_int

__all__ = ["box_mask", "load_mask", "text_mask"]


def text_mask(
    text: str,
    image_size: int | Sequence[int],
    *,
    font_size: int | None = None,
    stroke: int | None = None,
) -> torch.Tensor:
    """A bool ``[H, W]`` mask that is False (missing) under ``text``, centred, and True elsewhere.

    For inpainting under a text overlay, like the reference's "lolcat" and "lorem" masks:

    >>> mask = text_mask("lorem\\nipsum", 64)
    >>> op = make_degradation("inp_mask", 64, mask=mask)
    >>> bool(mask.all()), op.measurement_dim < 3 * 64 * 64
    (False, True)

    ``font_size`` defaults to a fifth of the height; ``stroke`` (extra thickness in pixels) to a
    tenth of the font size. Uses Pillow's built-in font, so no font file is needed.
    """
    height, width = image_size_pair(image_size)
    font_size = font_size if font_size is not None else max(height // 5, 1)
    stroke = stroke if stroke is not None else font_size // 10
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        font = ImageFont.load_default()
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    style = dict(font=font, align="center", stroke_width=stroke)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, **style)
    origin = ((width - right - left) / 2, (height - bottom - top) / 2)
    draw.multiline_text(origin, text, fill=0, stroke_fill=0, **style)
    return torch.from_numpy(np.asarray(canvas) >= 128)


def box_mask(image_size: int | Sequence[int], top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A bool ``[H, W]`` mask that is False (missing) in the box whose top-left pixel is
    ``(top, left)`` and True elsewhere; a box reaching past the edge is cut there.

    >>> mask = box_mask((4, 6), top=1, left=2, height=2, width=9)
    >>> mask.int().tolist()[1]
    [1, 1, 0, 0, 0, 0]
    """
    rows, columns = image_size_pair(image_size)
    top, left = int(top), int(left)
    height = positive_int(height, "box_mask: height")
    width = positive_int(width, "box_mask: width")
    if not (0 <= top < rows and 0 <= left < columns):
        raise DegradationError(
            f"box_mask: the box's top-left pixel ({top}, {left}) is outside the {rows}x{columns} image; "
            f"give 0 <= top < {rows} and 0 <= left < {columns}"
        )
    mask = torch.ones(rows, columns, dtype=torch.bool)
    mask[top : top + height, left : left + width] = False
    return mask


def load_mask(mask, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """A mask given as a path, a PIL image, an array or a tensor -> bool ``[C, H, W]``, True = kept.

    Images: grey level >= 128 is kept (white = observed, black = missing). Arrays and tensors:
    nonzero (or True) is kept, as in the reference's ``.npy`` masks.
    """
    if isinstance(mask, (str, os.PathLike)):
        from .images import open_image  # a regular file only, its size checked before decoding

        mask = np.asarray(open_image(mask).convert("L")) >= 128
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) >= 128
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    mask = mask.detach().to("cpu") != 0
    channels, height, width = shape
    given = list(mask.shape)
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or mask.shape[1:] != (height, width) or mask.shape[0] not in (1, channels):
        raise DegradationError(
            f"{name}: the mask has shape {given}, but images of {channels}x{height}x{width} "
            f"need a mask of shape [{height}, {width}] (all channels) or [{channels}, {height}, {width}]. "
            "Resize the mask to the image size first (nearest neighbour, so it stays binary)."
        )
    mask = mask.expand(channels, height, width).clone()
    if not mask.any():
        raise DegradationError(f"{name}: the mask keeps no pixel at all (everything is 0 / black)")
    return mask
