"""The app in a real browser: headless Chromium (Debian's, driven by Playwright; no browser is ever
downloaded) opens the page, uploads a photo of handwritten digits, chooses inpainting, draws a
stroke across a row of digits with the mouse, presses Restore, waits for the result (restored at the
photo's own size, in the digits prior's 8x8 tiles), and checks the result's pixels: the painted
pixels were filled with the digits' ink, and the restoration beats the degraded photo against the
truth. A screenshot of the page is kept (``$DDRM_APP_SCREENSHOT``, else the test's
folder); the README's is one (docs/images/app.png).

Under CI (``CI=true``) a missing Chromium fails the test: ``.ci/run`` installs it. Elsewhere the
test is skipped, saying so.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app's tests need requirements-app.txt (in requirements-test.txt)")

from ddrm_helpers.app import build_app, serve  # noqa: E402
from ddrm_helpers.metrics import psnr  # noqa: E402
from ddrm_helpers.selftest import heldout_digits  # noqa: E402
from ddrm_helpers.store import CheckpointStore  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.subprocess,
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

CHROMIUM = os.environ.get("DDRM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Flags that work as root in a container, offline: no sandbox, no GPU, nothing fetched in the background.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# The photo: held-out digits laid out 6 pixels apart (where two meet, the brighter pixel), 3 rows of 4:
# 26x20 pixels, restored at that size in the prior's 8x8 tiles with the default overlap of 2, so that
# each tile holds one digit as the prior knows them (tests/test_tiles.py measures these mosaics).
ROWS, COLUMNS, STRIDE = 3, 4, 6
HEIGHT, WIDTH = STRIDE * (ROWS - 1) + 8, STRIDE * (COLUMNS - 1) + 8
STROKE_ROW = STRIDE + 3  # the stroke hides row 3 of the middle row of digits
WAIT_MS = 120_000  # a guard against a hang, never a budget a slow machine could miss


def _chromium():
    """Playwright's sync API and the path of Chromium, or a skip (a failure under CI) saying what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright is not installed (pip install -r requirements-test.txt)"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: the browser test must run in CI")
        pytest.skip(missing)
    return sync_playwright


def digit_photo(folder: Path) -> tuple[Path, np.ndarray]:
    """The mosaic of held-out digits (the 12 of the first 60 with the most ink in the row the stroke
    hides, in the middle row) as a 26x20 grey PNG at its own size, and its truth in [0, 1]."""
    digits, _ = heldout_digits(60)
    inked = sorted(digits, key=lambda d: -float(np.asarray(d)[3, 1:7].sum()))[:COLUMNS]
    others = [d for d in digits if not any(d is i for i in inked)]
    order = others[:COLUMNS] + inked + others[COLUMNS:2 * COLUMNS]
    truth = np.zeros((HEIGHT, WIDTH))
    for k, digit in enumerate(order):
        top, left = STRIDE * (k // COLUMNS), STRIDE * (k % COLUMNS)
        truth[top:top + 8, left:left + 8] = np.maximum(truth[top:top + 8, left:left + 8], digit)
    path = folder / "digits.png"
    Image.fromarray((truth * 255).round().astype(np.uint8)).save(path)
    return path, (truth * 255).round() / 255


def choose(page, elem_id: str, text: str) -> None:
    """Pick the option starting with ``text`` in a Gradio dropdown, as a user does: type, then click."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} input").fill(text)
    page.get_by_role("option", name=re.compile(f"^{re.escape(text)}")).first.click()


def picture(page, elem_id: str) -> np.ndarray:
    """The image an output component shows, fetched from the page's own address, as [0, 1] grey."""
    source = page.locator(f"#{elem_id} img").first.get_attribute("src")
    body = page.request.get(source).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("L"), dtype=np.float64) / 255


def draw_and_restore(sync_playwright, url: str, photo: Path, profile: Path, shot: Path):
    """What a user does: upload the photo, choose inpainting, paint a stroke across the middle of the
    digit, press Restore, wait for the report; the restored and degraded pictures, and a screenshot."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(  # a new, empty profile
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000})
        page = browser.new_page()
        page.route(re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), lambda route: route.abort())  # offline
        page.set_default_timeout(WAIT_MS)
        page.goto(url, wait_until="networkidle")  # the page's scripts have set it up
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.locator("#photo").get_by_text("Upload an image").wait_for(state="hidden")  # the photo is in
        choose(page, "task", "inp_mask")

        page.get_by_role("button", name="Brush", exact=True).click()
        page.get_by_role("button", name="Brush Size", exact=True).click()
        page.locator("#photo input[type=range]").fill("1")  # a stroke about 3 pixels high
        page.get_by_role("button", name="Brush Size", exact=True).click()
        canvas = page.locator("#photo canvas").first.bounding_box()
        zoom = float(re.search(r"(\d+)%", page.locator("#photo").inner_text()).group(1)) / 100
        # the photo sits in the middle of the canvas, WIDTH x HEIGHT pixels times the zoom
        middle_x, middle_y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
        row = middle_y + (STROKE_ROW + 0.5 - HEIGHT / 2) * zoom
        page.mouse.move(middle_x - 0.4 * WIDTH * zoom, row)
        page.mouse.down()
        page.mouse.move(middle_x + 0.4 * WIDTH * zoom, row, steps=40)  # small moves: one unbroken stroke
        page.mouse.up()
        page.locator("#photo-info").get_by_text(f"Photo: {WIDTH}x{HEIGHT}; ").wait_for()  # the stroke is in

        page.locator("#restore").click()
        page.locator("#report").get_by_text("inp_mask, sigma_y 0").wait_for()
        restored, degraded = picture(page, "restored"), picture(page, "degraded")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return restored, degraded


def test_a_mask_drawn_in_chromium_inpaints_the_digit(tmp_path):
    sync_playwright = _chromium()
    photo, truth = digit_photo(tmp_path)
    shot = Path(os.environ.get("DDRM_APP_SCREENSHOT") or tmp_path / "app.png")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # Gradio reads it at every request
        app = serve(build_app(store=CheckpointStore(tmp_path / "checkpoints"), device="cpu"), block=False)
        try:
            restored, degraded = draw_and_restore(sync_playwright, app.local_url, photo, tmp_path / "profile", shot)
        finally:
            app.close()

    assert restored.shape == degraded.shape == truth.shape  # restored at the photo's own size
    painted_ink = (truth > 0.5) & (degraded < 0.05)  # the digits' ink that the stroke hid
    assert painted_ink.sum() >= 4, "the stroke did not reach the digits' ink"
    print(f"measured: painted ink filled to {restored[painted_ink].mean():.2f}")
    assert restored[painted_ink].mean() > 0.4  # filled with ink, not left black
    import torch

    restored_t, degraded_t, truth_t = (torch.from_numpy(np.repeat(image[None, None], 3, axis=1) * 2 - 1).float()
                                       for image in (restored, degraded, truth))
    gain = float(psnr(restored_t, truth_t) - psnr(degraded_t, truth_t))
    print(f"measured: {gain:+.1f} dB over the degraded photo")
    assert gain > 3.0, f"the restoration beats the degraded photo by only {gain:.1f} dB"
    assert shot.is_file() and Image.open(shot).size[0] == 1280
