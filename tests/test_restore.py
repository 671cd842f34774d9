"""restore_photo, several samples and their spread, the frames of a run, and
`python -m ddrm_helpers restore`, with tiny random-weight checkpoints (CelebA-HQ at 32x32) served
from a local server.

The central check: a measurement simulated by run_config, handed to restore_photo as the photo,
gives exactly the same restoration with the same seed, for every kind of operator.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import cli
from ddrm_helpers.degradations import box_mask, make_degradation, text_mask
from ddrm_helpers.display import show_results
from ddrm_helpers.errors import DegradationError, ImageError
from ddrm_helpers.images import load_image
from ddrm_helpers.paths import DEMO_DIR
from ddrm_helpers.progress import animate_progress, collect_frames, show_progress
from ddrm_helpers.restore import degraded_photo, measurement_from_photo, restore_photo
from ddrm_helpers.runner import RunResult, Skipped, run_config

from .faulty_server import FaultyServer
from .tiny_models import install_tiny_checkpoints

pytestmark = pytest.mark.server

FACE = DEMO_DIR / "face_eileen_collins.png"
SIZE = 32  # the tiny CelebA-HQ model's image size
ROUND_TRIP = {  # task: degradation parameters
    "sr4": {},
    "sr_bicubic4": {},
    "color": {},
    "inp_mask": {"mask": text_mask("DD\nRM", SIZE)},
    "deblur_gauss": {},
    "deno": {},
}


@pytest.fixture
def server():
    with FaultyServer() as s:
        yield s


@pytest.fixture
def tiny(server, tmp_path, monkeypatch):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    return tmp_path


def simulate(task, **kwargs):
    kwargs.setdefault("steps", 3)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("save", False)
    return run_config("celeba_hq", images=[FACE], task=task, **kwargs)


def restore(photo, task, **kwargs):
    kwargs.setdefault("steps", 3)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("save", False)
    return restore_photo("celeba_hq", photo, task, **kwargs)


@pytest.mark.parametrize("task", ROUND_TRIP)
def test_a_simulated_measurement_restored_as_a_photo_is_the_same_computation(tiny, task):
    params = ROUND_TRIP[task]
    simulated = simulate(task, sigma_y=0.05, seed=3, degradation_params=params)
    photo = simulated.degraded[0]  # the measurement as a picture, noise included
    restored = restore(photo, task, sigma_y=0.05, seed=3, mask=params.get("mask"))
    assert isinstance(restored, RunResult) and restored.from_photo and restored.notes == []
    assert torch.equal(restored.degraded, simulated.degraded)  # y -> picture -> y is exact
    assert torch.equal(restored.baseline, simulated.baseline)
    assert torch.equal(restored.restored, simulated.restored)
    assert restored.original is None and restored.metrics == []


def test_several_samples_in_batches_are_the_same_computation_too(tiny):
    simulated = simulate("sr4", sigma_y=0.05, seed=1, num_samples=3, batch_size=2)
    restored = restore(simulated.degraded[0], "sr4", sigma_y=0.05, seed=1, num_samples=3, batch_size=2)
    assert restored.samples.shape == (1, 3, 3, SIZE, SIZE)
    assert torch.equal(restored.samples, simulated.samples)
    assert not torch.equal(restored.samples[0, 0], restored.samples[0, 1])  # three different samples
    torch.testing.assert_close(restored.mean, restored.samples.mean(dim=1))
    assert torch.equal(restored.restored, restored.samples[:, 0])


@pytest.mark.parametrize("task", [*ROUND_TRIP, "sr2", "deblur_uni", "deblur_aniso", "inp", "inp_box"])
def test_measurement_from_photo_inverts_degraded_image_exactly(task):
    op = make_degradation(task, SIZE, **ROUND_TRIP.get(task, {}))
    g = torch.Generator().manual_seed(0)
    y = op.H(torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1) + 0.1 * torch.randn(1, op.measurement_dim, generator=g)
    assert torch.equal(measurement_from_photo(op, op.degraded_image(y)), y)
    assert torch.equal(measurement_from_photo(op, op.degraded_image(y)[0]), y)  # one image [C, H, W] too


def test_degraded_photo_is_the_measurement_as_an_8_bit_picture():
    small = degraded_photo(FACE, "sr4", SIZE)
    assert small.size == (8, 8) and small.mode == "RGB"
    op = make_degradation("sr4", SIZE)
    exact = op.degraded_image(op.H(load_image(FACE, SIZE)[None]))[0]
    assert (load_image(small) - exact).abs().max() <= 1 / 255 + 1e-6  # rounded to 8 bits, nothing else
    noisy = load_image(degraded_photo(FACE, "deno", SIZE, sigma_y=0.1, seed=1))
    assert 0.08 < ((noisy - load_image(FACE, SIZE)) / 2).std() < 0.11  # clipping trims a little


def test_photos_shrunk_by_pil_are_what_sr4_and_sr_bicubic4_measure():
    face = Image.open(FACE).convert("RGB")  # 256x256
    x = load_image(face)[None]
    for task, method, mean_levels in (("sr4", Image.BOX, 0.5), ("sr_bicubic4", Image.BICUBIC, 0.5)):
        op = make_degradation(task, 256)
        shrunk = load_image(face.resize((64, 64), method))
        levels = (op.degraded_image(op.H(x))[0] - shrunk).abs() * 127.5  # in 8-bit grey levels
        assert levels.mean() < mean_levels, task
    assert levels.max() < 8  # bicubic: a few levels at the sharpest edges


def test_with_crop_or_pad_a_photo_of_another_size_is_made_square_then_resized_and_the_user_is_told(tiny, capsys):
    wide = torch.linspace(-1, 1, 3 * 8 * 10).reshape(3, 8, 10)  # 10 wide, 8 high; sr4 at 32 wants 8x8
    cropped = restore(wide, "sr4", steps=1, fit="crop")
    assert torch.equal(cropped.degraded[0], wide[:, :, 1:9])  # its centred 8x8 square, as it is
    assert cropped.notes == ["The photo is 10x8 (width x height), not square: cut to its centred 8x8 square "
                             "(fit='crop'; fit='pad' keeps all of it)."]
    assert cropped.degraded.shape == (1, 3, 8, 8) and cropped.restored.shape == (1, 3, SIZE, SIZE)
    assert "not square: cut to its centred 8x8 square" in capsys.readouterr().out  # printed, not only kept

    low = torch.linspace(-1, 1, 3 * 6 * 8).reshape(3, 6, 8)  # 8 wide, 6 high
    padded = restore(low, "sr4", steps=1, fit="pad")
    assert padded.notes == ["The photo is 8x6 (width x height), not square: padded to 8x8 by mirroring its edges "
                            "(fit='pad')."]
    rows = padded.degraded[0]
    assert torch.equal(rows[:, 1:7], low) and torch.equal(rows[:, 0], low[:, 0]) and torch.equal(rows[:, 7], low[:, 5])

    resized = restore(low, "sr4", steps=1, fit="crop")
    assert resized.notes[1] == "Resized from 6x6 to 8x8: sr4 makes the model's 32x32 out of 8x8."
    assert resized.degraded.shape == (1, 3, 8, 8)
    small = restore(load_image(FACE, 16), "deno", steps=1, fit="crop")
    assert small.notes == ["Resized from 16x16 to 32x32, the model's size."]


def test_a_mask_is_fitted_with_the_photo_and_a_wrong_mask_fails_clearly(tiny):
    photo = Image.new("RGB", (48, 40), (200, 100, 50))  # 48 wide, 40 high; no pixel is black
    mask = box_mask((40, 48), top=4, left=20, height=8, width=8)  # white = keep, black = fill in
    result = restore(photo, "inp_mask", mask=mask, steps=1, sigma_y=0.0, fit="crop")
    assert result.notes[-1] == "The mask was cut and resized with the photo."
    missing = (result.degraded[0] == -1).all(dim=0)  # the measurement shows missing pixels black
    assert 4 * 4 < missing.sum() < 8 * 8  # the 8x8 box, cut to 40x40 and shrunk by 32/40

    with pytest.raises(DegradationError, match=r"inp_mask on a 48x40 photo .*the mask has shape \[10, 10\]"):
        restore(photo, "inp_mask", mask=np.ones((10, 10)))
    with pytest.raises(DegradationError, match="inp_mask needs mask="):
        restore(photo, "inp_mask")
    with pytest.raises(DegradationError, match="mask= is for task='inp_mask'"):
        restore(photo, "sr4", mask=mask)


def test_a_colour_photo_for_colorization_is_made_grey_and_a_grey_photo_for_sr_gets_three_channels(tiny):
    colour = load_image(FACE, SIZE)
    result = restore(Image.open(FACE).resize((SIZE, SIZE), Image.BICUBIC), "color", steps=1)
    assert result.notes == ["The photo is in colour: made grey (the mean of its channels, what colorization "
                            "measures) to be coloured again."]
    grey = result.degraded[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    torch.testing.assert_close(grey[0], colour.mean(dim=0), atol=1e-6, rtol=0)

    small_grey = Image.open(FACE).convert("L").resize((8, 8))
    result = restore(small_grey, "sr4", steps=1)
    assert result.notes == ["The photo is grey: used as three equal channels (R = G = B), so the model sees a grey "
                            "picture; task='color' colours a grey photo."]
    assert result.degraded.shape == (1, 3, 8, 8) and result.restored.shape == (1, 3, SIZE, SIZE)


def test_bad_input_fails_clearly_before_any_download(server, tiny):
    photo = load_image(FACE, SIZE)
    with pytest.raises(DegradationError, match="cs4: a compressive-sensing measurement .* not a picture"):
        restore(photo, "cs4")
    with pytest.raises(ImageError, match="fit='square': give 'full'"):
        restore(photo, "deno", fit="square")
    with pytest.raises(ValueError, match="or 'estimate'; got 'guess'"):
        restore(photo, "deno", sigma_y="guess")
    with pytest.raises(ValueError, match="num_samples is how many"):
        restore(photo, "deno", num_samples=0)
    with pytest.raises(ImageError, match="1 or 3 channels"):
        restore(torch.zeros(2, SIZE, SIZE), "deno")
    with pytest.raises(DegradationError, match="does not divide the image size"):
        restore(photo, "sr3", fit="crop")  # at its own size (fit="full") a 32x32 photo is 96x96 after sr3
    assert server.log == []


def test_a_missing_checkpoint_gives_skipped(server, tmp_path, monkeypatch):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("imagenet_256_uncond",))
    result = restore(load_image(FACE, 8), "sr4")
    assert isinstance(result, Skipped) and result.missing == ["celeba_hq.ckpt"]


def test_estimated_sigma_y_is_used_and_told(tiny, capsys):
    x = load_image(FACE, SIZE)
    noisy = x + 2 * 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    result = restore(noisy, "deno", sigma_y="estimate", steps=1)
    assert result.sigma_y_estimated and result.sigma_y == pytest.approx(0.1, rel=0.15)
    assert result.notes[-1].startswith(f"sigma_y {result.sigma_y:.3g} estimated from the photo")
    assert f"sigma_y {result.sigma_y:.3g} (estimated)" in capsys.readouterr().out


def test_the_spread_is_zero_where_the_measurement_decides_and_not_where_the_model_invents(tiny):
    mask = box_mask(SIZE, top=8, left=8, height=16, width=16)
    photo = load_image(FACE, SIZE)
    result = restore(photo, "inp_mask", mask=mask, sigma_y=0.0, num_samples=3, steps=4)
    assert result.spread.shape == (1, 1, SIZE, SIZE) and result.mean.shape == (1, 3, SIZE, SIZE)
    assert result.spread[0, 0][mask].max() < 1e-5  # kept pixels: every sample is the photo there
    assert result.spread[0, 0][~mask].mean() > 0.01  # the hole: each sample fills it its own way
    expected = result.samples[0].std(dim=0).pow(2).mean(dim=0).sqrt() / 2  # RMS over channels, [0, 1] units
    torch.testing.assert_close(result.spread[0, 0], expected)


def test_a_reference_gives_scores_and_every_output_is_saved(tiny):
    reference = load_image(FACE, SIZE)
    photo = torch.nn.functional.avg_pool2d(reference[None], 4)[0]  # exactly what sr4 measures
    result = restore(photo, "sr4", sigma_y=0.0, reference=reference, num_samples=2, save=True)
    [row] = result.metrics
    assert {"psnr_restored", "ssim_restored", "psnr_degraded", "ssim_degraded", "psnr_mean", "ssim_mean"} <= set(row)
    folder = result.out_dir
    assert folder.parent == tiny / "exp" / "image_samples" and folder.name.startswith("celeba_hq_photo_sr4_")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"00_photo1_{kind}.png" for kind in ("reference", "degraded", "baseline", "restored", "sample1", "sample2",
                                              "mean", "spread")] + ["metrics.json"])
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["photo"] is True and summary["num_samples"] == 2 and summary["notes"] == []
    assert summary["spread_max"][0] == pytest.approx(result.spread.max().item())
    again = restore(photo, "sr4", sigma_y=0.0, save=True)
    assert again.out_dir != folder and len(list(folder.iterdir())) == 9  # a new run never writes into an old one


def test_run_config_draws_several_samples_too(tiny):
    one = simulate("sr4", seed=5)
    assert one.samples.shape == (1, 1, 3, SIZE, SIZE) and one.mean is None and one.spread is None
    several = simulate("sr4", seed=5, num_samples=2)
    assert several.samples.shape == (1, 2, 3, SIZE, SIZE) and several.spread.shape == (1, 1, SIZE, SIZE)
    assert torch.equal(several.degraded, one.degraded)  # the same measurement, restored twice
    assert "psnr_mean" in several.metrics[0]


def test_the_frames_follow_one_row_of_a_batched_run(tiny):
    mask = box_mask(SIZE, top=8, left=8, height=16, width=16)
    record, frames = collect_frames(row=2)  # the third sample: in the second batch of two
    result = restore(load_image(FACE, SIZE), "inp_mask", mask=mask, sigma_y=0.0, num_samples=3, batch_size=2, steps=4,
                     callback=record)
    assert [f.step for f in frames] == [0, 1, 2, 3] and [f.t for f in frames] == [750, 500, 250, 0]
    assert frames[0].x0.shape == (3, SIZE, SIZE) and frames[0].x0.abs().max() <= 1
    # With sigma_y = 0 the last step keeps the last prediction where the mask removed the pixels.
    hole = ~mask
    torch.testing.assert_close(frames[-1].x0[:, hole], result.samples[0, 2][:, hole], atol=1e-4, rtol=0)
    assert not torch.allclose(frames[-1].x0[:, hole], result.samples[0, 0][:, hole], atol=1e-2)


def test_frames_are_shown_as_a_strip_and_an_animation_and_none_say_so(tiny, capsys):
    record, frames = collect_frames()
    restore(load_image(FACE, 8), "sr4", steps=6, callback=record)
    fig = show_progress(frames, count=3, show=False)
    assert [ax.get_title() for ax in fig.axes] == ["step 1 (t=833)", "step 3 (t=500)", "step 6 (t=0)"]
    html = animate_progress(frames, show=False)
    assert "<script" in html and html.count("data:image/png;base64") == 6
    assert show_progress([]) is None and animate_progress([]) is None
    assert "No frames to show: the restoration did not run" in capsys.readouterr().out


def test_show_results_of_a_photo_with_samples(tiny):
    result = restore(load_image(FACE, 8), "sr4", num_samples=3, steps=1)
    fig = show_results(result, show=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["photo: sr4, sigma_y 0.05", "bicubic upscale", "sample 1", "sample 2", "sample 3", "mean of 3",
                      "spread (std)"]
    assert len(fig.axes) == 8  # and the spread's colour bar


def test_cli_restore_end_to_end_and_its_exit_codes(server, tiny, tmp_path, capsys):
    photo = tmp_path / "small.png"
    Image.open(FACE).convert("RGB").resize((10, 8)).save(photo)
    out = tmp_path / "runs"
    code = cli.main(["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(photo), "--fit", "pad",
                     "--samples", "2", "--estimate-noise", "--steps", "2", "--out", str(out)])
    assert code == 0
    [folder] = list(out.iterdir())
    assert folder.name.startswith("celeba_hq_photo_sr4_") and len(list(folder.glob("00_small_sample*.png"))) == 2
    printed = capsys.readouterr().out
    assert "padded to 10x10 by mirroring its edges" in printed and "estimated from the photo" in printed

    code = cli.main(["restore", "--config", "celeba_hq", "--task", "deblur", "--kernel", "0.25", "0.5", "0.25",
                     "--photo", str(photo), "--sigma-y", "0", "--steps", "1", "--out", str(out)])
    assert code == 0 and len(list(out.iterdir())) == 2

    mask = tmp_path / "mask.png"
    Image.new("L", (5, 5), 255).save(mask)
    assert cli.main(["restore", "--config", "celeba_hq", "--task", "inp_mask", "--photo", str(photo),
                     "--mask", str(mask)]) == 2
    assert "the mask has shape [5, 5]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["restore", "--config", "celeba_hq", "--task", "deno", "--photo", str(photo), "--sigma-y", "0.1",
                  "--estimate-noise"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err

    (tmp_path / "checkpoints").rename(tmp_path / "gone")
    server.routes.clear()  # every download now fails: nothing can run
    assert cli.main(["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(photo)]) == 1
    assert "skipped" in capsys.readouterr().out
