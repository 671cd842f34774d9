"""`run_config`: one config, end to end: images in, degraded, restored, measured, saved.

>>> result = run_config("celeba_hq")                 # the demo face, 4x super-resolution
>>> result = run_config("imagenet_256", task="inp_box", sigma_y=0.0, images=["my_photo.jpg"])
>>> show_results(result)

A config whose checkpoints cannot be had returns a `Skipped` result naming the file and the remedy,
never an exception, so that "run all" in the notebook goes on. Bad input (a file that is not an
image, an unknown task, a class name that is not an ImageNet class) raises a ``ValueError`` that
says what is wrong.

``num_samples=K`` restores every input K times in one batched call (the measurement repeated K
times) and adds the samples' mean and per-pixel spread to the result. The same engine restores a
user's own degraded photo (:func:`ddrm_helpers.restore.restore_photo`) and a whole data set
(:func:`ddrm_helpers.evaluation.evaluate`).

Sizes: by default (``fit="crop"``, the paper's protocol) each image's centred square is resized to
the model's size; ``fit="pad"`` mirrors its edges out to a square first; ``fit="full"`` restores it
at its own size, in tiles of the model's (:mod:`ddrm_helpers.tiles`): it is degraded at full size
(for super-resolution by ``f``, cut to a multiple of ``f`` first, and said), restored, and measured
at full size. Images of different sizes are restored one size after the other, and the result's
image fields are then lists (:class:`~ddrm_helpers.results.RunResult`).

A thin front end: the images become :class:`~ddrm_helpers.engine.Inputs`, the arguments a
:class:`~ddrm_helpers.engine.Settings`; :func:`ddrm_helpers.engine.run` restores them and
:func:`ddrm_helpers.results.report` measures, saves and prints. Randomness: one ``torch.Generator``
seeded with ``seed`` makes every draw of a run, the measurement noise first (one ``[N, M]`` draw),
then the sampler's (see :mod:`ddrm_helpers.engine`).
"""

from __future__ import annotations

import os

import torch

from . import budget, engine
from .canvas import plan_canvas
from .config import load_config
from .degradations import load_mask, make_degradation, scale_factor
from .demo import default_images
from .engine import Inputs, Skipped, resolve_settings
from .errors import ImageError
from .images import load_image, load_images
from .results import RunResult, combine, finish, image_names, make_result, report
from .store import CheckpointStore

FITS = ("crop", "pad", "full")


def run_config(
    name: str,
    images=None,
    task: str | None = None,
    sigma_y: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    num_samples: int = 1,
    classes=None,
    fit: str = "crop",
    tile_overlap: int | None = None,
    eta: float | None = None,
    eta_b: float | None = None,
    classifier_scale: float | None = None,
    degradation_params: dict | None = None,
    batch_size: int | None = None,
    store: CheckpointStore | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    save: bool = True,
    download: bool | None = None,
    progress: bool = True,
    callback=None,
    registry=None,
) -> RunResult | Skipped:
    """Degrade and restore ``images`` with config ``name``; see the module docstring.

    ``images``: paths, PIL images, arrays, or tensors in [-1, 1] (see :mod:`ddrm_helpers.images`;
    default: the shipped demo images that suit the config). ``task``, ``sigma_y`` (in [0, 1] pixel
    units), ``steps``, ``eta``, ``eta_b`` and ``classifier_scale`` default to the config's.
    ``num_samples``: restorations per image (their mean and spread are in the result).
    ``classes`` (Config 3): one ImageNet label (index or name) for all images or one per image; by
    default the demo images' own classes, or for other images the classifier's best guess, which
    is printed. ``degradation_params`` go to :func:`make_degradation` (a kernel, a mask, a seed).
    ``fit``: ``"crop"``, ``"pad"`` or ``"full"`` (see the module docstring); ``tile_overlap``: with
    ``"full"``, pixels shared by neighbouring tiles (default a quarter of a tile).
    ``callback`` gets the sampler's dict after every step (see :func:`~ddrm_helpers.engine.sample_measurements`).
    Outputs go to a new folder under ``out_dir`` (default ``exp/image_samples``) unless ``save``
    is False.

    Checkpoints come from ``store`` (a :class:`~ddrm_helpers.store.CheckpointStore`; ``cache_dir``
    and ``registry`` are the older way to say the same). ``download``: None (the default) fetches a
    missing file unless its download already failed in this process (then the config is skipped in
    one line, since the failure was reported where it happened); True tries again; False never
    downloads.
    """
    config = load_config(name)
    settings = resolve_settings(config, task, sigma_y, steps, eta, eta_b, seed, num_samples,
                                classifier_scale=classifier_scale, batch_size=batch_size, device=device,
                                out_dir=out_dir, save=save, degradation_params=degradation_params,
                                callback=callback, tile_overlap=tile_overlap)
    if fit not in FITS:
        raise ImageError(f"fit={fit!r}: give 'crop' (the centred square at the model's size), 'pad' (mirrored out "
                         "to a square) or 'full' (each image at its own size)")
    size = int(config.data.image_size)
    sources = list(default_images(config)) if images is None else _as_list(images)
    if not sources:
        raise ValueError("no images given")
    store = CheckpointStore.of(store, cache_dir, registry)
    if fit == "full":
        parts = _full_size_inputs(config, settings, sources, degradation_params or {}, classes)
        return _run_parts(config, settings, parts, store=store, download=download, progress=progress,
                          callback=callback, out_dir=out_dir, save=save)
    x = load_images(sources, size, fit=fit)  # bad input fails here, before any download
    inputs = Inputs(
        degradation=make_degradation(settings.task, size, channels=x.shape[1], **(degradation_params or {})),
        names=image_names(sources), sources=sources, images=x, original=x, classes=classes,
    )
    restoration = engine.run(config, settings, inputs, store=store, download=download, progress=progress,
                             callback=callback)
    return report(config, settings, inputs, restoration, out_dir=out_dir, save=save)


