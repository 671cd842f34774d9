"""The notebook's helpers, called directly: the control panel's Run button, uploads, the side-by-side
comparison and the summary."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from ddrm_helpers.notebook import compare_configs, device_report, restoration_panel, run_summary, uploaded_images
from ddrm_helpers.paths import DEMO_DIR
from ddrm_helpers.runner import Skipped

from .faulty_server import FaultyServer
from .tiny_models import install_tiny_checkpoints

pytestmark = pytest.mark.server


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with FaultyServer() as server:
        install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq", "imagenet_256_uncond"))
        yield tmp_path


def png_bytes(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_panels_run_button_runs_the_chosen_config(tiny, capsys):
    panel = restoration_panel("celeba_hq")
    assert panel.controls["task"].value == "sr4"  # the config's default
    panel.controls["steps"].value = 1
    panel.controls["task"].value = "color"
    panel.run()
    [folder] = list((tiny / "exp" / "image_samples").iterdir())
    assert folder.name.startswith("celeba_hq_color_")
    assert "Config 1: CelebA-HQ (DDPM): color" in capsys.readouterr().out


def test_uploads_from_ipywidgets_and_from_colab_become_images():
    widget = SimpleNamespace(value=({"name": "mine.png", "content": memoryview(png_bytes())},))
    [image] = uploaded_images(widget)
    assert image.size == (40, 30) and image.filename == "mine.png"
    [image] = uploaded_images({"colab.png": png_bytes((8, 8))})  # google.colab.files.upload()
    assert image.size == (8, 8)
    assert uploaded_images(SimpleNamespace(value=())) == []


def test_side_by_side_runs_every_config_and_notes_the_skipped(tiny, capsys):
    results = compare_configs(DEMO_DIR / "face_eileen_collins.png", task="sr4", steps=1, show=False)
    assert list(results) == ["celeba_hq", "imagenet_256", "imagenet_256_cc"]
    assert not results["celeba_hq"].skipped and not results["imagenet_256"].skipped
    assert isinstance(results["imagenet_256_cc"], Skipped)
    summary = run_summary(results, None)
    assert summary.count("ran sr4") == 2 and "Config 3: ImageNet conditional + classifier (OpenAI): skipped" in summary


def test_device_report_says_what_runs():
    assert "CPU" in device_report() or "GPU" in device_report()
