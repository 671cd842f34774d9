"""Photos and images at their own size (fit="full"), through the front ends, with the digits prior.

restore_photo returns f*w x f*h for super-resolution by f and w x h otherwise; an inpainting mask is
taken at the photo's size; a photo smaller than a tile is padded by mirroring, restored and cut back;
run_config(fit="full") degrades, restores and scores images of several sizes at their own sizes; a
photo too large for the device is refused in one line before any download; a long run says what
it costs; the command line's --fit and --tile-overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import budget as budget_module
from ddrm_helpers import cli, restore_photo, run_config, show_results
from ddrm_helpers.budget import TooLarge
from ddrm_helpers.canvas import plan_canvas
from ddrm_helpers.degradations import box_mask, make_degradation
from ddrm_helpers.metrics import psnr
from ddrm_helpers.selftest import heldout_digits


def digit_mosaic(first: int, rows: int, columns: int) -> np.ndarray:
    digits, _ = heldout_digits(first + rows * columns)
    tiles = digits[first:]
    return np.block([[tiles[r * columns + c] for c in range(columns)] for r in range(rows)])


def as_png(array: np.ndarray, path) -> str:
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


def photo(task_picture: np.ndarray) -> torch.Tensor:
    """A grey picture in [0, 1] as this package's tensor image [3, h, w] in [-1, 1]."""
    return torch.from_numpy(task_picture).float()[None].expand(3, -1, -1) * 2 - 1


QUIET = dict(steps=5, save=False, progress=False, device="cpu", download=False)


@pytest.mark.parametrize("task, factor", [("sr2", 2), ("sr_bicubic2", 2), ("deblur_gauss", 1), ("color", 1),
                                          ("deno", 1), ("inp", 1)])
def test_a_photo_comes_back_at_its_own_size_times_the_tasks_factor(task, factor):
    picture = photo(digit_mosaic(0, 2, 3))[:, :, :20]  # 20 wide, 16 high: no multiple of the 8-pixel tile
    small = torch.nn.functional.avg_pool2d(picture[None], factor)[0] if factor > 1 else picture
    result = restore_photo("digits", small, task, sigma_y=0.05 if task == "deno" else 0.0, **QUIET)
    height, width = small.shape[1:]
    assert result.restored.shape == (1, 3, factor * height, factor * width)
    assert result.degraded.shape[-2:] == (height, width) and result.baseline.shape == result.restored.shape
    assert result.notes == [] or all("padded" not in note and "Resized" not in note for note in result.notes)


def test_an_inpainting_mask_is_taken_at_the_photos_size_and_its_kept_pixels_are_kept():
    picture = photo(digit_mosaic(3, 2, 3))  # 24 wide, 16 high
    mask = box_mask((16, 24), top=4, left=6, height=6, width=10)
    result = restore_photo("digits", picture, "inp_mask", mask=mask, sigma_y=0.0, **QUIET)
    assert result.restored.shape == (1, 3, 16, 24)
    kept = mask.expand(3, -1, -1)
    torch.testing.assert_close(result.restored[0][kept], picture[kept], atol=2e-6, rtol=0)
    assert bool((result.degraded[0][~kept] == -1).all())  # the measurement shows the hole black
    with pytest.raises(ValueError, match=r"inp_mask on a 24x16 photo .*the mask has shape \[8, 8\]"):
        restore_photo("digits", picture, "inp_mask", mask=np.ones((8, 8)), **QUIET)


def test_a_photo_smaller_than_one_tile_is_mirrored_out_restored_and_cut_back(capsys):
    picture = photo(digit_mosaic(0, 1, 1))[:, 1:6, :]  # 8 wide, 5 high: under one tile of 8
    low = torch.nn.functional.avg_pool2d(picture[None], (1, 1))[0]
    result = restore_photo("digits", low, "deno", sigma_y=0.05, **QUIET)
    assert result.restored.shape == (1, 3, 5, 8) and result.degraded.shape == (1, 3, 5, 8)
    [note] = [n for n in result.notes if "padded" in n]
    assert note == ("The photo is 8x5 (width x height): the model needs at least one tile of 8x8, so it was padded "
                    "to 8x8 by mirroring its edges, restored, and cut back to 8x5.")
    assert note in capsys.readouterr().out
    tiny = torch.nn.functional.avg_pool2d(photo(digit_mosaic(0, 1, 1))[None], 4)[0][:, :, :1]  # 1 wide, 2 high
    result = restore_photo("digits", tiny, "sr4", sigma_y=0.0, **QUIET)  # 4x8 after sr4: padded to 8x8 first
    assert result.restored.shape == (1, 3, 8, 4)
    canvas = plan_canvas((2, 1), 4, 8)
    assert canvas.padded == (8, 8) and canvas.size == (8, 4)


