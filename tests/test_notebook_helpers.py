"""The notebook's helpers, called directly: the control panel's Run button, uploads (ipywidgets 7
and 8, Colab), the side-by-side comparison and its figure, row labels, the summary and its
sections, the device note."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import display, notebook
from ddrm_helpers.display import row_names, show_grid, show_results
from ddrm_helpers.errors import ImageError
from ddrm_helpers.notebook import (
    compare_configs,
    device_report,
    run_summary,
    short_reason,
    upload_widget,
    uploaded_images,
)
from ddrm_helpers.paths import DEMO_DIR
from ddrm_helpers.runner import RunResult, Skipped

from .conftest import REPO
from .faulty_server import FaultyServer
from .tiny_models import install_tiny_checkpoints

CONFIG_TITLES = ["Config 1: CelebA-HQ (DDPM)", "Config 2: ImageNet unconditional (OpenAI)",
                 "Config 3: ImageNet conditional + classifier (OpenAI)"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    with FaultyServer() as server:
        install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq", "imagenet_256_uncond"))
        yield tmp_path


@pytest.fixture(autouse=True)
def _no_labelled_results(monkeypatch):
    """Each test starts with no labelled results and no upload buttons from another test."""
    monkeypatch.setattr(display, "_LABELLED", {})
    monkeypatch.setattr(notebook, "_UPLOADS", {})


def png_bytes(size=(40, 30), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def skipped(config="celeba_hq", display_name="Config 1: CelebA-HQ (DDPM)") -> Skipped:
    return Skipped(config, display_name, "celeba_hq.ckpt is missing (download failed: cannot reach h (no "
                   "internet connection, or the host is gone) (the full message is printed above))",
                   "Put the file at x.", ["celeba_hq.ckpt"])


def fake_result(names, **fields) -> RunResult:
    """A run's result with random pictures (no model): for what the figures and summary show."""
    n = len(names)
    images = torch.rand(n, 3, 16, 16) * 2 - 1
    metrics = [{"name": name, "psnr_restored": 25.0, "ssim_restored": 0.8, "psnr_degraded": 20.0,
                "ssim_degraded": 0.6} for name in names]
    values = dict(config="celeba_hq", display="Config 1: CelebA-HQ (DDPM)", task="sr4", sigma_y=0.05, steps=20,
                  eta=0.85, eta_b=1.0, seed=0, names=list(names), original=images, degraded=images[:, :, ::4, ::4],
                  baseline=images, restored=images, metrics=metrics, samples=images[:, None])
    values.update(fields)
    return RunResult(**values)


def text_boxes(fig, texts):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def assert_side_by_side_without_overlap(boxes, fig):
    width = fig.get_figwidth() * fig.dpi
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, (left, right)
    assert all(box.x0 >= 0 and box.x1 <= width for box in boxes)


def test_uploads_in_the_formats_of_ipywidgets_7_and_8_and_of_colab_become_images():
    # ipywidgets 8: a tuple of dicts, the content a memoryview
    eight = SimpleNamespace(value=({"name": "mine.png", "type": "image/png", "size": 1, "last_modified": 0,
                                    "content": memoryview(png_bytes())},))
    [image] = uploaded_images(eight)
    assert image.size == (40, 30) and image.filename == "mine.png"
    # ipywidgets 7: a dict of name -> {"metadata": {...}, "content": bytes}
    seven = SimpleNamespace(value={
        "a.png": {"metadata": {"name": "a.png", "type": "image/png", "size": 1, "lastModified": 0},
                  "content": png_bytes((8, 6))},
        "b.png": {"metadata": {"name": "b.png"}, "content": png_bytes((5, 5))},
    })
    assert [(i.filename, i.size) for i in uploaded_images(seven)] == [("a.png", (8, 6)), ("b.png", (5, 5))]
    [image] = uploaded_images({"colab.png": png_bytes((8, 8))})  # google.colab.files.upload()
    assert image.size == (8, 8) and image.filename == "colab.png"
    assert uploaded_images(SimpleNamespace(value=())) == [] and uploaded_images(SimpleNamespace(value={})) == []
    assert uploaded_images(None) == []
    with pytest.raises(ImageError, match="the upload 'notes.txt' is not an image"):
        uploaded_images({"notes.txt": b"hello"})


