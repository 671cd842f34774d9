"""A photo at its own size: the canvas it is restored on, and the padding a small photo needs.

With ``fit="full"`` a photo of ``w x h`` pixels is restored at its own size: ``f*w x f*h`` for
super-resolution by ``f`` (the photo is the low-resolution measurement), ``w x h`` for every other
task. The network sees the canvas in tiles of its own size (:mod:`ddrm_helpers.tiles`), so the
canvas must be at least one tile on each side. A photo smaller than that is padded by mirroring
its edges (repeatedly, for a photo much smaller than a tile) to the smallest size that gives one
tile, restored, and cut back: the result is still ``f*w x f*h``. Nothing is ever resized.

>>> canvas = plan_canvas((200, 300), factor=4, tile=256)     # a 300x200 photo, 4x super-resolution
>>> canvas.size, canvas.padded                               # no padding: 800x1200 is 3x4 tiles and more
((800, 1200), (800, 1200))
>>> plan_canvas((40, 50), factor=4, tile=256).padded          # 160x200 would be less than one tile
(256, 256)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Canvas:
    """Where a photo of ``photo`` (height, width) pixels is restored.

    ``size``: the result's (height, width), the photo's times ``factor``. ``padded``: the canvas
    the sampler works on, ``size`` or, for a photo smaller than one tile, larger; ``pad``: the
    photo's mirrored padding ``(top, bottom, left, right)`` in photo pixels (the canvas's is
    ``factor`` times that).
    """

    photo: tuple[int, int]
    factor: int
    tile: int
    pad: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.photo[0] * self.factor, self.photo[1] * self.factor

    @property
    def padded_photo(self) -> tuple[int, int]:
        top, bottom, left, right = self.pad
        return self.photo[0] + top + bottom, self.photo[1] + left + right

    @property
    def padded(self) -> tuple[int, int]:
        height, width = self.padded_photo
        return height * self.factor, width * self.factor

    @property
    def is_padded(self) -> bool:
        return any(self.pad)

    def pad_photo(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` ``[C, h, w]`` (the photo, or its mask) padded to :attr:`padded_photo` by mirroring."""
        return mirror_pad(image, self.pad) if self.is_padded else image

    def cut(self, images: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """The photo's part of ``images`` ``[..., H, W]`` laid out on the padded canvas (``scale``
        pixels per photo pixel: ``factor`` for restorations, 1 for the measurement's picture)."""
        if not self.is_padded:
            return images
        scale = self.factor if scale is None else scale
        top, _, left, _ = self.pad
        height, width = self.photo
        return images[..., top * scale:(top + height) * scale, left * scale:(left + width) * scale].contiguous()

    def pad_image(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` ``[C, H, W]`` at the result's size (a clean image to degrade) padded to :attr:`padded`."""
        return mirror_pad(image, tuple(p * self.factor for p in self.pad)) if self.is_padded else image

    def cut_restoration(self, restoration):
        """An :class:`~ddrm_helpers.engine.Restoration` of the padded canvas cut back to the photo's
        part (its samples, baseline and the measurement's picture); the measurement ``y`` stays the
        padded canvas's."""
        if not self.is_padded:
            return restoration
        return dataclasses.replace(restoration, samples=self.cut(restoration.samples),
                                   baseline=self.cut(restoration.baseline),
                                   degraded=self.cut(restoration.degraded, 1))  # in the photo's own pixels

    def describe(self) -> str | None:
        """The note a user reads when the photo was padded, else None."""
        if not self.is_padded:
            return None
        height, width = self.padded_photo
        return (f"The photo is {self.photo[1]}x{self.photo[0]} (width x height): the model needs at least one tile of "
                f"{self.tile}x{self.tile}{f' after {self.factor}x super-resolution' if self.factor > 1 else ''}, "
                f"so it was padded to {width}x{height} by mirroring its edges, restored, and cut back "
                f"to {self.size[1]}x{self.size[0]}.")


def plan_canvas(photo, factor: int, tile: int) -> Canvas:
    """The canvas of a photo of ``photo`` (height, width) pixels for a task of ``factor`` (1, or
    the super-resolution factor) and a network of ``tile`` pixels: padded, centred, to the smallest
    size whose restoration is at least one tile on each side."""
    height, width = (int(v) for v in photo)
    least = -(-tile // factor)  # the fewest photo pixels that give one tile
    extra_h, extra_w = max(0, least - height), max(0, least - width)
    return Canvas((height, width), int(factor), int(tile),
                  (extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2))


def mirror_pad(image: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``image`` ``[C, h, w]`` padded by ``(top, bottom, left, right)`` pixels, mirrored about its edges
    with the edge pixel repeated (``numpy``'s ``symmetric``; repeatedly for a pad wider than the image)."""
    top, bottom, left, right = pad
    padded = np.pad(image.cpu().numpy(), ((0, 0), (top, bottom), (left, right)), mode="symmetric")
    return torch.from_numpy(padded).to(image.device)
