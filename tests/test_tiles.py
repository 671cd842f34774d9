"""Any size: the tiled denoiser (ddrm_helpers/tiles.py) and DDRM on canvases of many tiles.

From the definition: the tiles cover the canvas without padding, overlap by at least what was asked
and their weights sum to one; the tiled network is the network where a canvas is one tile, and each
tile's own output where tiles do not overlap. From DDRM: a canvas of whole tiles with no overlap,
under an operator that acts per pixel or per block, gives each tile exactly what restoring the tiles
as a batch with the same noise gives; noiseless measurements are kept on the whole canvas whatever
the overlap. With the trained digits prior: mosaics of held-out digits restored with overlapping
tiles show no seam at the tile borders and beat the pseudo-inverse.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddrm_helpers import ddrm_sample, load_config, make_degradation
from ddrm_helpers.engine import resolve_settings, sample_measurements
from ddrm_helpers.errors import SamplingError
from ddrm_helpers.metrics import psnr
from ddrm_helpers.models import load_pretrained
from ddrm_helpers.models.pretrained import Pretrained
from ddrm_helpers.schedule import betas_from_config
from ddrm_helpers.selftest import heldout_digits
from ddrm_helpers.store import CheckpointStore
from ddrm_helpers.tiles import TiledClassifier, TiledDenoiser, TileGrid, default_overlap

from .tiny_models import _TINY, TINY_OVERRIDES

GRIDS = [((8, 8), 8, 2), ((16, 24), 8, 0), ((20, 29), 8, 2), ((9, 40), 8, 7), ((256, 300), 64, 16),
         ((300, 256), 64, 0), ((33, 8), 8, 3)]


@pytest.mark.parametrize("canvas, tile, overlap", GRIDS)
def test_tiles_cover_the_canvas_without_padding_overlap_enough_and_weigh_one_in_all(canvas, tile, overlap):
    grid = TileGrid.cover(canvas, tile, overlap)
    height, width = canvas
    for starts, length in ((grid.tops, height), (grid.lefts, width)):
        assert starts[0] == 0 and starts[-1] == length - tile  # first at the start, last at the end
        assert all(0 <= b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap >= asked
        # the fewest tiles that can: one fewer cannot cover the side with that overlap
        assert len(starts) == 1 or (len(starts) - 2) * (tile - overlap) + tile < length
    weights = grid.weights(dtype=torch.float64)
    assert weights.shape == (grid.count, 1, tile, tile) and bool((weights > 0).all())
    total = torch.zeros(canvas, dtype=torch.float64)
    for (top, left), w in zip(grid.boxes, weights):
        total[top:top + tile, left:left + tile] += w[0]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-12, rtol=0)
    assert torch.allclose(grid.weights().sum(), torch.tensor(float(height * width)), rtol=1e-6)


def test_without_overlap_every_weight_is_exactly_one_and_the_default_overlap_is_a_quarter():
    assert torch.equal(TileGrid.cover((16, 24), 8, 0).weights(), torch.ones(6, 1, 8, 8))
    assert (default_overlap(256), default_overlap(8), default_overlap(64)) == (64, 2, 16)
    with pytest.raises(SamplingError, match="smaller than one tile of 8x8"):
        TileGrid.cover((7, 30), 8, 2)
    with pytest.raises(SamplingError, match="tile_overlap=8: tiles of 8 pixels overlap by .* 0 to 7"):
        TiledDenoiser(lambda x, t: x, 8, overlap=8)


class Recorder:
    """A network that records the batches it sees and answers a pointwise function of its input
    and its own timestep and class, with 2C channels when asked (learned sigma)."""

    def __init__(self, doubled=False):
        self.batches, self.doubled = [], doubled

    def __call__(self, x, t, *classes):
        self.batches.append((x.shape[0], t.clone(), classes[0].clone() if classes else None))
        out = torch.tanh(x) * 0.5 + 0.01 * t.view(-1, 1, 1, 1)
        if classes:
            out = out + 0.001 * classes[0].view(-1, 1, 1, 1)
        return torch.cat([out, out * 2], dim=1) if self.doubled else out


@pytest.mark.parametrize("canvas, tile, overlap", GRIDS)
def test_the_tiled_network_blends_to_the_network_wherever_it_is_pointwise(canvas, tile, overlap):
    recorder = Recorder(doubled=True)
    tiled = TiledDenoiser(recorder, tile, overlap=overlap, batch_size=5)
    x = torch.randn(3, 3, *canvas, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10.0, 500.0, 999.0])
    classes = torch.tensor([1, 7, 3])
    out = tiled(x, t, classes)
    assert out.shape == (3, 6, *canvas)  # every channel blended, the variance channels too
    expected = recorder(x, t, classes)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    grid = TileGrid.cover(canvas, tile, overlap)
    seen = recorder.batches[:-1]  # the last call was ours
    assert sum(n for n, _, _ in seen) == 3 * grid.count == tiled.evaluations
    assert max(n for n, _, _ in seen) <= 5  # never more than batch_size tiles at once
    # each tile carries its canvas's timestep and class
    seen_t = torch.cat([s for _, s, _ in seen])
    seen_c = torch.cat([c for _, _, c in seen])
    assert torch.equal(seen_t, t.repeat_interleave(grid.count)) and torch.equal(seen_c,
                                                                                classes.repeat_interleave(grid.count))


def test_a_canvas_of_one_tile_is_the_networks_own_call_and_whole_tiles_without_overlap_are_each_tiles_own():
    recorder = Recorder()
    x = torch.randn(4, 3, 8, 8)
    t = torch.full((4,), 7.0)
    assert torch.equal(TiledDenoiser(recorder, 8, overlap=2, batch_size=4)(x, t), recorder(x, t))
    assert len(recorder.batches) == 2 and recorder.batches[0][0] == 4  # one call, the whole batch

    def net(tiles, t):  # not pointwise: each tile's output depends on all of the tile
        return tiles - tiles.mean(dim=(1, 2, 3), keepdim=True) + t.view(-1, 1, 1, 1)

    canvas = torch.randn(2, 3, 16, 24)
    out = TiledDenoiser(net, 8, overlap=0, batch_size=4)(canvas, torch.tensor([1.0, 2.0]))
    for row in range(2):
        for top in (0, 8):
            for left in (0, 8, 16):
                tile = canvas[row:row + 1, :, top:top + 8, left:left + 8].contiguous()  # as the tiles are cut
                assert torch.equal(out[row:row + 1, :, top:top + 8, left:left + 8],
                                   net(tile, torch.tensor([1.0 + row])))


class LinearClassifier:
    def __init__(self, pixels, classes=5):
        self.w = torch.randn(pixels, classes, generator=torch.Generator().manual_seed(3))
        self.calls = []

    def __call__(self, x, t):
        self.calls.append(x.shape[0])
        return x.flatten(1) @ self.w


def test_the_tiled_classifier_blends_each_tiles_gradient_of_the_canvas_class():
    classifier = LinearClassifier(3 * 8 * 8)
    tiled = TiledClassifier(classifier, 8, overlap=3, batch_size=4)
    x = torch.randn(2, 3, 12, 19, generator=torch.Generator().manual_seed(1))
    t, classes = torch.tensor([5.0, 6.0]), torch.tensor([2, 4])
    grad = tiled.log_prob_gradient(x, t, classes)
    grid = TileGrid.cover((12, 19), 8, 3)
    expected = torch.zeros_like(x)
    for (top, left), w in zip(grid.boxes, grid.weights()):
        tile = x[:, :, top:top + 8, left:left + 8]
        p = torch.softmax(tile.flatten(1) @ classifier.w, dim=1)
        g = (classifier.w[:, classes].T - p @ classifier.w.T).reshape(tile.shape)  # d log p_c / d tile
        expected[:, :, top:top + 8, left:left + 8] += w * g
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-5)
    assert max(classifier.calls) <= 4 and sum(classifier.calls) == 2 * grid.count
    with pytest.raises(SamplingError, match="takes tiles of 8x8"):
        tiled(x, t)


# -- DDRM on canvases, with the trained digits prior -------------------------------------------


@pytest.fixture(scope="module")
def digits():
    config = load_config("digits")
    networks = load_pretrained(config, device="cpu", paths=CheckpointStore().paths(config, download=False,
                                                                                   progress=False))
    return config, networks


def mosaic(first: int, rows: int, columns: int, stride: int = 8) -> torch.Tensor:
    """Held-out digits laid out ``stride`` pixels apart (8x8 each; where two meet, the brighter
    pixel), as one grey picture [3, H, W] in [-1, 1]."""
    digits, _ = heldout_digits(first + rows * columns)
    picture = np.zeros((stride * (rows - 1) + 8, stride * (columns - 1) + 8))
    for k, digit in enumerate(digits[first:]):
        top, left = stride * (k // columns), stride * (k % columns)
        picture[top:top + 8, left:left + 8] = np.maximum(picture[top:top + 8, left:left + 8], digit)
    return torch.from_numpy(picture).float()[None].expand(3, -1, -1) * 2 - 1


def restore(digits, y, op, task, *, sigma_y=0.0, samples=1, overlap=None, seed=0, tile=8, generator=None):
    config, networks = digits
    settings = resolve_settings(config, task, sigma_y, 20, None, None, seed, samples, batch_size=256,
                                device="cpu", tile_overlap=overlap)
    return sample_measurements(networks, y, op, settings, classes=None, progress=False,
                               generator=generator or torch.Generator().manual_seed(seed),
                               betas=betas_from_config(config), learned_sigma=False, tile=tile)


@pytest.mark.parametrize("task", ["inp", "sr2", "deblur_gauss"])
def test_a_canvas_of_one_tile_restores_bit_for_bit_as_the_untiled_path(digits, task):
    x = torch.stack([mosaic(i, 1, 1) for i in range(3)])
    op = make_degradation(task, 8)
    y = op.H(x) + 0.02 * torch.randn(3, op.measurement_dim, generator=torch.Generator().manual_seed(9))
    tiled = restore(digits, y, op, task, sigma_y=0.01, samples=2)
    untiled = restore(digits, y, op, task, sigma_y=0.01, samples=2, tile=None)
    assert torch.equal(tiled, untiled)


@pytest.mark.parametrize("task", ["inp", "color", "deno", "sr2"])
def test_whole_tiles_without_overlap_restore_as_the_tiles_themselves_with_the_same_noise(digits, task):
    """A 16x24 canvas of 2x3 tiles, restored in one piece with overlap 0, against its six tiles
    restored as a batch by the plain network, each tile given its part of the canvas's noise: every
    tile comes out the same, bit for bit (per-pixel and per-block operators, image-shaped noise)."""
    config, networks = digits
    canvas = mosaic(0, 2, 3)[None] * 0.9
    boxes = [(top, left) for top in (0, 8) for left in (0, 8, 16)]
    tiles = torch.stack([canvas[0, :, top:top + 8, left:left + 8] for top, left in boxes])
    generator = torch.Generator().manual_seed(4)
    draws = [torch.randn(1, 3, 16, 24, generator=generator) for _ in range(21)]
    sigma_y = 0.1 if task == "deno" else 0.0
    measurement_noise = torch.randn(1, 3, 16, 24, generator=generator)

    def measure(op, images, noise):
        return op.H(images + 2 * sigma_y * noise) if task == "deno" else op.H(images)

    # One mask for every tile (random within it), repeated over the canvas: one operator serves the batch.
    mask_tile = torch.rand(8, 8, generator=torch.Generator().manual_seed(5)) > 0.5
    extra = {"mask": mask_tile.repeat(2, 3)} if task == "inp" else {}
    name = "inp_mask" if task == "inp" else task
    op_canvas = make_degradation(name, (16, 24), **extra)
    y_canvas = measure(op_canvas, canvas, measurement_noise)
    whole = ddrm_sample(TiledDenoiser(networks.model, 8, overlap=0, batch_size=6), y_canvas, op_canvas,
                        2 * sigma_y, steps=20, progress=False, betas=betas_from_config(config), learned_sigma=False,
                        noise=iter(draws).__next__)
    op = make_degradation(name, 8, **({"mask": mask_tile} if task == "inp" else {}))
    noise_tiles = torch.cat([measurement_noise[:, :, top:top + 8, left:left + 8] for top, left in boxes])
    y_tiles = measure(op, tiles, noise_tiles)
    crops = iter([torch.cat([d[:, :, top:top + 8, left:left + 8] for top, left in boxes]) for d in draws])
    batch = ddrm_sample(networks.model, y_tiles, op, 2 * sigma_y, steps=20, progress=False,
                        betas=betas_from_config(config), learned_sigma=False, noise=crops.__next__)
    for k, (top, left) in enumerate(boxes):
        assert torch.equal(whole[0, :, top:top + 8, left:left + 8], batch[k]), (task, top, left)


@pytest.mark.parametrize("task, overlap", [("inp", None), ("sr2", 2), ("deblur_gauss", 5), ("sr_bicubic2", 1),
                                           ("inp_box", 0), ("color", 3)])
def test_noiseless_measurements_are_kept_on_the_whole_canvas_whatever_the_overlap(digits, task, overlap):
    config, networks = digits
    x = mosaic(10, 3, 4, stride=7)[None, :, :, :28]  # 22x28: tiles of 8 never fit it exactly
    op = make_degradation(task, x.shape[-2:])
    y = op.H(x)
    x_hat = ddrm_sample(TiledDenoiser(networks.model, 8, overlap=overlap, batch_size=64), y, op, 0.0, steps=20,
                        progress=False, betas=betas_from_config(config), learned_sigma=False,
                        generator=torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape
    s = op.singulars()
    kept = s > s.max() * torch.finfo(torch.float32).eps ** 0.5  # what the sampler trusts
    residual = (op.Ut(op.H(x_hat)) - op.Ut(y)) * kept
    assert float(residual.abs().max()) < 1e-5, float(residual.abs().max())


def seam_ratio(error: torch.Tensor, grid: TileGrid) -> float:
    """The mean absolute step of ``error`` across the lines where a tile starts or ends inside the
    canvas, over its mean step across every other line between pixels: 1 where the borders are
    like anywhere else, more where a seam shows."""
    height, width = grid.canvas
    steps_x = (error[..., :, 1:] - error[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # per gap between columns
    steps_y = (error[..., 1:, :] - error[..., :-1, :]).abs().mean(dim=(0, 1, 3))

    def borders(starts, tile, length):
        return sorted({s - 1 for s in starts if s > 0} | {s + tile - 1 for s in starts if s + tile < length})

    bx, by = borders(grid.lefts, grid.tile[1], width), borders(grid.tops, grid.tile[0], height)
    inner_x, inner_y = torch.ones(width - 1, dtype=torch.bool), torch.ones(height - 1, dtype=torch.bool)
    inner_x[bx], inner_y[by] = False, False
    at_borders = torch.cat([steps_x[bx], steps_y[by]]).mean()
    return float(at_borders / torch.cat([steps_x[inner_x], steps_y[inner_y]]).mean())


# Mosaics of 4x6 held-out digits placed 6 pixels apart, so that with tiles of 8 and the default
# overlap of 2 each tile holds one digit as the prior knows them (a tile astride two digits is a
# picture it never saw). Measured (docs/real-photos.md): seam ratios 0.81 to 1.16 over 3 seeds and
# 5 tasks; the mean of 4 samples beat the pseudo-inverse by +4.2..+4.4 dB (inp), +1.4..+2.0 (sr2),
# +6.7..+11.2 (deblur_gauss), +3.0..+3.4 (deno at sigma_y 0.1).
SEAM_MARGIN = 1.5
GAINS = {"inp": (0.0, 3.0), "sr2": (0.0, 0.8), "deblur_gauss": (0.0, 5.0), "deno": (0.1, 2.0)}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(GAINS))
def test_mosaics_restored_in_overlapping_tiles_show_no_seams_and_beat_the_pseudo_inverse(digits, task):
    sigma_y, margin = GAINS[task]
    x = torch.stack([mosaic(0, 4, 6, stride=6), mosaic(100, 4, 6, stride=6)])
    op = make_degradation(task, x.shape[-2:])
    generator = torch.Generator().manual_seed(0)
    y = op.H(x) + 2 * sigma_y * torch.randn(2, op.measurement_dim, generator=generator)
    samples = restore(digits, y, op, task, sigma_y=sigma_y, samples=4, generator=generator)
    grid = TileGrid.cover(x.shape[-2:], 8, default_overlap(8))
    assert grid.count == 24 and grid.overlap == 2
    assert seam_ratio(samples[:, 0] - x, grid) < SEAM_MARGIN
    assert seam_ratio(samples.mean(dim=1) - x, grid) < SEAM_MARGIN
    s = op.singulars()
    kept = s > s.max() * torch.finfo(torch.float32).eps ** 0.5
    pinv = op.V(op.add_zeros(torch.where(kept, op.Ut(y) / torch.where(kept, s, 1.0), 0.0)))
    gain = psnr(samples.mean(dim=1), x).mean() - psnr(pinv.reshape(x.shape).clamp(-1, 1), x).mean()
    assert gain > margin, (task, float(gain))


def test_config_3_guides_every_tile_with_the_photos_one_class(tmp_path):
    """The tiny class-conditional UNet and classifier on a canvas of two tiles: every tile of the
    model and of the classifier sees the canvas's class, and the classifier's tiles are blended."""
    config = _TINY.config("imagenet_256_cc", tiny=True)
    model = _TINY.build(config, "model", seed=0)
    classifier = _TINY.build(config, "classifier", seed=1)
    seen = {"model": [], "classifier": []}

    def watched_model(x, t, y):
        seen["model"].append((tuple(x.shape), y.clone()))
        return model(x, t, y)

    def watched_classifier(x, t):
        seen["classifier"].append(tuple(x.shape))
        return classifier(x, t)

    op = make_degradation("sr4", (64, 96))
    y = op.H(torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    settings = resolve_settings(config, "sr4", 0.0, 2, None, None, 0, 1, batch_size=2, device="cpu")
    out = sample_measurements(Pretrained(watched_model, watched_classifier), y, op, settings, classes=[207],
                              generator=torch.Generator().manual_seed(0), progress=False,
                              betas=betas_from_config(config), learned_sigma=True, tile=64)
    assert out.shape == (1, 1, 3, 64, 96) and bool(torch.isfinite(out).all())
    grid = TileGrid.cover((64, 96), 64, default_overlap(64))
    assert grid.count == 2
    assert [shape for shape, _ in seen["model"]] == [(2, 3, 64, 64)] * 2  # two steps, both tiles at once
    assert all(bool((classes == 207).all()) for _, classes in seen["model"])
    assert seen["classifier"] == [(2, 3, 64, 64)] * 2
    assert TINY_OVERRIDES["imagenet_256_cc"]["data.image_size"] == 64