def _full_size_inputs(config, settings, sources, params: dict, classes) -> list[tuple]:
    """The images at their own sizes, grouped by size: ``(indices, inputs, canvas)`` per group. Every
    image is loaded, its memory checked (:func:`~ddrm_helpers.budget.check_canvas`), every operator
    built and the classes checked here, before anything is downloaded."""
    task, size = settings.task, int(config.data.image_size)
    factor = scale_factor(task)
    names = image_names(sources)
    labels = engine.check_classes(config, classes, len(sources))
    groups: dict = {}
    for i, source in enumerate(sources):
        image = load_image(source)
        _, height, width = image.shape
        if height < factor or width < factor:
            raise ImageError(f"{names[i]} is {width}x{height}: {task} needs at least {factor}x{factor} pixels")
        fitted = (height - height % factor, width - width % factor)
        notes = []
        if fitted != (height, width):
            top, left = (height % factor) // 2, (width % factor) // 2
            image = image[:, top:top + fitted[0], left:left + fitted[1]]
            notes.append(f"{names[i]} is {width}x{height}: cut to its centred {fitted[1]}x{fitted[0]}, a multiple of "
                         f"{task}'s factor {factor}.")
        canvas = plan_canvas((fitted[0] // factor, fitted[1] // factor), factor, size)
        if canvas.describe():
            notes.append(f"{names[i]}: {canvas.describe()}")
        groups.setdefault(canvas, []).append((i, image, notes))
    parts = []
    for canvas, members in groups.items():
        budget.check_canvas(config, settings, canvas, images=len(members), what=names[members[0][0]])
        extra = dict(params)
        if "mask" in extra:
            where = f"inp_mask on images of {canvas.size[1]}x{canvas.size[0]} (width x height)"
            extra["mask"] = canvas.pad_image(load_mask(extra["mask"], (3, *canvas.size), where))
        indices = [i for i, _, _ in members]
        originals = torch.stack([image for _, image, _ in members])
        inputs = Inputs(
            degradation=make_degradation(task, canvas.padded, channels=originals.shape[1], **extra),
            names=[names[i] for i in indices], sources=[sources[i] for i in indices],
            images=torch.stack([canvas.pad_image(image) for image in originals]), original=originals,
            classes=None if labels is None else [labels[i] for i in indices],
            notes=[note for _, _, member_notes in members for note in member_notes],
        )
        parts.append((indices, inputs, canvas))
    return parts


def _run_parts(config, settings, parts, *, store, download, progress, callback, out_dir, save) -> RunResult | Skipped:
    """Restore each group of same-size images, with the networks loaded once and one generator for
    the whole run, and hand back one result."""
    for note in (note for _, inputs, _ in parts for note in inputs.notes):
        print(note, flush=True)
    networks = engine.load_networks(config, store, device=settings.device, download=download, progress=progress)
    if isinstance(networks, Skipped):
        print(networks, flush=True)
        return networks
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    results = []
    for indices, inputs, canvas in parts:
        restoration = engine.restore(config, networks, inputs, settings, generator=generator, callback=callback,
                                     progress=progress)
        results.append((indices, make_result(config, settings, inputs, canvas.cut_restoration(restoration))))
    return finish(combine(results), out_dir=out_dir, save=save)


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return [images]
