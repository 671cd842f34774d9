"""The engine: given images or measurements, an operator and a config's networks, restore them.

Every front end makes its :class:`Inputs` and its :class:`Settings` (one frozen object: the task,
the noise, DDRM's knobs, the seed, the batch size, the device), then calls :func:`run` (which also
finds the checkpoints and loads the networks) or, with networks already loaded, :func:`restore`:

- :func:`~ddrm_helpers.runner.run_config`: clean images, degraded here (``y = H x`` plus noise);
- :func:`~ddrm_helpers.restore.restore_photo`: a user's photo is the measurement ``y``;
- :func:`~ddrm_helpers.evaluation.evaluate`: a data set, one image at a time, each with a generator
  of its own.

What they do with the :class:`Restoration` (results, metrics, files) is :mod:`ddrm_helpers.results`'.

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
from .paths import exp_dir
from .results import Skipped
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .schedule import betas_from_config
from .store import CheckpointStore


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
    batch_size: int = 1  # rows through the network at once
    device: torch.device = torch.device("cpu")

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
                     degradation_params=None, callback=None) -> Settings:
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
    :class:`~ddrm_helpers.results.Skipped` that says in one line why they cannot be had.

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
        remedy = f"see {where}, or run `python -m ddrm_helpers download --config {config.name}`"
        return Skipped(config.name, config.display, reason, remedy, [p.file for p in problems])

    from .models import load_pretrained

    return load_pretrained(config, device=device or default_device(), paths=found, store=store)


def run(config: Config, settings: Settings, inputs: Inputs, *, store: CheckpointStore | None = None,
        download: bool | None = None, progress: bool = True, callback=None) -> Restoration | Skipped:
    """Everything after the inputs are made: the classes checked, the checkpoints found (else a
    :class:`~ddrm_helpers.results.Skipped`, printed), the networks loaded, the inputs restored."""
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
    classes = inputs.classes
    if networks.classifier is not None and classes is None:
        classes = _default_classes(inputs.sources, networks.classifier, baseline, inputs.names, verbose)
    samples = sample_measurements(
        networks, y, degradation, settings, classes=classes, generator=generator, callback=callback,
        progress=progress, betas=betas_from_config(config), learned_sigma=learns_sigma(config),
    )
    return Restoration(measurement=y, degraded=degradation.degraded_image(y), baseline=baseline, samples=samples,
                       classes=classes, device=device, seconds=time.perf_counter() - started)


def sample_measurements(networks, y: torch.Tensor, degradation, settings: Settings, *, classes, generator,
                        callback=None, progress: bool = True, betas: torch.Tensor | None = None,
                        learned_sigma: bool | None = None) -> torch.Tensor:
    """``settings.num_samples`` DDRM restorations of each measurement in ``y`` [N, M], clipped to
    [-1, 1], as ``[N, K, C, H, W]``.

    Each measurement is repeated K times, and the N*K rows (image-major: row ``n*K + k``) go to
    :func:`ddrm_sample` in batches of ``settings.batch_size``, one after the other, all drawing
    from ``generator``. ``callback`` gets the sampler's dict plus ``batch_start``, the row of the
    batch's first image, so that a callback can follow one row (:func:`~ddrm_helpers.progress.collect_frames`).
    ``betas`` and ``learned_sigma`` go to :func:`ddrm_sample`; a run passes its config's
    (:func:`~ddrm_helpers.schedule.betas_from_config`, :func:`~ddrm_helpers.config.learns_sigma`).
    """
    k = settings.num_samples
    batch_size = settings.batch_size
    rows = y.repeat_interleave(k, dim=0)
    row_classes = None if classes is None else torch.tensor(classes, device=y.device).repeat_interleave(k)
    restored = []
    for start in range(0, rows.shape[0], batch_size):
        part = slice(start, start + batch_size)
        restored.append(ddrm_sample(
            networks.model, rows[part], degradation, settings.sigma_0, steps=settings.steps, eta=settings.eta,
            eta_b=settings.eta_b, classifier=networks.classifier,
            classes=None if row_classes is None else row_classes[part], classifier_scale=settings.classifier_scale,
            generator=generator, progress=progress, betas=betas, learned_sigma=learned_sigma,
            callback=None if callback is None else functools.partial(_with_batch_start, callback, start),
        ))
    return torch.cat(restored).clamp(-1, 1).reshape(y.shape[0], k, *degradation.image_shape)


def _with_batch_start(callback, start: int, info: dict) -> None:
    callback({**info, "batch_start": start})


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
    """The demo images' own classes; for other images, the classifier's top guess (said when ``verbose``)."""
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
