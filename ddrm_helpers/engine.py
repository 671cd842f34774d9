"""The engine: given images or measurements, an operator and a config's networks, restore them.

Every front end makes its :class:`Inputs` and its :class:`Settings` (one frozen object: the task,
the noise, DDRM's knobs, the seed, the batch size, the device), then calls :func:`run` (which also
finds the checkpoints and loads the networks) or, with networks already loaded, :func:`restore`:

- :func:`~ddrm_helpers.runner.run_config`: clean images, degraded here (``y = H x`` plus noise);
- :func:`~ddrm_helpers.restore.restore_photo`: a user's photo is the measurement ``y``;
- :func:`~ddrm_helpers.evaluation.evaluate`: a data set, one image at a time, each with a generator
  of its own.

What they do with the :class:`Restoration` (results, metrics, files) is :mod:`ddrm_helpers.results`'
(which imports from here; the engine imports nothing of it).

Any size: the network's input size (``data.image_size``) is a tile, not the image's size. The
engine hands the sampler the network wrapped in a :class:`~ddrm_helpers.tiles.TiledDenoiser` (and
the classifier in a :class:`~ddrm_helpers.tiles.TiledClassifier`), with the operator built at the
image's own ``(height, width)``; an image of exactly one tile is the network's own call, as before.
``settings.batch_size`` is the most tiles the network sees at once.

Randomness: one ``torch.Generator`` makes every draw of a restoration, seeded with
``settings.seed`` unless the caller hands one in: the measurement noise first (one ``[N, M]``
draw), then the sampler's (see :mod:`ddrm_helpers.sampler`). A photo holds its own noise, so for it
the draw is made and not used: a seed then gives the sampler the same noise whether the measurement
was simulated here or handed in (tests/test_restore.py).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch

from . import validate
from .classes import class_name, resolve_classes
from .config import Config, learns_sigma
from .degradations import Degradation
from .demo import known_classes
from .errors import DegradationError
from .images import resize
from .paths import exp_dir
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .schedule import betas_from_config
from .store import CheckpointStore
from .tiles import TiledClassifier, TiledDenoiser, check_overlap


@dataclass
class Skipped:
    """A config that could not run, and why: one line, since the checkpoint table (or the download
    report printed where the download failed) already says the rest."""

    config: str
    display: str
    reason: str
    remedy: str
    missing: list[str] = field(default_factory=list)
    skipped: bool = True

    def __str__(self) -> str:
        return f"{self.display} skipped: {self.reason} — {self.remedy}"

    def _repr_html_(self) -> str:
        import html

        return (f"<p><b>{html.escape(self.display)}</b> skipped: {html.escape(self.reason)} — "
                f"{html.escape(self.remedy)}</p>")


LONG_RUN_SECONDS = 20.0  # a tiled run forecast to take longer is told how long, after its first step


@dataclass(frozen=True)
class Settings:
    """What a restoration does, with the config's defaults filled in and checked (:func:`resolve_settings`)."""

    task: str
    sigma_y: float  # [0, 1] pixel units
    steps: int
    eta: float
    eta_b: float
    seed: int
    num_samples: int = 1
    classifier_scale: float = 1.0  # used only by a config with a classifier
    batch_size: int = 1  # tiles (an image of the network's size is one tile) through the network at once
    device: torch.device = torch.device("cpu")
    tile_overlap: int | None = None  # pixels shared by neighbouring tiles; None: a quarter of a tile

    @property
    def sigma_0(self) -> float:
        """The noise std in the model's [-1, 1] range: the one conversion of ``sigma_y``."""
        return sigma_0_from_sigma_y(self.sigma_y)


@dataclass
class Inputs:
    """What a run restores: the operator, and either clean ``images`` to degrade (``y = H x`` plus
    noise drawn in the run) or a photo's ``measurement`` ``y`` [N, M] that holds its own noise."""

    degradation: Degradation
    names: list[str]
    sources: list
    images: torch.Tensor | None = None
    measurement: torch.Tensor | None = None
    original: torch.Tensor | None = None  # what PSNR/SSIM are measured against, if anything
    classes: object = None  # ImageNet labels as given (an index or name, or one per image); None: the defaults
    notes: list[str] = field(default_factory=list)
    sigma_y_estimated: bool = False

    @property
    def count(self) -> int:
        return (self.measurement if self.images is None else self.images).shape[0]


