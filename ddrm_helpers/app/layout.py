"""The page: :func:`build_app` makes the Gradio Blocks (nothing is served or loaded), :func:`serve`
launches it (on 127.0.0.1 unless told otherwise, inline in a notebook, or blocking in a terminal).

Every handler is a thin wrapper over :mod:`~ddrm_helpers.app.restoration` and
:mod:`~ddrm_helpers.app.checkpoints`; a bad input or a failure becomes one line, ``gr.Error``, and
the app goes on serving. Nothing is shared between sessions but the store and the process's cache
of loaded networks (keyed by config, files and device).

The restoration runs in a worker thread. Its progress goes to ``gr.Progress`` from the sampler's
callback; when the run is cancelled (the Cancel button, or the page closed) the callback stops the
sampler at its next step, and the handler returns only then, so that the queue never lets a second
restoration onto the device while a cancelled one still runs.
"""

from __future__ import annotations

import asyncio
import threading

import gradio as gr
from PIL import Image

from ..config import DIGITS_CONFIG, available_configs, load_config
from ..errors import ConfigError, RunCancelled
from . import checkpoints
from .choices import (
    GUESS,
    MASK_TASK,
    MODES,
    PHOTO_MODE,
    class_choices,
    config_choices,
    is_conditional,
    task_choices,
)
from .restoration import MAX_PIXELS, painted_pixels, read_request, run_request

MAX_FILE_SIZE = "25mb"  # the largest upload Gradio accepts (serve(max_file_size=...))
# The system's fonts, not a font service's: the page works offline and asks no third party for anything.
FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# Small results (an 8x8 digit, a 64x64 face) are shown enlarged: as pixels, not blurred.
CSS = ("#restored img, #degraded img { width: 100%; height: 100%; object-fit: contain; }\n"
       "#restored img, #degraded img, #gallery img { image-rendering: pixelated; }")
INTRO = """\
# DDRM: restore a photo
Upload a photo (or use the webcam, or paste one), choose what happened to it and a config, then press
**Restore**. For inpainting, paint the missing pixels on the photo with the brush (or upload a mask).
*My photo is degraded* takes your photo as the measurement; *Degrade this clean photo* degrades it
first and scores the restoration against it. The digits config is a small model that ships with the
package: it works offline, on 8x8 handwritten digits.
"""


def _one_line_when_unreadable(component, what: str):
    """``component`` (an image upload), whose upload that is not an image becomes one line.

    Gradio decodes an upload before the handler sees it, and its own message for a file it cannot
    read runs over several lines, with the payload. (Wrapped on the instance: a subclass of a Gradio
    component makes Gradio write a type-stub file beside this module.)
    """
    read = component.preprocess

    def preprocess(payload):
        try:
            return read(payload)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise gr.Error(f"{what} is not an image that can be read ({type(err).__name__}): give a PNG, JPEG, WebP, "
                           "TIFF, BMP or GIF file", print_exception=False) from None

    component.preprocess = preprocess
    return component


