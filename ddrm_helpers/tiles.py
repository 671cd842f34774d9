"""Any size: a network trained at one size predicts the noise of a canvas of any size, tile by tile.

Every model here was trained on 256x256 images (the digits prior on 8x8). DDRM needs one thing of
the network at each step: the noise prediction for the whole ``x_t``. :class:`TiledDenoiser` gives
it for a canvas of any size of at least one tile: it cuts the canvas into overlapping tiles of the
network's size, runs the network on them ``batch_size`` at a time, and blends the tiles'
predictions with smooth weights that sum to one at every pixel (the MultiDiffusion idea, Bar-Tal et
al. 2023). The sampler receives it like any network; the operator is built at the canvas's size,
so DDRM's update honours the measurement everywhere at once and nothing is stitched afterwards.

>>> tiled = TiledDenoiser(model, tile=256, overlap=64, batch_size=8)
>>> x_hat = ddrm_sample(tiled, y, make_degradation("sr4", (1200, 800)), 0.1)   # a 1200x800 result

Placement: along each side, the fewest tiles that overlap by at least ``overlap`` pixels, the
first at the start and the last at the end, spread evenly in between (so the canvas is covered
without padding and every overlap is ``overlap`` or a little more). Weights: each tile weighs its
pixels by a separable window, 1 inside and rising as ``sin^2`` over ``overlap`` pixels at its
edges (never 0); at each pixel the windows of the tiles that cover it are divided by their sum. A
pixel covered by one tile takes its prediction as it is (weight exactly 1), so a canvas made of
whole tiles with no overlap gives each tile exactly what the network gives it, and a canvas of one
tile is the plain network call.

:class:`TiledClassifier` does the same for the noisy classifier of Config 3: the guidance gradient
``grad log p(class | tile)`` is taken per tile, with the photo's one class, and blended with the
same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .errors import SamplingError

DEFAULT_OVERLAP_FRACTION = 4  # the default overlap is a quarter of the tile (64 pixels of 256)


def default_overlap(tile: int) -> int:
    """The overlap used when none is given: a quarter of the tile's side (64 for 256, 2 for 8)."""
    return tile // DEFAULT_OVERLAP_FRACTION


