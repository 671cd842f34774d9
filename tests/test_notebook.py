"""ddrm_demo.ipynb, executed top to bottom in a real Jupyter kernel (nbclient).

1. Offline, with no checkpoints: every cell succeeds and every config reports itself skipped.
2. Smoke run: tiny random-weight checkpoints of all three architectures, registered with their own
   hashes and served by a local HTTP server: every config runs end to end, draws its grid and
   writes its files; so does every real-photo cell, and the frames cell draws its strip and its
   animation.
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import REPO
from .faulty_server import FaultyServer
from .tiny_models import install_tiny_checkpoints

pytestmark = [pytest.mark.notebook, pytest.mark.slow, pytest.mark.timeout(960)]  # > execute()'s 900 s

NOTEBOOK = REPO / "ddrm_demo.ipynb"
PHOTO_CELLS = ("photo_sr = ", "photo_color = ", "photo_inpainted = ", "photo_deblurred = ", "photo_denoised = ")
FRAMES_CELL = "record, frames = collect_frames()"


def execute(timeout: int = 900) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    return notebook


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
            parts.append(output["data"].get("text/html", ""))
    return "".join(parts)


def images_in(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def html_in(cell) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.get("outputs", []))


def cell_with(notebook, snippet: str):
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    return cell


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_offline_without_checkpoints_every_cell_runs_and_configs_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("DDRM_EXP_DIR", str(tmp_path / "exp"))
    notebook = execute()

    status = text_of(cell_with(notebook, "ensure_checkpoints()"))
    assert "Ready to run: none." in status and "download failed" in status
    skipped = {"result_celeba = ": "Config 1: CelebA-HQ (DDPM): skipped",
               "result_imagenet = ": "Config 2: ImageNet unconditional (OpenAI): skipped",
               "result_conditional = ": "Config 3: ImageNet conditional + classifier (OpenAI): skipped"}
    for snippet, display in skipped.items():
        cell = cell_with(notebook, snippet)
        assert display in text_of(cell) and images_in(cell) == 0
    for snippet in PHOTO_CELLS:
        cell = cell_with(notebook, snippet)
        assert "Config " in text_of(cell) and "skipped" in text_of(cell) and images_in(cell) == 0, snippet
    frames = text_of(cell_with(notebook, FRAMES_CELL))
    assert "No frames to show" in frames and "No frames to animate" in frames
    summary = text_of(cell_with(notebook, "run_summary("))
    assert summary.count("skipped:") >= 3 and "ran " not in summary
    assert not (tmp_path / "exp" / "image_samples").exists() or not any((tmp_path / "exp" / "image_samples").iterdir())


def test_smoke_run_with_tiny_checkpoints_runs_all_three_configs(tmp_path, monkeypatch):
    with FaultyServer() as server:
        install_tiny_checkpoints(server, tmp_path, monkeypatch)
        monkeypatch.setenv("DDRM_EXP_DIR", str(tmp_path / "exp"))
        notebook = execute()

    status = text_of(cell_with(notebook, "ensure_checkpoints()"))
    assert "Ready to run: celeba_hq, imagenet_256, imagenet_256_cc." in status
    for snippet in ("result_celeba = ", "result_imagenet = ", "result_conditional = ", "result_mine = ",
                    "result_mask = ", "side_by_side = "):
        cell = cell_with(notebook, snippet)
        assert images_in(cell) == 1, snippet  # its grid, inline
        assert "skipped" not in text_of(cell), snippet

    for snippet in PHOTO_CELLS:
        cell = cell_with(notebook, snippet)
        assert images_in(cell) == 1, snippet  # the photo, its samples and their spread, inline
        assert "skipped" not in text_of(cell), snippet
    assert "not square: cut to its centred" in text_of(cell_with(notebook, "photo_color = "))
    assert "estimated from the photo" in text_of(cell_with(notebook, "photo_denoised = "))
    frames = cell_with(notebook, FRAMES_CELL)
    assert images_in(frames) == 1 and html_in(frames).count("data:image/png;base64") == 20  # strip, animation

    runs = sorted(re.sub(r"_\d{8}-\d{6}(_\d+)?$", "", p.name) for p in (tmp_path / "exp" / "image_samples").iterdir())
    assert runs == sorted(["celeba_hq_sr4", "imagenet_256_deblur_uni", "imagenet_256_cc_sr4", "imagenet_256_sr4",
                           "imagenet_256_inp_mask", "celeba_hq_sr4", "imagenet_256_sr4", "imagenet_256_cc_sr4",
                           "celeba_hq_photo_sr_bicubic4", "imagenet_256_photo_color", "celeba_hq_photo_inp_mask",
                           "celeba_hq_photo_deblur", "celeba_hq_photo_deno"])
    spread = next((tmp_path / "exp" / "image_samples").glob("celeba_hq_photo_sr_bicubic4_*/00_*_spread.png"))
    assert len(list(spread.parent.glob("00_*_sample*.png"))) == 4
    conditional = next((tmp_path / "exp" / "image_samples").glob("imagenet_256_cc_sr4_*/metrics.json"))
    metrics = json.loads(conditional.read_text())
    assert metrics["steps"] == 20 and len(metrics["images"]) >= 1
    summary = text_of(cell_with(notebook, "run_summary("))
    assert summary.count("ran ") >= 13 and "skipped" not in summary