def test_the_padding_is_a_mirror_and_the_cut_is_the_photos_part():
    canvas = plan_canvas((3, 5), 2, 8)  # 6x10 after sr2: 4x4 photo pixels at least, so 1 more row
    image = torch.arange(15.0).reshape(1, 3, 5)
    padded = canvas.pad_photo(image)
    assert padded.shape == (1, 4, 5) and canvas.pad == (0, 1, 0, 0)
    assert torch.equal(padded[0, 3], image[0, 2])  # the edge row repeated, as numpy's symmetric pad
    big = torch.zeros(1, 8, 10)
    big[:, :6] = 1
    assert torch.equal(canvas.cut(big), torch.ones(1, 6, 10))


def test_run_config_full_restores_images_of_several_sizes_at_their_own_sizes():
    sizes = [(16, 24), (16, 16), (24, 16)]
    images = [digit_mosaic(6 * i, h // 8, w // 8) for i, (h, w) in enumerate(sizes)]
    result = run_config("digits", images=images, task="sr2", fit="full", num_samples=2, sigma_y=0.0, **QUIET)
    assert isinstance(result.restored, list) and [tuple(r.shape[-2:]) for r in result.restored] == sizes
    assert [tuple(d.shape[-2:]) for d in result.degraded] == [(h // 2, w // 2) for h, w in sizes]
    assert [tuple(s.shape) for s in result.samples] == [(2, 3, h, w) for h, w in sizes]
    for i, row in enumerate(result.metrics):  # scored at full size, against each image itself
        assert row["psnr_restored"] == pytest.approx(float(psnr(result.restored[i][None],
                                                                result.original[i][None])), abs=1e-4)
    fig = show_results(result, show=False)
    assert fig.axes[0].get_xlabel().startswith("24x16 px")
    same = run_config("digits", images=images[:1] * 2, task="sr2", fit="full", sigma_y=0.0, **QUIET)
    assert isinstance(same.restored, torch.Tensor) and same.restored.shape == (2, 3, 16, 24)


def test_run_config_full_cuts_an_image_to_a_multiple_of_the_factor_and_says_so(capsys):
    image = digit_mosaic(0, 2, 3)[:, :23]  # 23 wide
    result = run_config("digits", images=[image], task="sr2", fit="full", sigma_y=0.0, **QUIET)
    assert result.restored.shape == (1, 3, 16, 22)
    assert "photo1 is 23x16: cut to its centred 22x16, a multiple of sr2's factor 2." in capsys.readouterr().out
    with pytest.raises(ValueError, match="fit='square': give 'crop'"):
        run_config("digits", images=[image], fit="square", **QUIET)


def test_a_run_of_many_tiles_says_what_it_costs_before_it_starts(capsys):
    result = restore_photo("digits", photo(digit_mosaic(0, 2, 3)), "deno", sigma_y=0.1, num_samples=2, **QUIET)
    assert result.restored.shape == (1, 3, 16, 24)
    out = capsys.readouterr().out
    assert ("24x16 (width x height) is restored as 12 tiles of 8x8 (overlap 2): 5 steps x 12 tiles x 2 "
            "restoration(s) = 120 network evaluations.") in out
    restore_photo("digits", photo(digit_mosaic(0, 1, 1)), "deno", sigma_y=0.1, **QUIET)
    assert "network evaluations" not in capsys.readouterr().out  # one tile: nothing to say


def test_a_photo_too_large_for_the_device_is_refused_in_one_line_before_any_download(monkeypatch, tmp_path):
    monkeypatch.setattr(budget_module, "available_bytes", lambda device: 2 * 2**30)  # a device with 2 GB free
    big = tmp_path / "big.png"
    Image.new("L", (2000, 1500)).save(big)
    with pytest.raises(TooLarge) as caught:
        restore_photo("digits", str(big), "sr4", **QUIET)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("big is 2000x1500 (4x super-resolution makes it 8000x6000): restoring it at its own "
                              "size needs about ")
    largest = message.split("the largest of this shape that fits is about ")[1].split(" ")[0]
    width, height = map(int, largest.split("x"))
    assert 0.70 < width / height * 1500 / 2000 < 1.4 and width < 2000
    # ... and that size does fit, and a tenth more does not: the bound is the one the check applies
    fits = []
    for scale in (1.0, 1.1):
        canvas = plan_canvas((int(height * scale), int(width * scale)), 4, 8)
        try:
            budget_module.check_canvas(_digits(), _settings(), canvas, images=1, what="x")
            fits.append(True)
        except TooLarge:
            fits.append(False)
    assert fits == [True, False], (largest, fits)
    assert cli.main(["restore", "--config", "digits", "--task", "sr4", "--photo", str(big)]) == 2


def _digits():
    from ddrm_helpers import load_config

    return load_config("digits")


def _settings():
    from ddrm_helpers.engine import resolve_settings

    return resolve_settings(_digits(), "sr4", None, 5, None, None, 0, 1, device="cpu")


def test_what_a_canvas_needs_grows_with_its_area_and_the_network_is_measured_on_the_meta_device():
    small = budget_module.canvas_bytes((256, 256), 3, task="deblur_gauss", rows=1, images=1, samples=1)
    large = budget_module.canvas_bytes((512, 512), 3, task="deblur_gauss", rows=1, images=1, samples=1)
    assert 3.9 < large / small < 4.1
    weights_and_one = budget_module.network_bytes(_digits(), 1)
    weights_and_four = budget_module.network_bytes(_digits(), 4)
    parameters = sum(p.numel() for p in __import__("ddrm_helpers").build_model(_digits()).parameters())
    assert weights_and_one > parameters * 4 and weights_and_four > weights_and_one  # activations counted per tile


def test_the_command_line_restores_at_its_own_size_by_default(tmp_path, capsys):
    path = as_png(digit_mosaic(0, 2, 3), tmp_path / "digits_24x16.png")
    assert cli.main(["restore", "--config", "digits", "--task", "sr2", "--photo", path, "--steps", "5",
                     "--out", str(tmp_path / "out")]) == 0
    [restored] = list((tmp_path / "out").glob("digits_photo_sr2_*/00_digits_24x16_restored.png"))
    assert Image.open(restored).size == (48, 32)
    assert cli.main(["restore", "--config", "digits", "--task", "sr2", "--photo", path, "--steps", "5",
                     "--fit", "crop", "--out", str(tmp_path / "crop")]) == 0
    [cropped] = list((tmp_path / "crop").glob("digits_photo_sr2_*/00_digits_24x16_restored.png"))
    assert Image.open(cropped).size == (8, 8)
    capsys.readouterr()
    assert cli.main(["restore", "--config", "digits", "--task", "sr2", "--photo", path, "--tile-overlap", "8"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --tile-overlap=8: tiles of 8 pixels overlap by a whole number "
                                               "of pixels from 0 to 7 (default 2)")
    op = make_degradation("sr2", (32, 48))
    assert op.measured_shape == (3, 16, 24)


def test_after_its_first_step_a_long_run_says_how_long_it_should_take(monkeypatch, capsys):
    """The forecast is the first step's time (a clock given here, 30 s a reading apart) times the steps."""
    from ddrm_helpers import engine

    readings = iter(range(0, 10**6, 30))
    monkeypatch.setattr(engine.time, "perf_counter", lambda: next(readings))
    restore_photo("digits", photo(digit_mosaic(0, 2, 3)), "deno", sigma_y=0.1, **QUIET)
    out = capsys.readouterr().out
    assert "The first step took 30.0 s: the whole run should take about 2 min." in out  # 5 steps of 30 s


@pytest.mark.server
def test_config_3_guesses_one_class_for_the_whole_photo_and_guides_every_tile(server, tmp_path, monkeypatch, capsys):
    from .tiny_models import install_tiny_checkpoints

    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("imagenet_256_cond", "imagenet_256_classifier"))
    picture = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1  # two tiles of 64
    result = restore_photo("imagenet_256_cc", picture, "deno", sigma_y=0.1, steps=2, save=False, progress=False,
                           device="cpu")
    assert result.restored.shape == (1, 3, 64, 96) and len(result.classes) == 1
    out = capsys.readouterr().out
    assert out.count("No class given for photo1: the classifier proposes") == 1
    assert "96x64 (width x height) is restored as 2 tiles of 64x64" in out
    assert "(and as many of the classifier)" in out