def check_overlap(overlap, tile: int, what: str = "tile_overlap") -> int:
    """``overlap`` as an int in ``0 .. tile - 1`` (None: :func:`default_overlap`); else a one-line error."""
    if overlap is None:
        return default_overlap(tile)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise SamplingError(f"{what}={overlap!r}: tiles of {tile} pixels overlap by a whole number of pixels "
                            f"from 0 to {tile - 1} (default {default_overlap(tile)})")
    return overlap


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a ``canvas`` (height, width) lie: ``tops`` x ``lefts``, each ``tile`` in size."""

    canvas: tuple[int, int]
    tile: tuple[int, int]
    overlap: int
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @classmethod
    def cover(cls, canvas, tile, overlap: int) -> TileGrid:
        """The grid that covers ``canvas`` with tiles of ``tile`` overlapping by at least ``overlap``."""
        (height, width), (tile_h, tile_w) = _pair(canvas), _pair(tile)
        if height < tile_h or width < tile_w:
            raise SamplingError(
                f"a canvas of {height}x{width} (height x width) is smaller than one tile of {tile_h}x{tile_w}, "
                "the network's size; pad it to at least one tile first"
            )
        if not 0 <= overlap < min(tile_h, tile_w):
            raise SamplingError(f"an overlap of {overlap} does not fit tiles of {tile_h}x{tile_w}")
        return cls((height, width), (tile_h, tile_w), overlap, _starts(height, tile_h, overlap),
                   _starts(width, tile_w, overlap))

    @property
    def count(self) -> int:
        return len(self.tops) * len(self.lefts)

    @property
    def boxes(self) -> list[tuple[int, int]]:
        """The top-left corner of every tile, row by row."""
        return [(top, left) for top in self.tops for left in self.lefts]

    @property
    def single(self) -> bool:
        """One tile exactly the canvas's size: the network's own input."""
        return self.canvas == self.tile

    def weights(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``[count, 1, tile_h, tile_w]``: each tile's blending weights; at every pixel of the canvas,
        the weights of the tiles that cover it sum to one (computed in float64, then cast)."""
        return _weights(self).to(device=device, dtype=dtype)


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    if length == tile:
        return (0,)
    gaps = -(-(length - tile) // (tile - overlap))  # the fewest steps of at most tile - overlap
    return tuple((k * (length - tile) + gaps // 2) // gaps for k in range(gaps + 1))


def _window(tile: int, overlap: int) -> torch.Tensor:
    window = torch.ones(tile, dtype=torch.float64)
    if overlap:
        rise = torch.sin(0.5 * math.pi * torch.arange(1, overlap + 1, dtype=torch.float64) / (overlap + 1)) ** 2
        window[:overlap] = rise
        window[tile - overlap:] = torch.minimum(window[tile - overlap:], rise.flip(0))
    return window


@lru_cache(maxsize=16)
def _weights(grid: TileGrid) -> torch.Tensor:
    (tile_h, tile_w), (height, width) = grid.tile, grid.canvas
    window = torch.outer(_window(tile_h, grid.overlap), _window(tile_w, grid.overlap))
    total = torch.zeros(height, width, dtype=torch.float64)
    for top, left in grid.boxes:
        total[top:top + tile_h, left:left + tile_w] += window
    return torch.stack([window / total[top:top + tile_h, left:left + tile_w] for top, left in grid.boxes])[:, None]


class _Tiled:
    """What the tiled network and the tiled classifier share: the tile, the overlap, the batches."""

    def __init__(self, network, tile, *, overlap: int | None = None, batch_size: int = 1):
        self.network = network
        self.tile = _pair(tile)
        self.overlap = check_overlap(overlap, min(self.tile))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SamplingError(f"batch_size={batch_size!r}: how many tiles go through the network at once, 1 or more")
        self.batch_size = batch_size
        self.evaluations = 0  # tiles through the network so far (a tile counts once per call)

    def grid(self, canvas) -> TileGrid:
        return TileGrid.cover(tuple(canvas), self.tile, self.overlap)

    def _blend(self, x: torch.Tensor, rows_args: tuple, run) -> torch.Tensor:
        """``run(tiles, *args of those rows)`` on every tile of every row of ``x``, ``batch_size``
        tiles at a time, blended into one canvas per row."""
        grid = self.grid(x.shape[-2:])
        if grid.single:
            return self._in_batches(x, rows_args, run)
        tile_h, tile_w = grid.tile
        boxes = grid.boxes
        weights = grid.weights(x.device, x.dtype)
        jobs = [(row, k) for row in range(x.shape[0]) for k in range(len(boxes))]
        out = None
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            rows = torch.tensor([row for row, _ in chunk], device=x.device)
            tiles = torch.stack([x[row, :, top:top + tile_h, left:left + tile_w]
                                 for row, (top, left) in ((row, boxes[k]) for row, k in chunk)])
            result = run(tiles, *(a.index_select(0, rows) for a in rows_args))
            self.evaluations += len(chunk)
            if result.shape[0] != len(chunk) or tuple(result.shape[-2:]) != grid.tile:
                raise SamplingError(f"the network returned {list(result.shape)} for tiles of shape "
                                    f"{list(tiles.shape)}; a tiled network must keep each tile's size")
            if out is None:
                out = result.new_zeros(x.shape[0], result.shape[1], *grid.canvas)
            for j, (row, k) in enumerate(chunk):
                top, left = boxes[k]
                out[row, :, top:top + tile_h, left:left + tile_w] += weights[k].to(result.dtype) * result[j]
        return out

    def _in_batches(self, x: torch.Tensor, rows_args: tuple, run) -> torch.Tensor:
        """The canvas is one tile: the network's own call, ``batch_size`` rows at a time."""
        self.evaluations += x.shape[0]
        if x.shape[0] <= self.batch_size:
            return run(x, *rows_args)
        parts = [run(x[i:i + self.batch_size], *(a[i:i + self.batch_size] for a in rows_args))
                 for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts)


class TiledDenoiser(_Tiled):
    """``network(x, t[, classes])`` for ``x`` ``[B, C, H, W]`` of any size of at least one ``tile``
    (an int, or (height, width)): the blend of the network's output on overlapping tiles.

    ``overlap``: pixels shared by neighbouring tiles (default a quarter of the tile, see
    :func:`default_overlap`); more overlap costs more tiles and smooths more. ``batch_size``: the
    most tiles the network sees at once. Every output channel is blended (the learned-variance
    channels of the OpenAI models too; the sampler cuts them as from the plain network).
    ``evaluations`` counts the tiles the network has been run on.
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *classes: torch.Tensor) -> torch.Tensor:
        return self._blend(x, (t, *classes), self.network)

    def map_network(self, wrap) -> TiledDenoiser:
        """The same tiling over ``wrap(network)`` (the sampler's compile switch wraps the network, not the tiling)."""
        return TiledDenoiser(wrap(self.network), self.tile, overlap=self.overlap, batch_size=self.batch_size)


class TiledClassifier(_Tiled):
    """The noisy classifier of a class-conditional config over a canvas of any size: the guidance
    gradient :meth:`log_prob_gradient` of the canvas's class, taken per tile and blended with the
    weights of :class:`TiledDenoiser`. Called directly, it is the classifier on one tile."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.tile:
            raise SamplingError(f"the classifier takes tiles of {self.tile[0]}x{self.tile[1]}; got {list(x.shape)} "
                                "(for a canvas, use log_prob_gradient)")
        return self.network(x, t)

    def log_prob_gradient(self, x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``grad_x log p(classes | x_t)``, blended over the tiles of ``x``: each tile's gradient of the
        log-probability of its row's class, weighted as the denoiser weighs the tile's noise."""
        from .sampler import log_prob_gradient

        def gradient(tiles, t_rows, class_rows):
            return log_prob_gradient(self.network, tiles, t_rows, class_rows)

        return self._blend(x, (t, classes), gradient)


def tile_count(canvas, tile, overlap: int | None = None) -> int:
    """How many tiles cover ``canvas`` (height, width) with tiles of ``tile`` and this overlap."""
    tile = _pair(tile)
    return TileGrid.cover(_pair(canvas), tile, check_overlap(overlap, min(tile))).count