def build_app(*, store=None, device=None, concurrency: int = 1, max_pixels: int = MAX_PIXELS,
              config: str | None = None, queue_size: int | None = 64) -> gr.Blocks:
    """The app as ``gr.Blocks``, queued, not launched (see :func:`serve`).

    ``store``: the :class:`~ddrm_helpers.store.CheckpointStore` (default: ``exp/logs`` or
    ``$DDRM_CHECKPOINT_DIR``; every store finds the digits prior's file, which ships with the package).
    ``device``: where restorations run (default: CUDA when visible). ``concurrency``: restorations
    at once on that device (queued beyond). ``max_pixels``: the largest photo taken. ``config``:
    the config selected at first (default: the digits prior, which needs no download).
    ``queue_size``: requests waiting at most (None: no bound).
    """
    from .. import validate
    from ..engine import default_device
    from ..store import CheckpointStore

    store = store if store is not None else CheckpointStore()
    device = validate.check_device(device) or default_device()
    concurrency = validate.check_count(concurrency, "concurrency", "restorations at once on the device, 1 or more")
    first = config or DIGITS_CONFIG
    defaults = load_config(first)
    uploads = gr.utils.get_upload_folder()  # where this server keeps what is uploaded to it: all it reads

    with gr.Blocks(title="DDRM: restore a photo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                photo = gr.ImageEditor(
                    label="Photo (for inpainting: paint the missing pixels)", type="filepath", image_mode="RGBA",
                    format="png", sources=("upload", "webcam", "clipboard"), layers=False, transforms=(),
                    brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"), elem_id="photo")
                _one_line_when_unreadable(photo, "The photo")
                photo_info = gr.Markdown(elem_id="photo-info")
                mask = gr.Image(label="Or upload a mask: white = kept, black = missing, the photo's size",
                                type="filepath", image_mode="L", format="png", sources=["upload"], height=160,
                                elem_id="mask")
                _one_line_when_unreadable(mask, "The mask")
            with gr.Column(scale=2):
                mode = gr.Radio(MODES, value=PHOTO_MODE, label="Mode", elem_id="mode")
                config_menu = gr.Dropdown(config_choices(), value=first, label="Config", elem_id="config")
                ready = gr.Markdown(checkpoints.readiness(first, store), elem_id="ready")
                task = gr.Dropdown(task_choices(), value=defaults.ddrm.task, label="Task: what happened to the photo",
                                   elem_id="task")
                sigma_y = gr.Textbox(str(defaults.ddrm.sigma_y), label="sigma_y: its noise, in [0, 1] pixel units, "
                                     "or 'estimate' (a degraded photo)", elem_id="sigma")
                with gr.Row():
                    steps = gr.Slider(1, 100, value=int(defaults.ddrm.steps), step=1, label="Steps", elem_id="steps")
                    samples = gr.Slider(1, 8, value=1, step=1, label="Samples", elem_id="samples")
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id="seed")
                with gr.Group(visible=is_conditional(first)) as guidance:
                    scale = gr.Slider(0.0, 20.0, value=1.0, step=0.5, label="Classifier guidance scale (Config 3)")
                    label = gr.Dropdown(class_choices(), value=GUESS, filterable=True, elem_id="class",
                                        label="ImageNet class (Config 3; type to search)")
                with gr.Row():
                    restore = gr.Button("Restore", variant="primary", elem_id="restore")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                said = gr.Markdown(elem_id="said")
        with gr.Row():
            restored = gr.Image(label="Restored", format="png", interactive=False, buttons=["download", "fullscreen"],
                                height=320, elem_id="restored")
            degraded = gr.Image(label="Degraded: the measurement DDRM was given", format="png", interactive=False,
                                buttons=["download"], height=320, elem_id="degraded")
        gallery = gr.Gallery(label="Samples, their mean and their spread (with 2 samples or more)", format="png",
                             columns=6, height=200, elem_id="gallery")
        result_report = gr.Markdown(elem_id="report")
        gr.Examples(_examples(), inputs=[photo, config_menu, task, mode], label="Examples (the shipped demo images)")

        with gr.Accordion("Checkpoints", open=False):
            table = gr.Dataframe(checkpoints.status_rows(store), headers=checkpoints.HEADERS, interactive=False,
                                 wrap=True, elem_id="checkpoints")
            downloaded = gr.Markdown(elem_id="downloaded")
            with gr.Row():
                refresh = gr.Button("Refresh the table")
                buttons = {name: gr.Button(f"Download {load_config(name).display}") for name in available_configs()}

        def choose_config(name):
            chosen = load_config(name)
            return (chosen.ddrm.task, str(chosen.ddrm.sigma_y), int(chosen.ddrm.steps),
                    gr.update(visible=is_conditional(name)), checkpoints.readiness(name, store))

        light = dict(concurrency_limit=None, show_progress="hidden")
        config_menu.change(choose_config, config_menu, [task, sigma_y, steps, guidance, ready],
                           api_name="choose_config", **light)
        gr.on([photo.upload, photo.input], lambda value: _describe_photo(value, uploads), photo, photo_info,
              api_name="describe_photo", **light)

        async def restore_photo(mode, config, task, sigma_y, steps, samples, seed, scale, label, photo, mask,
                                progress=gr.Progress()):
            try:
                request = read_request(mode=mode, config=config, task=task, sigma_y=sigma_y, steps=steps,
                                       samples=samples, seed=seed, classifier_scale=scale, class_choice=label,
                                       photo=photo, mask_file=mask, upload_root=uploads,
                                       max_pixels=max_pixels)
            except (ValueError, ConfigError) as err:
                raise gr.Error(_one_line(err), print_exception=False) from None
            outcome = await _run_cancellably(request, store, device, progress)
            return outcome.restored, outcome.gallery, outcome.degraded, outcome.report, ""

        running = restore.click(
            restore_photo, [mode, config_menu, task, sigma_y, steps, samples, seed, scale, label, photo, mask],
            [restored, gallery, degraded, result_report, said], api_name="restore", concurrency_limit=concurrency,
            concurrency_id=f"restore on {device}")
        cancel.click(lambda: "Cancelled: press Restore to run again.", None, said, cancels=[running], queue=False,
                     api_visibility="private")

        refresh.click(lambda: checkpoints.status_rows(store), None, table, api_name="checkpoint_status", **light)
        for name, button in buttons.items():
            button.click(_downloader(name, store), None, [downloaded, table], api_name=f"download_{name}",
                         concurrency_limit=1, concurrency_id="download")
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return app