@dataclass
class Restoration:
    """What :func:`restore` made: the measurement, its picture and natural inverse, every sample."""

    measurement: torch.Tensor  # y [N, M], on the device
    degraded: torch.Tensor  # y shown as an image (a low-resolution image for SR)
    baseline: torch.Tensor  # the degraded image at full size (bicubic upscale for SR)
    samples: torch.Tensor  # [N, K, C, H, W], clipped to [-1, 1]
    classes: list[int] | None
    device: torch.device
    seconds: float

    @property
    def restored(self) -> torch.Tensor:
        """The first sample of each image, ``[N, C, H, W]``."""
        return self.samples[:, 0]


def resolve_settings(config: Config, task, sigma_y, steps, eta, eta_b, seed, num_samples, *,
                     classifier_scale=None, batch_size=None, device=None, out_dir=None, save=False,
                     degradation_params=None, callback=None, tile_overlap=None) -> Settings:
    """The run's settings: what is given, else the config's; a bad value raises ``ValueError``.

    Every argument of a run is checked here (:mod:`ddrm_helpers.validate`), before anything is
    downloaded or loaded: the settings, and ``degradation_params``, ``callback``, ``out_dir`` when
    ``save`` (the default folder when it is None), and the config's diffusion schedule. ``device``
    None is cuda when a GPU is visible, else cpu.
    """
    plan = config.ddrm
    timesteps = len(betas_from_config(config))  # an unknown schedule is refused here, before anything runs
    task = plan.task if task is None else task
    if not isinstance(task, str) or not task:
        raise DegradationError(f"task is the name of a degradation (sr4, deblur_gauss, ...; docs/ddrm.md); "
                               f"got {task!r}")
    scale = 1.0
    if classifier_scale is not None or "classifier" in config:
        scale = validate.check_classifier_scale(config.classifier.classifier_scale if classifier_scale is None
                                                else classifier_scale)
    batch = int(config.sampling.batch_size) if batch_size is None else validate.check_count(
        batch_size, "batch_size", "how many images go through the network at once, 1 or more")
    settings = Settings(
        task=task,
        sigma_y=validate.check_sigma_y(plan.sigma_y if sigma_y is None else sigma_y),
        steps=validate.check_steps(plan.steps if steps is None else steps, timesteps),
        eta=validate.check_eta(plan.eta if eta is None else eta, "eta"),
        eta_b=validate.check_eta(plan.eta_b if eta_b is None else eta_b, "eta_b"),
        seed=validate.check_seed(seed),
        num_samples=validate.check_count(num_samples, "num_samples",
                                         "how many restorations to draw per image, 1 or more"),
        classifier_scale=scale,
        batch_size=batch,
        device=validate.check_device(device) or default_device(),
        tile_overlap=None if tile_overlap is None else check_overlap(tile_overlap, int(config.data.image_size)),
    )
    if degradation_params is not None and not isinstance(degradation_params, dict):
        raise DegradationError(f"degradation_params is a dict of make_degradation's parameters (a kernel, a "
                               f"seed, ...); got {type(degradation_params).__name__}")
    if callback is not None and not callable(callback):
        raise validate.ArgumentError(f"callback is a function called after every step; got {callback!r}")
    if save:
        if out_dir is None:
            validate.check_out_dir(exp_dir() / "image_samples", "the default output folder")
        else:
            validate.check_out_dir(out_dir)
    return settings


def check_classes(config: Config, classes, count: int) -> list[int] | None:
    """``classes`` as one ImageNet index per image (a bad label raises ``ClassLabelError``), or None
    when none are given or the config is not class-conditional (which is said)."""
    if classes is None:
        return None
    if "classifier" not in config.checkpoints:
        print(f"{config.display} is not class-conditional: the classes given are not used.", flush=True)
        return None
    return resolve_classes(classes, count)


def load_networks(config: Config, store: CheckpointStore | None = None, *, device=None,
                  download: bool | None = None, progress: bool = True):
    """The config's networks on ``device`` (:func:`~ddrm_helpers.models.load_pretrained`), or the
    :class:`Skipped` that says in one line why they cannot be had.

    ``download``: None fetches a missing file unless its download already failed in this process;
    True tries again; False never downloads.
    """
    store = store or CheckpointStore()
    found, problems = store.locate(config, download="auto" if download is None else download, progress=progress,
                                   quiet=not progress)
    if problems:
        failed = any(p.state == "failed" for p in problems)
        reason = "; ".join(p.phrase() for p in problems)
        where = "the download report above" if failed else "the checkpoint table above"
        shipped = [p.remedy for p in problems if p.remedy]  # a file that ships with the package
        remedy = shipped[0] if shipped else \
            f"see {where}, or run `python -m ddrm_helpers download --config {config.name}`"
        return Skipped(config.name, config.display, reason, remedy, [p.file for p in problems])

    from .models import load_pretrained

    return load_pretrained(config, device=device or default_device(), paths=found, store=store)