def test_a_real_upload_widget_of_the_installed_ipywidgets_is_read_and_found_by_its_description():
    import ipywidgets

    widget = upload_widget("Photo", multiple=False)
    assert uploaded_images("Photo") == [] and uploaded_images("Mask") == []  # nothing uploaded, no such button
    content = memoryview(png_bytes((12, 7)))
    # What the front end sends when a file is chosen, through the widget's own deserializers.
    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        widget.set_state({"value": [{"name": "real.png", "type": "image/png", "size": content.nbytes,
                                     "last_modified": 0, "content": content}]})
    else:  # 7.x: metadata and data, then the counter that makes value
        widget.set_state({"metadata": [{"name": "real.png", "type": "image/png", "size": content.nbytes,
                                        "lastModified": 0}], "data": [content], "_counter": 1})
    [image] = uploaded_images("Photo")
    assert image.size == (12, 7) and image.filename == "real.png"
    assert [i.size for i in uploaded_images(widget)] == [(12, 7)]


def test_show_results_of_a_skipped_config_prints_nothing_and_files_it_for_the_summary(capsys):
    assert show_results(skipped(), label="Section 4 (demo images)") is None
    assert capsys.readouterr().out == ""  # the run has already said why, in one line
    assert run_summary() == ("- Section 4 (demo images), Config 1: CelebA-HQ (DDPM): skipped: celeba_hq.ckpt is "
                             "missing")


def test_the_summary_names_each_entrys_label_in_order_and_a_rerun_replaces_its_entry(capsys):
    assert run_summary() == "Nothing ran yet."
    show_results(skipped(), label="Section 4 (demo images)", show=False)
    show_results(fake_result(["face"]), label="Section 9a (real photo: small face, 4x)", show=False)
    display.label_result("Section 10 (side by side)", {"celeba_hq": skipped(), "imagenet_256": None})
    show_results(fake_result(["face", "cat"], out_dir=REPO / "x"), label="Section 4 (demo images)", show=False)
    lines = run_summary().splitlines()
    assert lines == [
        f"- Section 4 (demo images), Config 1: CelebA-HQ (DDPM): ran sr4 (sigma_y 0.05, 20 steps) on 2 image(s): "
        f"PSNR 25.00 dB, SSIM 0.800, saved in {REPO / 'x'}",
        "- Section 9a (real photo: small face, 4x), Config 1: CelebA-HQ (DDPM): ran sr4 (sigma_y 0.05, 20 steps) on "
        "1 image(s): PSNR 25.00 dB, SSIM 0.800",
        "- Section 10 (side by side), Config 1: CelebA-HQ (DDPM): skipped: celeba_hq.ckpt is missing",
    ]
    # Results given directly, as the `demo` command does, and (label, result) pairs.
    assert run_summary(skipped(), ("mine", skipped())).splitlines() == [
        "- Config 1: CelebA-HQ (DDPM): skipped: celeba_hq.ckpt is missing",
        "- mine, Config 1: CelebA-HQ (DDPM): skipped: celeba_hq.ckpt is missing"]


def test_short_reason_drops_the_details_in_parentheses():
    assert short_reason("a.pt is missing (download failed: x (y) (z)); b.pt is corrupt (sha256 mismatch)") == \
        "a.pt is missing; b.pt is corrupt"
    assert short_reason("no file") == "no file"


def test_row_labels_are_file_names_or_photo_numbers():
    assert row_names(["face_eileen_collins", "ndarray", "image", "tensor", "pngimagefile", "my_image"]) == [
        "face_eileen_collins", "photo 2", "photo 3", "photo 4", "photo 5", "my_image"]
    fig = show_results(fake_result(["ndarray", "cat_chelsea"]), show=False)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["photo 1", "cat_chelsea"]


