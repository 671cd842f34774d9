"""The restoration app (ddrm_helpers.app), served on 127.0.0.1 and driven with gradio_client, as
any client would: the shipped digits prior restores, each mode and task family giving exactly what
the library gives for the same request; two clients at once get their own results, the second
shown its place in the queue; bad input is one line and the app goes on; a cancelled run stops its
sampler; the checkpoint panel shows the store's table and its download messages.

Waits are on events and on the server's own status, never on the clock.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app's tests need requirements-app.txt (in requirements-test.txt)")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from ddrm_helpers.app import build_app, layout, serve  # noqa: E402
from ddrm_helpers.app.choices import GUESS, config_choices  # noqa: E402
from ddrm_helpers.config import DIGITS_CONFIG  # noqa: E402
from ddrm_helpers.errors import RunCancelled  # noqa: E402
from ddrm_helpers.images import to_uint8  # noqa: E402
from ddrm_helpers.restore import degraded_photo, restore_photo  # noqa: E402
from ddrm_helpers.runner import run_config  # noqa: E402
from ddrm_helpers.selftest import heldout_digits  # noqa: E402
from ddrm_helpers.store import CheckpointStore  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow,
              # Gradio's queue statistics, on pandas 3
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

DIGITS = DIGITS_CONFIG
STEPS = 8  # few steps: the point is the wiring; the prior's quality is tests/test_learned_prior.py's
MAX_PIXELS = 48 * 48  # what this test's app takes at most, so that "too large" needs no large file
WAIT = 120  # seconds: only a guard against a hang, never a budget that a slow machine could miss


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Digit photos (8x8 and 4x4, grey as PNG), a painted layer, masks, and files that are not photos."""
    folder = tmp_path_factory.mktemp("files")
    digits, _ = heldout_digits(4)
    for i, digit in enumerate(digits):
        Image.fromarray((np.asarray(digit) * 255).round().astype(np.uint8)).save(folder / f"digit{i}.png")
    degraded_photo(folder / "digit0.png", "sr2", 8).save(folder / "small.png")  # 4x4: what sr2 measures
    degraded_photo(folder / "digit0.png", "deblur_gauss", 8).save(folder / "blurred.png")
    degraded_photo(folder / "digit0.png", "deno", 8, sigma_y=0.1, seed=3).save(folder / "noisy.png")
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[3:5, 1:7] = (255, 0, 255, 255)  # a stroke across the digit's middle: missing
    Image.fromarray(layer, "RGBA").save(folder / "layer.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(folder / "keep_all.png")
    Image.fromarray(np.full((6, 6), 255, np.uint8)).save(folder / "mask6.png")
    (folder / "notes.txt").write_text("not a picture")
    Image.fromarray(np.zeros((49, 49), np.uint8)).save(folder / "big.png")
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app served on 127.0.0.1: the digits prior, and the product configs missing, registered at
    a local server that answers 404 for each (so a download fails at once, as the store says)."""
    from .faulty_server import FaultyServer
    from .tiny_models import install_tiny_checkpoints

    root = tmp_path_factory.mktemp("app")
    with FaultyServer() as server, pytest.MonkeyPatch.context() as env:
        registry = install_tiny_checkpoints(server, root, keys=())["DDRM_REGISTRY"]
        env.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))  # the uploads, in this test's folder
        store = CheckpointStore(root / "checkpoints", registry)
        served = serve(build_app(store=store, device="cpu", max_pixels=MAX_PIXELS), block=False,
                       max_file_size="40kb")
        yield served
        served.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.local_url, verbose=False)


def editor(background, layers=()):
    return {"background": None if background is None else handle_file(str(background)),
            "layers": [handle_file(str(layer)) for layer in layers], "composite": None}


def ask(client, mode, task, photo, *, layers=(), mask=None, sigma_y="0", samples=1, seed=0, config=DIGITS):
    """The app's restore endpoint, with the order of the page's inputs."""
    return client.predict(mode, config, task, sigma_y, STEPS, samples, seed, 1.0, GUESS, editor(photo, layers),
                          None if mask is None else handle_file(str(mask)), api_name="/restore")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def kept_of(layer) -> np.ndarray:
    return np.asarray(Image.open(layer).getchannel("A")) == 0


# (mode, task, photo, sigma_y, what the library call gets): one per task family and mode
PHOTO_CASES = [
    ("sr2", "small.png", "0"),
    ("deblur_gauss", "blurred.png", "0"),
    ("inp_mask", "digit0.png", "0"),
    ("color", "digit1.png", "0"),
    ("deno", "noisy.png", "estimate"),
]
CLEAN_CASES = [("sr2", "0"), ("deblur_gauss", "0"), ("inp_mask", "0"), ("color", "0"), ("deno", "0.1"),
               ("cs2", "0")]


@pytest.mark.parametrize(("task", "photo", "sigma_y"), PHOTO_CASES, ids=[c[0] for c in PHOTO_CASES])
def test_my_photo_is_degraded_restores_as_restore_photo_does(client, files, task, photo, sigma_y):
    inpainting = task == "inp_mask"
    layers = [files / "layer.png"] if inpainting else []
    restored, gallery, degraded, report, _ = ask(client, "photo", task, files / photo, layers=layers,
                                                 sigma_y=sigma_y, samples=2, seed=5)
    expected = restore_photo(DIGITS, files / photo, task, sigma_y="estimate" if sigma_y == "estimate" else 0.0,
                             steps=STEPS, seed=5, num_samples=2, mask=kept_of(layers[0]) if inpainting else None,
                             device="cpu", save=False, progress=False)
    assert (pixels(restored) == to_uint8(expected.restored[0])).all()
    assert (pixels(degraded) == to_uint8(expected.degraded[0])).all()
    assert [item["caption"] for item in gallery][:3] == ["sample 1", "sample 2", "mean of 2"]
    assert (pixels(gallery[2]["image"]) == to_uint8(expected.mean[0])).all()
    assert gallery[3]["caption"].startswith("spread (white = ")
    assert report.startswith("**Self-test prior: 8x8 digits (DDPM)**: " + task)
    assert ("estimated from the photo" in report) == (sigma_y == "estimate")


@pytest.mark.parametrize(("task", "sigma_y"), CLEAN_CASES, ids=[c[0] for c in CLEAN_CASES])
def test_degrade_this_clean_photo_restores_as_run_config_does(client, files, task, sigma_y):
    inpainting = task == "inp_mask"
    layers = [files / "layer.png"] if inpainting else []
    restored, gallery, degraded, report, _ = ask(client, "clean", task, files / "digit2.png", layers=layers,
                                                 sigma_y=sigma_y, seed=7)
    expected = run_config(DIGITS, images=[files / "digit2.png"], task=task, sigma_y=float(sigma_y), steps=STEPS,
                          seed=7, degradation_params={"mask": kept_of(layers[0])} if inpainting else None,
                          device="cpu", save=False, progress=False)
    assert (pixels(restored) == to_uint8(expected.restored[0])).all()
    assert (pixels(degraded) == to_uint8(expected.degraded[0])).all()
    assert not gallery  # one sample: no mean, no spread
    m = expected.metrics[0]
    assert f"| degraded | {m['psnr_degraded']:.2f} | {m['ssim_degraded']:.3f} |" in report
    assert f"| restored | {m['psnr_restored']:.2f} | {m['ssim_restored']:.3f} |" in report


def test_an_uploaded_mask_and_the_painted_pixels_are_missing_together(client, files, tmp_path):
    half = np.full((8, 8), 255, np.uint8)
    half[:, :2] = 0  # black = missing
    Image.fromarray(half).save(tmp_path / "mask.png")
    restored, *_ = ask(client, "photo", "inp_mask", files / "digit3.png", layers=[files / "layer.png"],
                       mask=tmp_path / "mask.png")
    kept = kept_of(files / "layer.png") & (half > 0)
    expected = restore_photo(DIGITS, files / "digit3.png", "inp_mask", sigma_y=0.0, steps=STEPS, mask=kept,
                             device="cpu", save=False, progress=False)
    assert (pixels(restored) == to_uint8(expected.restored[0])).all()


def held(monkeypatch, hold):
    """Run every request through ``hold(request, on_step)`` first: the server's own run_request,
    with a hand on its steps."""
    real = layout.run_request

    def run(request, *, on_step, **kw):
        return real(request, on_step=lambda done, total: hold(request, done, total, on_step), **kw)

    monkeypatch.setattr(layout, "run_request", run)


def status_of(job, wanted, count: int = 4000):
    """The job's status once it is ``wanted`` (the server's own account; a bounded number of looks)."""
    for _ in range(count):
        status = job.status()
        if status.code in wanted:
            return status
        threading.Event().wait(0.03)
    raise AssertionError(f"the job never reached {wanted}: {status}")


def test_two_clients_at_once_get_their_own_results_and_the_second_sees_its_place(app, files, monkeypatch):
    first_started, second_queued = threading.Event(), threading.Event()

    def hold(request, done, total, on_step):
        if request.seed == 1 and done == 1:  # the first request holds the device until the second waits
            first_started.set()
            assert second_queued.wait(WAIT)
        on_step(done, total)

    held(monkeypatch, hold)

    def submit(who, digit, seed):
        return who.submit("photo", DIGITS, "inp_mask", "0", STEPS, 1, seed, 1.0, GUESS,
                          editor(files / digit, [files / "layer.png"]), None, api_name="/restore")

    alice, bob = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
    job_a = submit(alice, "digit0.png", 1)
    assert first_started.wait(WAIT)
    job_b = submit(bob, "digit1.png", 2)
    waiting = status_of(job_b, (Status.IN_QUEUE,))
    assert waiting.rank == 0 and waiting.queue_size >= 1  # first in line, behind the one on the device
    second_queued.set()
    got_a, got_b = job_a.result(timeout=WAIT), job_b.result(timeout=WAIT)
    kept = kept_of(files / "layer.png")
    for got, digit, seed in ((got_a, "digit0.png", 1), (got_b, "digit1.png", 2)):
        expected = restore_photo(DIGITS, files / digit, "inp_mask", sigma_y=0.0, steps=STEPS, seed=seed, mask=kept,
                                 device="cpu", save=False, progress=False)
        assert (pixels(got[0]) == to_uint8(expected.restored[0])).all()
    assert not (pixels(got_a[0]) == pixels(got_b[0])).all()


def test_progress_follows_the_steps(client, files, monkeypatch):
    seen = []

    def hold(request, done, total, on_step):
        seen.append((done, total))
        on_step(done, total)

    held(monkeypatch, hold)
    ask(client, "photo", "deno", files / "noisy.png", samples=1)
    assert seen == [(k, STEPS) for k in range(STEPS + 1)]  # 0: loading the networks, then every step


def test_a_cancelled_run_stops_its_sampler_and_the_app_goes_on(app, client, files, monkeypatch):
    steps, stopped, started = [], [], threading.Event()

    def hold(request, done, total, on_step):
        steps.append(done)
        if request.seed == 9 and done == 2:
            started.set()
            for _ in range(4000):  # held at this step until the cancellation reaches the run
                try:
                    on_step(done, total)
                except RunCancelled:
                    stopped.append(done)
                    raise
                threading.Event().wait(0.03)
            raise AssertionError("the cancellation never reached the sampler")
        on_step(done, total)

    held(monkeypatch, hold)
    job = client.submit("photo", DIGITS, "deno", "0", STEPS, 1, 9, 1.0, GUESS, editor(files / "noisy.png"), None,
                        api_name="/restore")
    assert started.wait(WAIT)
    job.cancel()
    status_of(job, (Status.CANCELLED,))
    assert steps == [0, 1, 2] and stopped == [2]  # the sampler stopped at the step it was on
    restored, *_ = ask(client, "photo", "deno", files / "noisy.png")
    expected = restore_photo(DIGITS, files / "noisy.png", "deno", sigma_y=0.0, steps=STEPS,
                             device="cpu", save=False, progress=False)
    assert (pixels(restored) == to_uint8(expected.restored[0])).all()


BAD = {
    "no photo": (dict(photo=None), "No photo yet: upload one"),
    "not an image": (dict(photo="notes.txt"), "The photo is not an image that can be read"),
    "mask not an image": (dict(mask="notes.txt"), "The mask is not an image that can be read"),
    "mask of the wrong size": (dict(mask="mask6.png"), "the mask has shape [6, 6], but images of 1x8x8"),
    "a mask keeping everything": (dict(mask="keep_all.png", layers=()), "The mask keeps every pixel"),
    "inpainting without a mask": (dict(layers=()), "Inpainting needs a mask: paint the missing pixels"),
    "too large": (dict(photo="big.png"), "The photo is 49x49 (0.0 megapixels); this app takes up to"),
    "noise that is not a number": (dict(sigma_y="lots"), "sigma_y is a noise level in [0, 1] pixel units"),
    "noise out of range": (dict(sigma_y="2"), "sigma_y"),
    "estimate for a clean photo": (dict(sigma_y="estimate", mode="clean"), "sigma_y 'estimate' measures a degraded"),
    "a missing checkpoint": (dict(config="celeba_hq", task="sr4"),
                             "Config 1: CelebA-HQ (DDPM) cannot run: celeba_hq.ckpt is missing. Download it"),
    "no photo can be compressive sensing": (dict(task="cs2", layers=()), "cs2: a compressive-sensing measurement"),
}


def test_bad_input_is_one_line_each_time_and_the_next_request_works(client, files):
    for case, (change, said) in BAD.items():
        asked = {"mode": "photo", "task": "inp_mask", "photo": "digit0.png", "layers": ("layer.png",), "mask": None,
                 "sigma_y": "0", "config": DIGITS, **change}
        with pytest.raises(AppError) as raised:
            ask(client, asked["mode"], asked["task"], asked["photo"] and files / asked["photo"],
                layers=[files / layer for layer in asked["layers"]], mask=asked["mask"] and files / asked["mask"],
                sigma_y=asked["sigma_y"], config=asked["config"])
        message = str(raised.value)
        assert said in message and "\n" not in message.strip() and "Traceback" not in message, case
    restored, *_ = ask(client, "photo", "inp_mask", files / "digit0.png", layers=[files / "layer.png"])
    assert pixels(restored).shape == (8, 8, 3)


def test_an_upload_over_the_size_limit_is_refused_and_the_app_goes_on(client, files, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "heavy.png")  # about 77 kB, over the test app's 40 kB
    assert (tmp_path / "heavy.png").stat().st_size > 40_000
    with pytest.raises(Exception, match="(?i)too large|maximum|413"):
        ask(client, "photo", "deno", tmp_path / "heavy.png")
    restored, *_ = ask(client, "photo", "deno", files / "noisy.png")
    assert pixels(restored).shape == (8, 8, 3)


def test_a_path_the_client_names_is_never_read(app, files, tmp_path):
    """A raw request (not gradio_client, which would upload the file) naming a photo on the server."""
    secret = tmp_path / "secret.png"
    Image.open(files / "digit0.png").save(secret)
    payload = {"data": ["photo", DIGITS, "deno", "0", STEPS, 1, 0, 1.0, GUESS,
                        {"background": {"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "layers": [],
                         "composite": None}, None]}
    with httpx.Client(base_url=app.local_url, timeout=WAIT) as http:
        event = http.post("/gradio_api/call/restore", json=payload).json()["event_id"]
        answer = http.get(f"/gradio_api/call/restore/{event}").text
    assert "event: error" in answer and "event: complete" not in answer


def test_the_checkpoint_panel_shows_the_store_and_says_what_a_download_did(client):
    rows = client.predict(api_name="/checkpoint_status")
    states = {row[0]: row[2] for row in rows["data"]}
    assert states["Self-test prior: 8x8 digits (DDPM)"] == "verified"
    assert states["Config 1: CelebA-HQ (DDPM)"] == "missing"
    assert [row[0] for row in rows["data"]][-1] == config_choices()[-1][0]
    said, table = client.predict(api_name="/download_celeba_hq")  # its one source answers 404
    assert said.startswith("Config 1: CelebA-HQ (DDPM): the download failed.")
    assert "celeba_hq.ckpt" in said and "404" in said  # the store's own report: each source and its answer
    assert {row[0]: row[2] for row in table["data"]}["Config 1: CelebA-HQ (DDPM)"] == "missing"


def test_a_download_that_works_makes_the_config_ready(server, tmp_path, monkeypatch):
    from ddrm_helpers.app import checkpoints

    from .tiny_models import install_tiny_checkpoints

    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    store = CheckpointStore()
    assert "celeba_hq.ckpt is missing" in checkpoints.readiness("celeba_hq", store)
    assert checkpoints.download("celeba_hq", store, progress=False) == \
        "Config 1: CelebA-HQ (DDPM): downloaded and verified; ready."
    assert checkpoints.readiness("celeba_hq", store) == "Config 1: CelebA-HQ (DDPM): ready."
    said = checkpoints.download("imagenet_256", store, progress=False)
    assert said.startswith("Config 2: ImageNet unconditional (OpenAI): the download failed.")
    assert "404" in said  # what the source answered, as the store says it


def test_choosing_a_config_sets_its_defaults_and_says_whether_it_can_run(client):
    task, sigma_y, steps, ready = client.predict("imagenet_256_cc", api_name="/choose_config")
    assert (task, float(sigma_y), steps) == ("sr4", 0.05, 20)
    assert ready.startswith("Config 3: ImageNet conditional + classifier (OpenAI): 256x256_diffusion.pt is missing")
    task, *_, ready = client.predict(DIGITS, api_name="/choose_config")
    assert task == "inp" and ready == "Self-test prior: 8x8 digits (DDPM): ready."


def test_building_the_app_loads_no_network(monkeypatch, tmp_path):
    import ddrm_helpers.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("build_app loaded a network")

    monkeypatch.setattr(models, "load_pretrained", refuse)
    blocks = build_app(store=CheckpointStore(tmp_path), device="cpu")
    config = json.dumps(blocks.get_config_file(), default=str)
    assert "Restore" in config and "Cancel" in config


def test_importing_the_app_package_needs_no_gradio():
    import subprocess
    import sys

    code = "import sys, ddrm_helpers.app; assert 'gradio' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "said"), [
    (["--port", "70000"], "error: --port is a TCP port, 1 to 65535; got 70000"),
    (["--concurrency", "0"], "error: --concurrency is restorations at once on the device, 1 or more; got 0"),
    (["--device", "tpu"], "error: --device"),
])
def test_the_app_command_refuses_bad_arguments_in_one_line(argv, said, capsys):
    from ddrm_helpers.cli import main

    assert main(["app", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1


def test_the_app_command_says_so_when_its_port_is_taken(app, capsys):
    from ddrm_helpers.cli import main

    assert main(["app", "--port", str(app.server_port)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: cannot serve on 127.0.0.1:{app.server_port}: Cannot find empty port in range: "
                   f"{app.server_port}-{app.server_port}; give another --port\n")


@pytest.mark.subprocess
def test_python_m_ddrm_helpers_app_serves_the_page_on_127_0_0_1(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    command = [sys.executable, "-m", "ddrm_helpers", "app", "--port", str(port), "--dir", str(tmp_path / "ckpt")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        for _ in range(200):  # the server says where it is once it answers (or the process ends)
            line = process.stdout.readline()
            if not line or "Running on" in line:
                break
        assert f"http://127.0.0.1:{port}" in line, line
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=WAIT)
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=WAIT).json()  # what the page is built from
        assert page.status_code == 200 and config["title"] == "DDRM: restore a photo"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=WAIT)
    assert process.returncode in (0, -signal.SIGINT, 130)