def run(config: Config, settings: Settings, inputs: Inputs, *, store: CheckpointStore | None = None,
        download: bool | None = None, progress: bool = True, callback=None) -> Restoration | Skipped:
    """Everything after the inputs are made: the classes checked, the checkpoints found (else a
    :class:`Skipped`, printed), the networks loaded, the inputs restored."""
    inputs = dataclasses.replace(inputs, classes=check_classes(config, inputs.classes, inputs.count))
    networks = load_networks(config, store, device=settings.device, download=download, progress=progress)
    if isinstance(networks, Skipped):
        print(networks, flush=True)
        return networks
    return restore(config, networks, inputs, settings, callback=callback, progress=progress)


def restore(config: Config, networks, inputs: Inputs, settings: Settings, *, generator: torch.Generator | None = None,
            callback=None, progress: bool = True, verbose: bool = True) -> Restoration:
    """Restore ``inputs`` with ``networks`` (``model``, ``classifier``: what ``load_pretrained`` returns).

    ``inputs.classes`` (one index per image, or None) go to a class-conditional model; where they
    are None, a demo image gets its own class and any other image the classifier's best guess,
    which is printed when ``verbose``. ``generator`` (default: one seeded with ``settings.seed``,
    on the device) makes every draw; ``callback`` gets the sampler's dict after every step (see
    :func:`sample_measurements`).
    """
    device = settings.device
    started = time.perf_counter()
    degradation = inputs.degradation.to(device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
    photo = inputs.measurement is not None
    noise = settings.sigma_0 * torch.randn(inputs.count, degradation.measurement_dim, generator=generator,
                                           device=device, dtype=degradation.singulars().dtype)
    y = inputs.measurement.to(device) if photo else degradation.H(inputs.images.to(device)) + noise
    baseline = natural_inverse(degradation, y)
    tile = int(config.data.image_size)
    classes = inputs.classes
    if networks.classifier is not None and classes is None:
        classes = _default_classes(inputs.sources, networks.classifier, resize(baseline, tile), inputs.names,
                                   verbose)
    samples = sample_measurements(
        networks, y, degradation, settings, classes=classes, generator=generator, callback=callback,
        progress=progress, betas=betas_from_config(config), learned_sigma=learns_sigma(config), tile=tile,
        verbose=verbose,
    )
    return Restoration(measurement=y, degraded=degradation.degraded_image(y), baseline=baseline, samples=samples,
                       classes=classes, device=device, seconds=time.perf_counter() - started)


def sample_measurements(networks, y: torch.Tensor, degradation, settings: Settings, *, classes, generator,
                        callback=None, progress: bool = True, betas: torch.Tensor | None = None,
                        learned_sigma: bool | None = None, tile: int | None = None,
                        verbose: bool = False) -> torch.Tensor:
    """``settings.num_samples`` DDRM restorations of each measurement in ``y`` [N, M], clipped to
    [-1, 1], as ``[N, K, C, H, W]``.

    Each measurement is repeated K times, and the N*K rows (image-major: row ``n*K + k``) go to
    :func:`ddrm_sample` one batch after the other, all drawing from ``generator``. ``tile`` (the
    network's size; a run passes its config's) tiles the image: the networks are wrapped in
    :class:`~ddrm_helpers.tiles.TiledDenoiser` / :class:`~ddrm_helpers.tiles.TiledClassifier`
    with ``settings.tile_overlap``, and a batch holds as many rows as fit ``settings.batch_size``
    tiles (one at least); the network sees at most ``batch_size`` tiles at once. Without ``tile``
    the networks are called as they are, ``batch_size`` rows at a time. With ``verbose`` and more
    than one tile per image, a line says before the run how many tiles and network evaluations it
    takes, and another after its first step how long the whole run should take.

    ``callback`` gets the sampler's dict plus ``batch_start``, the row of the batch's first image,
    so that a callback can follow one row (:func:`~ddrm_helpers.progress.collect_frames`), and
    ``batch`` / ``batches``, which batch of how many this is (a progress bar's total is
    ``batches * steps``).
    ``betas`` and ``learned_sigma`` go to :func:`ddrm_sample`; a run passes its config's
    (:func:`~ddrm_helpers.schedule.betas_from_config`, :func:`~ddrm_helpers.config.learns_sigma`).
    """
    k = settings.num_samples
    model, classifier, rows_per_batch = networks.model, networks.classifier, settings.batch_size
    if tile is not None:
        options = dict(overlap=settings.tile_overlap, batch_size=settings.batch_size)
        model = TiledDenoiser(model, tile, **options)
        classifier = None if classifier is None else TiledClassifier(classifier, tile, **options)
        grid = model.grid(degradation.image_shape[1:])
        rows_per_batch = max(1, settings.batch_size // grid.count)
        if verbose and grid.count > 1:
            callback = _announce(grid, y.shape[0] * k, rows_per_batch, settings, classifier is not None, callback)
    rows = y.repeat_interleave(k, dim=0)
    row_classes = None if classes is None else torch.tensor(classes, device=y.device).repeat_interleave(k)
    restored = []
    starts = range(0, rows.shape[0], rows_per_batch)
    for batch, start in enumerate(starts):
        part = slice(start, start + rows_per_batch)
        restored.append(ddrm_sample(
            model, rows[part], degradation, settings.sigma_0, steps=settings.steps, eta=settings.eta,
            eta_b=settings.eta_b, classifier=classifier,
            classes=None if row_classes is None else row_classes[part], classifier_scale=settings.classifier_scale,
            generator=generator, progress=progress, betas=betas, learned_sigma=learned_sigma,
            callback=None if callback is None else functools.partial(_with_batch, callback, start, batch,
                                                                     len(starts)),
        ))
    return torch.cat(restored).clamp(-1, 1).reshape(y.shape[0], k, *degradation.image_shape)


def _with_batch(callback, start: int, batch: int, batches: int, info: dict) -> None:
    callback({**info, "batch_start": start, "batch": batch, "batches": batches})


def _announce(grid, rows: int, rows_per_batch: int, settings: Settings, guided: bool, callback):
    """Say what a tiled run costs before it starts (tiles, network evaluations), and after its first
    step how long the whole run should take; returns the callback to hand to the sampler."""
    height, width = grid.canvas
    evaluations = grid.count * settings.steps * rows
    print(f"{width}x{height} (width x height) is restored as {grid.count} tiles of {grid.tile[1]}x{grid.tile[0]} "
          f"(overlap {grid.overlap}): {settings.steps} steps x {grid.count} tiles x {rows} restoration(s) = "
          f"{evaluations:,} network evaluations{' (and as many of the classifier)' if guided else ''}.", flush=True)
    batches = -(-rows // rows_per_batch)
    started = time.perf_counter()

    def timed(info: dict) -> None:
        if info["i"] == 0 and info["batch_start"] == 0:
            first = time.perf_counter() - started
            total = first * settings.steps * batches
            if total >= LONG_RUN_SECONDS:  # a run of seconds needs no forecast
                print(f"The first step took {_duration(first)}: the whole run should take about "
                      f"{_duration(total)}.", flush=True)
        if callback is not None:
            callback(info)

    return timed


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def natural_inverse(degradation, y: torch.Tensor) -> torch.Tensor:
    """What a user would compare against: the degraded image at full size.

    The measurement as a picture (blurred, masked, grey, noisy), upscaled bicubically where it is
    smaller (super-resolution), clipped to [-1, 1].
    """
    image = degradation.degraded_image(y)
    size = tuple(degradation.image_shape[1:])
    if tuple(image.shape[-2:]) != size:
        image = torch.nn.functional.interpolate(image, size=size, mode="bicubic", align_corners=False)
    return image.clamp(-1, 1)


def _default_classes(sources, classifier, images: torch.Tensor, names: list[str], verbose: bool) -> list[int]:
    """The demo images' own classes; for other images, the classifier's top guess at t = 0 on the whole
    image at the classifier's size (said when ``verbose``): one class for the whole photo, which
    guides every tile."""
    classes = known_classes(sources)
    unknown = [i for i, c in enumerate(classes) if c is None]
    if unknown:
        guesses = propose_classes(classifier, images[unknown])
        for i, top in zip(unknown, guesses):
            if verbose:
                listed = ", ".join(f"{class_name(c)} ({c}, p={p:.2f})" for c, p in top)
                print(f"No class given for {names[i]}: the classifier proposes {listed}; using "
                      f"{class_name(top[0][0])}. Pass classes=... to choose.", flush=True)
            classes[i] = top[0][0]
    return classes


@torch.no_grad()
def propose_classes(classifier, images: torch.Tensor, k: int = 3) -> list[list[tuple[int, float]]]:
    """The classifier's top ``k`` classes for each image (at t = 0, the noise-free end)."""
    t = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
    probs = torch.softmax(classifier(images, t).float(), dim=-1)
    top = probs.topk(k, dim=-1)
    return [[(int(c), float(p)) for c, p in zip(cs, ps)] for cs, ps in zip(top.indices.cpu(), top.values.cpu())]


def default_device() -> torch.device:
    """cuda when a GPU is visible, else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