def serve(app: gr.Blocks | None = None, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          inline: bool | None = None, block: bool = True, max_file_size: str | int = MAX_FILE_SIZE,
          **options) -> gr.Blocks:
    """Launch ``app`` (default: ``build_app(**options)``) on ``host``:``port`` (None: the first free
    port from 7860) and return it; ``app.local_url`` is its address, ``app.close()`` stops it.

    ``share`` asks Gradio for a public link (only when asked; it goes through Gradio's servers).
    ``inline``: shown in the notebook below the cell (None: when in a notebook). ``block``: wait
    until interrupted (a terminal), or return at once (a notebook, a test). ``max_file_size``: the
    largest upload accepted, such as ``"25mb"``.
    """
    app = app if app is not None else build_app(**options)
    app.launch(server_name=host, server_port=port, share=share, inline=inline, prevent_thread_lock=not block,
               max_file_size=max_file_size, show_error=True, quiet=not block, footer_links=["api", "settings"],
               theme=gr.themes.Default(**FONTS), css=CSS)
    return app


async def _run_cancellably(request, store, device, progress):
    """``run_request`` in a worker thread, its steps reported to ``progress``; if this task is
    cancelled, the sampler is stopped at its next step and awaited before the cancellation goes on."""
    stop = threading.Event()

    def on_step(done: int, total: int) -> None:
        if stop.is_set():
            raise RunCancelled("the restoration was cancelled")
        progress((done, total), desc="loading the networks" if done == 0 else "DDRM steps", unit="steps")

    work = asyncio.ensure_future(asyncio.to_thread(run_request, request, store=store, device=device, on_step=on_step))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([work])
        raise
    except MemoryError:
        raise gr.Error("The photo is too large for this device's memory: use a smaller photo or fewer samples",
                       print_exception=False) from None
    except (ValueError, OSError, RuntimeError) as err:
        if "out of memory" in str(err):
            raise gr.Error("The photo is too large for this device's memory: use a smaller photo or fewer samples",
                           print_exception=False) from None
        raise gr.Error(_one_line(err), print_exception=False) from None


def _downloader(name: str, store):
    """The handler of ``name``'s download button: its files fetched, each with a progress bar."""

    def download(progress=gr.Progress(track_tqdm=True)):
        return checkpoints.download(name, store), checkpoints.status_rows(store)

    return download


def _describe_photo(photo, uploads) -> str:
    """The line under the editor: the photo's size, and how many pixels the brush marked missing."""
    try:
        width, height, painted = painted_pixels(photo, uploads)
    except ValueError as err:
        return _one_line(err)
    if width is None:
        return ""
    if not painted:
        return f"Photo: {width}x{height}. For inpainting ({MASK_TASK}), paint the missing pixels with the brush."
    return f"Photo: {width}x{height}; {painted} pixels painted: missing for inpainting ({MASK_TASK})."


def _examples() -> list[list]:
    """The shipped demo images, each with a config and a task that suit it."""
    from ..demo import demo_entries
    from ..paths import DEMO_DIR

    rows = []
    for entry in demo_entries():
        face = entry["kind"] == "face"
        rows.append([str(DEMO_DIR / entry["file"]), "celeba_hq" if face else "imagenet_256",
                     "sr4" if face else "inp_box", "clean"])
    return rows


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
