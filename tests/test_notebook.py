"""ddrm_demo.ipynb, executed top to bottom in a real Jupyter kernel (nbclient).

1. Offline, with no checkpoints: every cell succeeds, every config reports itself skipped in one
   line, the summary names each entry's section, and the whole run stays short.
2. The cells that read what other cells made (uploads, the summary) run alone in a fresh kernel.
3. Smoke run: tiny random-weight checkpoints of all three architectures, registered with their own
   hashes and served by a local HTTP server: every config runs end to end, draws its grid and
   writes its files; so does every real-photo cell, and the frames cell draws its strip and its
   animation.

The Colab set-up cell has its own tests: tests/test_colab_setup.py.
"""

from __future__ import annotations

import html
import json
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from .conftest import REPO
from .faulty_server import FaultyServer
from .tiny_models import TINY_OVERRIDES, install_tiny_checkpoints

pytestmark = [pytest.mark.notebook, pytest.mark.slow, pytest.mark.timeout(960)]  # > execute()'s 900 s

NOTEBOOK = REPO / "ddrm_demo.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
CONFIG_CELLS = ("result_celeba = ", "result_imagenet = ", "result_conditional = ", "result_mine = ",
                "result_mask = ")
PHOTO_CELLS = ("photo_sr = ", "photo_color = ", "photo_inpainted = ", "photo_deblurred = ", "photo_denoised = ")
FRAMES_CELL = "record, frames = collect_frames()"
COMPARE_CELL = "side_by_side = "
SUMMARY_CELL = "run_summary("
# The labels the notebook's cells give their results, in the notebook's order.
SECTIONS = [
    ("Section 4 (demo images)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 5 (demo images)", "Config 2: ImageNet unconditional (OpenAI)"),
    ("Section 6 (demo images)", "Config 3: ImageNet conditional + classifier (OpenAI)"),
    ("Section 8 (your images)", "Config 2: ImageNet unconditional (OpenAI)"),
    ("Section 8 (your mask)", "Config 2: ImageNet unconditional (OpenAI)"),
    ("Section 9a (real photo: small face, 4x)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 9c (real photo: grey, coloured)", "Config 2: ImageNet unconditional (OpenAI)"),
    ("Section 9d (real photo: damaged, inpainted)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 9e (real photo: blurred)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 9f (real photo: noisy)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 10 (side by side)", "Config 1: CelebA-HQ (DDPM)"),
    ("Section 10 (side by side)", "Config 2: ImageNet unconditional (OpenAI)"),
    ("Section 10 (side by side)", "Config 3: ImageNet conditional + classifier (OpenAI)"),
]


def execute(notebook=None, timeout: int = 900) -> nbformat.NotebookNode:
    notebook = notebook or nbformat.read(NOTEBOOK, as_version=4)
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


def visible_lines(cell) -> list[str]:
    """The lines of text a reader sees under a cell: printed text, and the text of rich outputs
    other than pictures and widgets (a widget's caption line counts; the widget does not)."""
    lines = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            lines += output["text"].splitlines()
        elif output["output_type"] == "error":
            lines += output["traceback"]
        else:
            data = output.get("data", {})
            if "image/png" not in data and WIDGET not in data:
                lines += data.get("text/plain", "").splitlines()
    return [line for line in lines if line.strip()]


def images_in(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def html_in(cell) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.get("outputs", []))


def cell_with(notebook, snippet: str):
    [cell] = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    return cell