def test_grid_titles_are_wrapped_to_their_column_and_never_overlap():
    image = torch.zeros(3, 16, 16)
    columns = {"original": image, "degraded (sr4)": image[:, ::4, ::4], **{t: image for t in CONFIG_TITLES}}
    notes = {t: ["PSNR 23.45 dB, SSIM 0.678"] for t in columns}
    fig = show_grid(columns, ["face_eileen_collins"], notes=notes, show=False,
                    title="sr4, sigma_y 0.05 (skipped: " + ", ".join(CONFIG_TITLES) + ")")
    axes = fig.axes
    assert_side_by_side_without_overlap(text_boxes(fig, [ax.title for ax in axes]), fig)
    assert_side_by_side_without_overlap(text_boxes(fig, [ax.xaxis.label for ax in axes]), fig)
    assert axes[4].get_title() != CONFIG_TITLES[2] and axes[4].get_title().replace("\n", " ") == CONFIG_TITLES[2]
    assert axes[0].get_title() == "original"  # what fits is left alone
    [suptitle] = text_boxes(fig, [fig._suptitle])
    assert suptitle.x0 >= 0 and suptitle.x1 <= fig.get_figwidth() * fig.dpi
    assert all(box.y1 <= suptitle.y0 for box in text_boxes(fig, [ax.title for ax in axes]))  # below the title


@pytest.mark.server
def test_side_by_side_runs_every_config_and_notes_the_skipped(tiny, capsys, monkeypatch):
    figures = []
    monkeypatch.setattr(notebook, "show_grid", lambda *a, **k: figures.append(show_grid(*a, **{**k, "show": False})))
    results = compare_configs(DEMO_DIR / "face_eileen_collins.png", task="sr4", steps=1, label="Section 10 (x)")
    assert list(results) == ["celeba_hq", "imagenet_256", "imagenet_256_cc"]
    assert not results["celeba_hq"].skipped and not results["imagenet_256"].skipped
    assert isinstance(results["imagenet_256_cc"], Skipped)
    assert capsys.readouterr().out.count("skipped") == 1  # the skipped config's own line, nothing more
    [fig] = figures
    axes = fig.axes
    assert [ax.get_title().replace("\n", " ") for ax in axes] == ["original", "degraded (sr4)", *CONFIG_TITLES[:2]]
    assert axes[1].get_xlabel().replace("\n", " ").startswith("baseline PSNR ")  # under the degraded column
    assert all(ax.get_xlabel().replace("\n", " ").startswith("PSNR ") for ax in axes[2:])
    assert axes[0].get_ylabel() == "face_eileen_collins"
    assert "skipped: Config 3" in fig._suptitle.get_text().replace("\n", " ")
    assert_side_by_side_without_overlap(text_boxes(fig, [ax.title for ax in axes]), fig)
    summary = run_summary()
    assert summary.count("- Section 10 (x), ") == 3 and summary.count("ran sr4") == 2
    assert "- Section 10 (x), Config 3: ImageNet conditional + classifier (OpenAI): skipped:" in summary

    array = np.asarray(Image.open(DEMO_DIR / "cat_chelsea.png").convert("RGB"))
    compare_configs(array, task="sr4", steps=1, configs=["celeba_hq"])
    assert figures[1].axes[0].get_ylabel() == "photo 1"


def test_device_report_gives_the_cpu_figures_of_docs_performance(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = device_report()
    assert "CPU" in text and "about 4.4 s" in text and "30 to 40 s" in text
    table = (REPO / "docs" / "performance.md").read_text()
    row = re.compile(r"^\| (\S+) (?:DDPM|ADM) UNet \| full \| \S+ \| ([\d.]+) \|", re.M)
    full = {m.group(1): float(m.group(2)) for m in row.finditer(table)}
    assert full["celeba_hq"] == 4.4
    assert 30 <= full["imagenet_256"] <= 40 and 30 <= full["imagenet_256_cc"] <= 40
    for doc in ("README.md", "docs/notebook.md"):
        assert "30 to 40 s per step" in (REPO / doc).read_text().replace("\n", " "), doc
