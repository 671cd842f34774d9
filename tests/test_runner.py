"""run_config, show_results and `python -m ddrm_helpers run`, with tiny random-weight checkpoints
downloaded from a local server through the real registry path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import cli
from ddrm_helpers.errors import ClassLabelError, DegradationError, ImageError
from ddrm_helpers.images import load_image
from ddrm_helpers.metrics import psnr
from ddrm_helpers.paths import DEMO_DIR
from ddrm_helpers.runner import RunResult, Skipped, run_config

from .tiny_models import install_tiny_checkpoints

pytestmark = pytest.mark.server

FACE = DEMO_DIR / "face_eileen_collins.png"
CAT = DEMO_DIR / "cat_chelsea.png"


@pytest.fixture
def tiny(server, tmp_path, monkeypatch):
    install_tiny_checkpoints(server, tmp_path, monkeypatch)
    return tmp_path


def run(name, **kwargs):
    kwargs.setdefault("steps", 3)
    kwargs.setdefault("progress", False)
    return run_config(name, **kwargs)


def test_a_missing_checkpoint_gives_skipped_never_an_exception(server, tmp_path, monkeypatch, capsys):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("imagenet_256_uncond",))
    result = run("celeba_hq")
    assert isinstance(result, Skipped) and result.skipped
    assert result.missing == ["celeba_hq.ckpt"]
    assert result.reason == "celeba_hq.ckpt could not be downloaded"
    assert "python -m ddrm_helpers download --config celeba_hq" in result.remedy
    out = capsys.readouterr().out
    # the download's report once (with every source's answer and where to put the file), then one line
    assert "HTTP 404 Not Found" in out and str(tmp_path / "checkpoints" / "celeba" / "celeba_hq.ckpt") in out
    assert out.strip().splitlines()[-1] == str(result)
    assert str(result).startswith("Config 1: CelebA-HQ (DDPM) skipped: celeba_hq.ckpt could not be downloaded")
    assert not isinstance(run("imagenet_256", images=[CAT], steps=1), Skipped)  # the others still run


def test_celeba_end_to_end_writes_images_and_metrics(tiny):
    result = run("celeba_hq")
    assert isinstance(result, RunResult) and not result.skipped
    assert (result.task, result.sigma_y, result.steps, result.names) == ("sr4", 0.05, 3, ["face_eileen_collins"])
    assert result.original.shape == (1, 3, 32, 32) and result.restored.shape == (1, 3, 32, 32)
    assert result.degraded.shape == (1, 3, 8, 8)  # the 4x smaller measurement, shown as it is
    assert result.restored.abs().max() <= 1 and torch.isfinite(result.restored).all()
    torch.testing.assert_close(result.original, load_image(FACE, 32)[None])

    folder = result.out_dir
    assert folder.parent == tiny / "exp" / "image_samples" and folder.name.startswith("celeba_hq_sr4_")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00_face_eileen_collins_degraded.png", "00_face_eileen_collins_original.png",
                     "00_face_eileen_collins_restored.png", "metrics.json"]
    assert Image.open(folder / "00_face_eileen_collins_degraded.png").size == (8, 8)
    saved = np.asarray(Image.open(folder / "00_face_eileen_collins_restored.png"))
    assert np.abs(saved.astype(int) - ((result.restored[0].permute(1, 2, 0) + 1) * 127.5).numpy()).max() <= 1

    metrics = json.loads((folder / "metrics.json").read_text())
    assert (metrics["config"], metrics["task"], metrics["sigma_y"], metrics["steps"]) == ("celeba_hq", "sr4", 0.05, 3)
    row = metrics["images"][0]
    assert row["psnr_restored"] == pytest.approx(psnr(result.restored, result.original).item(), abs=1e-5)
    # The baseline of super-resolution is the bicubic upscale of the low-resolution measurement.
    upscaled = torch.nn.functional.interpolate(result.degraded, size=(32, 32), mode="bicubic").clamp(-1, 1)
    assert row["psnr_degraded"] == pytest.approx(psnr(upscaled, result.original).item(), abs=1e-4)


def test_same_seed_same_result_and_another_seed_differs(tiny):
    first, again, other = run("celeba_hq", save=False), run("celeba_hq", save=False), run("celeba_hq", seed=1,
                                                                                          save=False)
    assert torch.equal(first.restored, again.restored) and torch.equal(first.degraded, again.degraded)
    assert not torch.equal(first.restored, other.restored)
    assert first.out_dir is None and first.files == []


def test_a_new_run_never_overwrites_an_older_one(tiny):
    folders = {run("celeba_hq", steps=1).out_dir for _ in range(3)}
    assert len(folders) == 3 and all(len(list(f.iterdir())) == 4 for f in folders)


def test_sigma_y_is_in_pixel_units_and_converted_once(tiny):
    result = run("celeba_hq", task="deno", sigma_y=0.1, steps=1, save=False)
    # y = x + 2 * sigma_y * n in the model's [-1, 1] range: a std of 0.2 there (0.1 of the [0, 1] range).
    noise = (result.degraded - result.original).flatten()
    assert 0.18 < noise.std().item() < 0.22


def test_the_conditional_config_uses_demo_classes_or_proposes_some(tiny, capsys):
    mine = np.asarray(Image.open(CAT).convert("RGB").resize((80, 64)))
    result = run("imagenet_256_cc", images=[CAT, mine], steps=2, save=False)
    assert result.classes[0] == 281  # the demo cat's own class (tabby)
    assert 0 <= result.classes[1] < 1000
    out = capsys.readouterr().out
    assert "No class given for photo2: the classifier proposes" in out and "Pass classes=... to choose" in out
    named = run("imagenet_256_cc", images=[CAT], classes="espresso", steps=1, save=False)
    assert named.classes == [967] and named.metrics[0]["class_name"] == "espresso"


def test_classes_for_an_unconditional_config_are_ignored_with_a_note(tiny, capsys):
    result = run("celeba_hq", classes=5, steps=1, save=False)
    assert result.classes is None
    assert "is not class-conditional: the classes given are not used" in capsys.readouterr().out


def test_bad_inputs_fail_clearly_before_any_download(server, tiny, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png is not an image"):
        run("celeba_hq", images=[text])
    with pytest.raises(DegradationError, match="Unknown degradation 'sr5x'"):
        run("celeba_hq", task="sr5x")
    with pytest.raises(DegradationError, match="does not divide the image size"):
        run("celeba_hq", task="sr3")
    with pytest.raises(ClassLabelError, match="'kitty' is not an ImageNet class name"):
        run("imagenet_256_cc", classes="kitty")
    with pytest.raises(ValueError, match="sigma_y is a noise level"):
        run("celeba_hq", sigma_y=-0.1)
    assert server.log == []


def test_show_results_draws_the_grid_and_a_skip_draws_nothing(tiny, capsys):
    from ddrm_helpers import show_results

    result = run("celeba_hq", steps=1, save=False)
    fig = show_results(result, show=False)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["original", "degraded: sr4, sigma_y 0.05", "restored"]
    assert fig.axes[2].get_xlabel().startswith("PSNR ")
    capsys.readouterr()
    assert show_results(Skipped("x", "Config X", "no file", "get it")) is None
    assert capsys.readouterr().out == ""  # the run said it was skipped; showing it adds nothing


def test_cli_run_end_to_end_and_its_exit_codes(server, tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(["run", "--config", "celeba_hq", "--task", "color", "--sigma-y", "0", "--steps", "2",
                     "--images", str(FACE), str(CAT), "--out", str(out)])
    assert code == 0
    [folder] = list(out.iterdir())
    assert folder.name.startswith("celeba_hq_color_") and len(list(folder.glob("*.png"))) == 6
    assert "Config 1: CelebA-HQ (DDPM): color, sigma_y 0, 2 steps, 2 image(s)" in capsys.readouterr().out

    server.routes.clear()  # every download now fails: nothing can run
    (tmp_path / "checkpoints").rename(tmp_path / "gone")
    assert cli.main(["run", "--config", "celeba_hq", "--steps", "1"]) == 1
    assert "Nothing could run" in capsys.readouterr().err

    assert cli.main(["run", "--config", "celeba_hq", "--images", str(tmp_path / "absent.png")]) == 2
    assert "error: No image at" in capsys.readouterr().err
    assert cli.main(["run", "--config", "celeba_hq", "--task", "blur"]) == 2
    assert "Unknown degradation 'blur'" in capsys.readouterr().err
    assert cli.main(["run", "--config", "imagenet_256_cc", "--classes", "kitty"]) == 2
    assert "'kitty' is not an ImageNet class name" in capsys.readouterr().err


def test_cli_demo_runs_what_it_can_skips_the_rest_and_exits_0(server, tmp_path, monkeypatch, capsys):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    monkeypatch.setenv("DDRM_EXP_DIR", str(tmp_path / "exp"))
    assert cli.main(["demo", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "- Config 1: CelebA-HQ (DDPM): ran sr4 (sigma_y 0.05, 2 steps) on 1 image(s)" in out
    # Each missing file is said once, where its download failed; the configs that miss one are not
    # started, and the last line names them.
    for file in ("256x256_diffusion_uncond.pt", "256x256_diffusion.pt", "256x256_classifier.pt"):
        [line] = [line for line in out.splitlines() if file in line]
        assert line.startswith(f"{file} could not be downloaded from its 1 source: HTTP 404")
    assert "skipped" not in out
    assert out.strip().splitlines()[-1] == ("Ready to run: celeba_hq. Not ready: imagenet_256, imagenet_256_cc (why "
                                            "above); `python -m ddrm_helpers download` tries again.")
    assert [p.name.startswith("celeba_hq_sr4_") for p in (tmp_path / "exp" / "image_samples").iterdir()] == [True]