# Not in the notebook: after its last cell, the test asks the app's page and stops the app, so that
# no server outlives the run (the kernel's shutdown would end it too).
APP_CELL = "app = serve(block=False)"
ASK_AND_CLOSE = """import urllib.request
with urllib.request.urlopen(app.local_url) as page:
    assert page.status == 200 and app.local_url.startswith("http://127.0.0.1:")
app.close(verbose=False)
print("app answered and closed")"""


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The notebook executed once, offline, with an empty checkpoint folder (and the cell above after it)."""
    folder = tmp_path_factory.mktemp("offline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(ASK_AND_CLOSE))
    with pytest.MonkeyPatch.context() as env:
        for var in ("DDRM_REGISTRY", "DDRM_CONFIG_OVERRIDES"):
            env.delenv(var, raising=False)
        env.setenv("DDRM_CHECKPOINT_DIR", str(folder / "checkpoints"))
        env.setenv("DDRM_EXP_DIR", str(folder / "exp"))
        env.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        notebook = execute(notebook)
    return notebook, folder


def test_offline_the_app_cell_shows_the_app_inline_without_blocking_the_kernel(offline):
    notebook, _ = offline
    shown = html_in(cell_with(notebook, APP_CELL))
    assert re.search(r'<iframe src="http://127\.0\.0\.1:\d+/"', shown), shown  # inline, on this machine only
    assert visible_lines(cell_with(notebook, APP_CELL)) == ["<IPython.core.display.HTML object>"]  # quiet
    assert text_of(notebook.cells[-1]).strip() == "app answered and closed"  # the kernel went on, the app served


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_offline_without_checkpoints_every_cell_runs_and_configs_are_skipped(offline):
    notebook, folder = offline
    assert "checkpoints go to" in text_of(notebook.cells[2])  # outside Colab the set-up cell only imports
    check = cell_with(notebook, "selftest(digits=8, show=True)")  # the shipped prior needs no download
    assert "PASS: DDRM with a real learned prior restores every task" in text_of(check) and images_in(check) == 1
    status = cell_with(notebook, "prepare_checkpoints()")
    files = ["celeba_hq.ckpt", "256x256_diffusion_uncond.pt", "256x256_diffusion.pt", "256x256_classifier.pt"]
    # One line per file, with its sources' answers, then the one line that names the offline check.
    assert [line.split(" could not be downloaded from its ")[0] for line in visible_lines(status)[:-1]] == files
    assert visible_lines(status)[-1].startswith("Nothing can run: no config has its checkpoints (why above). The "
                                                "self-test above (`selftest()`) works offline")
    skipped = {"result_celeba = ": "Config 1: CelebA-HQ (DDPM) skipped: celeba_hq.ckpt could not be downloaded",
               "result_imagenet = ": "Config 2: ImageNet unconditional (OpenAI) skipped",
               "result_conditional = ": "Config 3: ImageNet conditional + classifier (OpenAI) skipped"}
    for snippet, display in skipped.items():
        cell = cell_with(notebook, snippet)
        # Said once: by the run, not again by show_results.
        assert text_of(cell).count(display) == 1 and images_in(cell) == 0
    for snippet in PHOTO_CELLS + (FRAMES_CELL,):
        cell = cell_with(notebook, snippet)
        assert text_of(cell).count(" skipped: ") == 1 and images_in(cell) == 0, snippet
    assert "No frames" not in text_of(cell_with(notebook, FRAMES_CELL))  # the cell does not draw what did not run
    assert not (folder / "exp" / "image_samples").exists() or not any((folder / "exp" / "image_samples").iterdir())


def test_offline_the_summary_names_the_section_of_every_entry(offline):
    notebook, _ = offline
    lines = text_of(cell_with(notebook, SUMMARY_CELL)).splitlines()
    assert [line.split(": skipped: ")[0] for line in lines] == [f"- {label}, {display}" for label, display in SECTIONS]
    assert lines[0] == ("- Section 4 (demo images), Config 1: CelebA-HQ (DDPM): skipped: celeba_hq.ckpt could not be "
                        "downloaded")
    assert all("ran " not in line and "(" not in line.split(": skipped: ")[1] for line in lines)  # short reasons


def test_offline_widgets_have_a_text_line_for_where_they_cannot_show(offline):
    notebook, _ = offline
    for snippet, count in (('upload_widget("Upload")', 1), ('upload_widget("Photo"', 2)):
        outputs = cell_with(notebook, snippet).outputs
        widgets = [o for o in outputs if WIDGET in o.get("data", {})]
        captions = [o for o in outputs if "text/html" in o.get("data", {}) and WIDGET not in o["data"]]
        assert len(widgets) == len(captions) == count, snippet
        for caption in captions:
            assert "run this cell" in caption["data"]["text/plain"].lower()
            assert caption["data"]["text/plain"] in html.unescape(caption["data"]["text/html"])
        assert outputs.index(captions[0]) < outputs.index(widgets[0])  # the caption above its widget


def test_offline_a_skipped_config_is_one_line_and_the_whole_run_is_short(offline):
    """Each missing file is said once, in the checkpoint cell (one line each, and one that says
    what can run: 5 lines, 30 before prepare_checkpoints); a config cell whose checkpoint is missing
    prints one line (at most 3 with a photo's notes); the whole offline run prints 50 lines (73
    before)."""
    notebook, _ = offline
    counts = {}
    for snippet in CONFIG_CELLS + PHOTO_CELLS + (FRAMES_CELL, COMPARE_CELL):
        counts[snippet] = len(visible_lines(cell_with(notebook, snippet)))
    too_long = {snippet: n for snippet, n in counts.items() if n > 3}
    total = sum(len(visible_lines(c)) for c in notebook.cells if c.cell_type == "code")
    assert len(visible_lines(cell_with(notebook, "prepare_checkpoints()"))) == 5
    assert not too_long, f"cells over 3 lines: {too_long}"
    assert total <= 50, f"the offline run prints {total} lines"


def test_cells_that_use_other_cells_results_run_alone_in_a_fresh_kernel(tmp_path, monkeypatch):
    """The own-images, mask, inpainting and summary cells, alone and out of order: no NameError."""
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    full = nbformat.read(NOTEBOOK, as_version=4)
    picked = [cell_with(full, snippet) for snippet in (SUMMARY_CELL, "photo_inpainted = ", "result_mask = ",
                                                       "result_mine = ", SUMMARY_CELL)]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.source) for c in picked])
    execute(notebook)
    assert text_of(notebook.cells[0]).strip() == "Nothing ran yet."
    summary = text_of(notebook.cells[-1]).splitlines()
    assert [line.split(", Config")[0] for line in summary] == [
        "- Section 9d (real photo: damaged, inpainted)", "- Section 8 (your mask)", "- Section 8 (your images)"]


def test_smoke_run_with_tiny_checkpoints_runs_all_three_configs(tmp_path, monkeypatch):
    with FaultyServer() as server:
        install_tiny_checkpoints(server, tmp_path, monkeypatch)
        # Section 9c colours the grey cat at its own size, 451x300: 60 tiles of the tiny model's 64 pixels
        # (6 of the real model's 256). The cells that take Config 2's default number of steps take 4 here, to
        # keep the run short; the cells that set STEPS keep theirs.
        monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", json.dumps(
            {**TINY_OVERRIDES, "imagenet_256": {**TINY_OVERRIDES["imagenet_256"], "ddrm.steps": 4}}))
        monkeypatch.setenv("DDRM_EXP_DIR", str(tmp_path / "exp"))
        notebook = execute()

    status = text_of(cell_with(notebook, "prepare_checkpoints()"))
    assert "Ready to run: celeba_hq, imagenet_256, imagenet_256_cc." in status
    for snippet in CONFIG_CELLS + (COMPARE_CELL,):
        cell = cell_with(notebook, snippet)
        assert images_in(cell) == 1, snippet  # its grid, inline
        assert "skipped" not in text_of(cell), snippet

    for snippet in PHOTO_CELLS:
        cell = cell_with(notebook, snippet)
        assert images_in(cell) == 1, snippet  # the photo, its samples and their spread, inline
        assert "skipped" not in text_of(cell), snippet
    # The grey cat (451x300) at its own size, in the tiny model's tiles of 64 with the default overlap of 16
    assert "451x300 (width x height) is restored as 60 tiles of 64x64" in text_of(cell_with(notebook, "photo_color = "))
    assert "estimated from the photo" in text_of(cell_with(notebook, "photo_denoised = "))
    frames = cell_with(notebook, FRAMES_CELL)
    assert images_in(frames) == 1 and html_in(frames).count("data:image/png;base64") == 20  # strip, animation

    samples = tmp_path / "exp" / "image_samples"
    runs = sorted(re.sub(r"_\d{8}-\d{6}(_\d+)?$", "", p.name) for p in samples.iterdir())
    assert runs == sorted(["celeba_hq_sr4", "imagenet_256_deblur_uni", "imagenet_256_cc_sr4", "imagenet_256_sr4",
                           "imagenet_256_inp_mask", "celeba_hq_sr4", "imagenet_256_sr4", "imagenet_256_cc_sr4",
                           "celeba_hq_photo_sr_bicubic4", "imagenet_256_photo_color", "celeba_hq_photo_inp_mask",
                           "celeba_hq_photo_deblur", "celeba_hq_photo_deno"])
    coloured = next(samples.glob("imagenet_256_photo_color_*/00_*_restored.png"))
    assert Image.open(coloured).size == (451, 300)  # the grey cat, coloured at its own size
    spread = next(samples.glob("celeba_hq_photo_sr_bicubic4_*/00_*_spread.png"))
    assert len(list(spread.parent.glob("00_*_sample*.png"))) == 4
    pixels = np.asarray(Image.open(spread).convert("RGB"))
    # What docs/notebook.md and docs/real-photos.md say: a grey picture, white = the largest spread.
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert pixels.max() == 255
    conditional = next(samples.glob("imagenet_256_cc_sr4_*/metrics.json"))
    metrics = json.loads(conditional.read_text())
    assert metrics["steps"] == 20 and len(metrics["images"]) >= 1
    summary = text_of(cell_with(notebook, SUMMARY_CELL)).splitlines()
    assert [line.split(": ran ")[0] for line in summary] == [f"- {label}, {display}" for label, display in SECTIONS]
    assert "skipped" not in "".join(summary)
