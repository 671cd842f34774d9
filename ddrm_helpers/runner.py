"""`run_config`: one config, end to end: images in, degraded, restored, measured, saved.

>>> result = run_config("celeba_hq")                 # the demo face, 4x super-resolution
>>> result = run_config("imagenet_256", task="inp_box", sigma_y=0.0, images=["my_photo.jpg"])
>>> show_results(result)

A config whose checkpoints cannot be had returns a `Skipped` result naming the file and the remedy,
never an exception, so that "run all" in the notebook goes on. Bad input (a file that is not an
image, an unknown task, a class name that is not an ImageNet class) raises a ``ValueError`` that
says what is wrong.

``num_samples=K`` restores every input K times in one batched call (the measurement repeated K
times) and adds the samples' mean and per-pixel spread to the result. The same machinery restores a
user's own degraded photo: :func:`ddrm_helpers.restore.restore_photo`.

Randomness: one ``torch.Generator`` seeded with ``seed`` makes every draw of a run, the measurement
noise first (one ``[N, M]`` draw), then the sampler's (see :mod:`ddrm_helpers.sampler`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from . import validate
from .classes import class_name, resolve_classes
from .config import Config, learns_sigma, load_config
from .degradations import Degradation, make_degradation
from .errors import DegradationError
from .images import describe, load_images, save_image
from .metrics import psnr, ssim
from .paths import DEMO_DIR, exp_dir
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .schedule import betas_from_config
from .store import CheckpointStore


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


@dataclass
class RunResult:
    """What one run produced. Images are CPU tensors in [-1, 1], one row per input image.

    A run of :func:`run_config` degrades ``original`` itself; a run of
    :func:`~ddrm_helpers.restore.restore_photo` (``from_photo``) starts from the user's photo,
    which is ``degraded``, and has an ``original`` only when a reference was given.
    """

    config: str
    display: str
    task: str
    sigma_y: float
    steps: int
    eta: float
    eta_b: float
    seed: int
    names: list[str]
    original: torch.Tensor | None  # None for a photo restored without a reference
    degraded: torch.Tensor  # the measurement y shown as an image (a low-resolution image for SR)
    baseline: torch.Tensor  # the degraded image at full size (bicubic upscale for SR), for comparison
    restored: torch.Tensor  # the first sample of each image
    metrics: list[dict]  # against the original; empty when there is none
    classes: list[int] | None = None
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    skipped: bool = False
    num_samples: int = 1
    samples: torch.Tensor | None = None  # [N, K, C, H, W]: every sample of every image
    mean: torch.Tensor | None = None  # the samples' mean, when K >= 2
    spread: torch.Tensor | None = None  # [N, 1, H, W]: per-pixel std across the samples, [0, 1] units, K >= 2
    from_photo: bool = False
    sigma_y_estimated: bool = False
    notes: list[str] = field(default_factory=list)  # what was done to the input to make it fit

    @property
    def finite(self) -> bool:
        """False when the restoration holds NaN or infinity (broken weights, or settings that diverge)."""
        return bool(torch.isfinite(self.samples if self.samples is not None else self.restored).all())

    def __str__(self) -> str:
        estimated = " (estimated)" if self.sigma_y_estimated else ""
        inputs = "1 photo" if self.from_photo else f"{len(self.names)} image(s)"
        samples = f", {self.num_samples} samples each" if self.num_samples > 1 else ""
        lines = [f"{self.display}: {self.task}, sigma_y {self.sigma_y:.3g}{estimated}, {self.steps} steps, "
                 f"{inputs}{samples} in {self.seconds:.1f} s on {self.device}"]
        if not self.finite:
            lines[0] += (" — FAILED: the restoration is not finite (NaN or infinity); the weights hold "
                         "non-finite values or the settings diverge")
        for m in self.metrics:
            lines.append(f"  {m['name']}: restored PSNR {m['psnr_restored']:.2f} dB / SSIM {m['ssim_restored']:.3f}"
                         f"; degraded PSNR {m['psnr_degraded']:.2f} dB / SSIM {m['ssim_degraded']:.3f}")
        if self.out_dir:
            lines.append(f"  saved in {self.out_dir}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    """What a run does, with the config's defaults filled in and checked."""

    task: str
    sigma_y: float
    steps: int
    eta: float
    eta_b: float
    seed: int
    num_samples: int


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
    notes: list[str] = field(default_factory=list)
    sigma_y_estimated: bool = False


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
    ``callback`` gets the sampler's dict after every step (see :func:`sample_measurements`).
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
                                callback=callback)
    size = int(config.data.image_size)
    sources = list(default_images(config)) if images is None else _as_list(images)
    if not sources:
        raise ValueError("no images given")
    x = load_images(sources, size)  # bad input fails here, before any download
    inputs = Inputs(
        degradation=make_degradation(settings.task, size, channels=x.shape[1], **(degradation_params or {})),
        names=image_names(sources), sources=sources, images=x, original=x,
    )
    return restore_inputs(config, settings, inputs, classes=classes, classifier_scale=classifier_scale,
                          batch_size=batch_size, store=CheckpointStore.of(store, cache_dir, registry), device=device,
                          out_dir=out_dir, save=save, download=download, progress=progress, callback=callback)


def resolve_settings(config: Config, task, sigma_y, steps, eta, eta_b, seed, num_samples, *,
                     classifier_scale=None, batch_size=None, device=None, out_dir=None, save=False,
                     degradation_params=None, callback=None) -> Settings:
    """The run's settings: what is given, else the config's; a bad value raises ``ValueError``.

    Every argument of a run is checked here (:mod:`ddrm_helpers.validate`), before anything is
    downloaded or loaded: the settings, and ``classifier_scale``, ``batch_size``, ``device``,
    ``degradation_params``, ``callback``, ``out_dir`` when ``save`` (the default folder when it
    is None), and the config's diffusion schedule.
    """
    plan = config.ddrm
    timesteps = len(betas_from_config(config))  # an unknown schedule is refused here, before anything runs
    task = plan.task if task is None else task
    if not isinstance(task, str) or not task:
        raise DegradationError(f"task is the name of a degradation (sr4, deblur_gauss, ...; docs/ddrm.md); "
                               f"got {task!r}")
    settings = Settings(
        task=task,
        sigma_y=validate.check_sigma_y(plan.sigma_y if sigma_y is None else sigma_y),
        steps=validate.check_steps(plan.steps if steps is None else steps, timesteps),
        eta=validate.check_eta(plan.eta if eta is None else eta, "eta"),
        eta_b=validate.check_eta(plan.eta_b if eta_b is None else eta_b, "eta_b"),
        seed=validate.check_seed(seed),
        num_samples=validate.check_count(num_samples, "num_samples",
                                         "how many restorations to draw per image, 1 or more"),
    )
    if classifier_scale is not None or "classifier" in config:
        validate.check_classifier_scale(config.classifier.classifier_scale if classifier_scale is None
                                        else classifier_scale)
    if batch_size is not None:
        validate.check_count(batch_size, "batch_size", "how many images go through the network at once, 1 or more")
    validate.check_device(device)
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


def restore_inputs(
    config: Config,
    settings: Settings,
    inputs: Inputs,
    *,
    classes=None,
    classifier_scale: float | None = None,
    batch_size: int | None = None,
    store: CheckpointStore | None = None,
    device=None,
    out_dir=None,
    save: bool = True,
    download: bool | None = None,
    progress: bool = True,
    callback=None,
) -> RunResult | Skipped:
    """The part of a run that needs the network: checkpoints, measurement, sampling, result, files.

    Shared by :func:`run_config` (clean images, degraded here) and
    :func:`~ddrm_helpers.restore.restore_photo` (a photo's measurement); the keyword arguments are
    theirs.
    """
    if classes is not None:
        if "classifier" in config.checkpoints:
            classes = resolve_classes(classes, len(inputs.sources))
        else:
            print(f"{config.display} is not class-conditional: the classes given are not used.", flush=True)
            classes = None

    paths = _checkpoints(config, store or CheckpointStore(), download, progress)
    if isinstance(paths, Skipped):
        print(paths, flush=True)
        return paths

    from .models import load_pretrained

    device = torch.device(device) if device is not None else _default_device()
    started = time.perf_counter()
    networks = load_pretrained(config, device=device, paths=paths)
    degradation = inputs.degradation.to(device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    sigma_0 = sigma_0_from_sigma_y(settings.sigma_y)  # the one conversion to the model's [-1, 1] range

    # The measurement noise is the generator's first draw, then come the sampler's. A photo holds its
    # own noise, so for it the draw is made and not used: a seed then gives the sampler the same
    # noise whether the measurement was simulated here or handed in (tests/test_restore.py).
    photo = inputs.measurement is not None
    count = (inputs.measurement if photo else inputs.images).shape[0]
    noise = sigma_0 * torch.randn(count, degradation.measurement_dim, generator=generator, device=device,
                                  dtype=degradation.singulars().dtype)
    y = inputs.measurement.to(device) if photo else degradation.H(inputs.images.to(device)) + noise
    baseline = natural_inverse(degradation, y)
    if networks.classifier is not None and classes is None:
        classes = _default_classes(inputs.sources, networks.classifier, baseline, inputs.names)

    scale = 1.0
    if networks.classifier is not None:
        scale = float(config.classifier.classifier_scale if classifier_scale is None else classifier_scale)
    samples = sample_measurements(
        networks, y, degradation, sigma_0, settings, classes=classes, classifier_scale=scale, generator=generator,
        batch_size=batch_size or int(config.sampling.batch_size), callback=callback, progress=progress,
        betas=betas_from_config(config), learned_sigma=learns_sigma(config),
    )
    seconds = time.perf_counter() - started

    several = settings.num_samples > 1
    result = RunResult(
        config=config.name, display=config.display, task=settings.task, sigma_y=settings.sigma_y,
        steps=settings.steps, eta=settings.eta, eta_b=settings.eta_b, seed=settings.seed, names=inputs.names,
        original=None if inputs.original is None else inputs.original.cpu(),
        degraded=degradation.degraded_image(y).cpu(), baseline=baseline.cpu(), restored=samples[:, 0].cpu(),
        metrics=[], classes=classes, device=str(device), seconds=seconds, num_samples=settings.num_samples,
        samples=samples.cpu(), mean=samples.mean(dim=1).cpu() if several else None,
        spread=sample_spread(samples).cpu() if several else None, from_photo=photo,
        sigma_y_estimated=inputs.sigma_y_estimated, notes=list(inputs.notes),
    )
    result.metrics = _metrics(result)
    if save:
        _save(result, Path(out_dir) if out_dir is not None else exp_dir() / "image_samples")
    print(result, flush=True)
    return result


def sample_measurements(networks, y: torch.Tensor, degradation, sigma_0: float, settings: Settings, *, classes,
                        classifier_scale: float, generator, batch_size: int, callback=None,
                        progress: bool = True, betas: torch.Tensor | None = None,
                        learned_sigma: bool | None = None) -> torch.Tensor:
    """``settings.num_samples`` DDRM restorations of each measurement in ``y`` [N, M], clipped to
    [-1, 1], as ``[N, K, C, H, W]``.

    Each measurement is repeated K times, and the N*K rows (image-major: row ``n*K + k``) go to
    :func:`ddrm_sample` in batches of ``batch_size``, one after the other, all drawing from
    ``generator``. ``callback`` gets the sampler's dict plus ``batch_start``, the row of the
    batch's first image, so that a callback can follow one row (:func:`~ddrm_helpers.progress.collect_frames`).
    ``betas`` and ``learned_sigma`` go to :func:`ddrm_sample`; a run passes its config's
    (:func:`~ddrm_helpers.schedule.betas_from_config`, :func:`~ddrm_helpers.config.learns_sigma`).
    """
    k = settings.num_samples
    rows = y.repeat_interleave(k, dim=0)
    row_classes = None if classes is None else torch.tensor(classes, device=y.device).repeat_interleave(k)
    restored = []
    for start in range(0, rows.shape[0], batch_size):
        part = slice(start, start + batch_size)
        restored.append(ddrm_sample(
            networks.model, rows[part], degradation, sigma_0, steps=settings.steps, eta=settings.eta,
            eta_b=settings.eta_b, classifier=networks.classifier,
            classes=None if row_classes is None else row_classes[part], classifier_scale=classifier_scale,
            generator=generator, progress=progress, betas=betas, learned_sigma=learned_sigma,
            callback=None if callback is None else functools.partial(_with_batch_start, callback, start),
        ))
    return torch.cat(restored).clamp(-1, 1).reshape(y.shape[0], k, *degradation.image_shape)


def sample_spread(samples: torch.Tensor) -> torch.Tensor:
    """Per pixel, how much ``samples`` [N, K, C, H, W] (K >= 2) disagree: the standard deviation
    across the K samples (sample std, K - 1 in the denominator), root-mean-square over the
    channels, in [0, 1] pixel units (half the [-1, 1] value), as ``[N, 1, H, W]``."""
    return samples.var(dim=1, correction=1).mean(dim=1, keepdim=True).sqrt() / 2


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


def default_images(config: Config) -> list[Path]:
    """The shipped demo images that suit a config: the face for CelebA-HQ, the scenes for ImageNet."""
    kind = "face" if config.data.dataset == "CelebA_HQ" else "scene"
    return [DEMO_DIR / e["file"] for e in demo_entries() if e["kind"] == kind]


def demo_entries() -> list[dict]:
    """The entries of ``exp/datasets/demo/demo.yml``: file, title, kind, ImageNet class, source, licence."""
    with open(DEMO_DIR / "demo.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)["images"]


def _checkpoints(config: Config, store: CheckpointStore, download: bool | None, progress: bool):
    """The verified checkpoint paths of ``config``, or the :class:`Skipped` that says in one line why not."""
    found, problems = store.locate(config, download="auto" if download is None else download, progress=progress,
                                   quiet=not progress)
    if not problems:
        return found
    failed = any(p.state == "failed" for p in problems)
    reason = "; ".join(p.phrase() for p in problems)
    where = "the download report above" if failed else "the checkpoint table above"
    remedy = f"see {where}, or run `python -m ddrm_helpers download --config {config.name}`"
    return Skipped(config.name, config.display, reason, remedy, [p.file for p in problems])


def _default_classes(sources, classifier, images: torch.Tensor, names: list[str]) -> list[int]:
    """The demo images' own classes; for other images, the classifier's top guess (and say so)."""
    known = {e["file"]: e["imagenet_class"] for e in demo_entries()}
    guesses = None
    classes = []
    for i, source in enumerate(sources):
        file = Path(source).name if isinstance(source, (str, os.PathLike)) else None
        if file in known and known[file] is not None:
            classes.append(int(known[file]))
            continue
        if guesses is None:
            guesses = propose_classes(classifier, images)
        top = guesses[i]
        listed = ", ".join(f"{class_name(c)} ({c}, p={p:.2f})" for c, p in top)
        print(f"No class given for {names[i]}: the classifier proposes {listed}; using {class_name(top[0][0])}. "
              "Pass classes=... to choose.", flush=True)
        classes.append(top[0][0])
    return classes


@torch.no_grad()
def propose_classes(classifier, images: torch.Tensor, k: int = 3) -> list[list[tuple[int, float]]]:
    """The classifier's top ``k`` classes for each image (at t = 0, the noise-free end)."""
    t = torch.zeros(images.shape[0], device=images.device, dtype=images.dtype)
    probs = torch.softmax(classifier(images, t).float(), dim=-1)
    top = probs.topk(k, dim=-1)
    return [[(int(c), float(p)) for c, p in zip(cs, ps)] for cs, ps in zip(top.indices.cpu(), top.values.cpu())]


def _metrics(result: RunResult) -> list[dict]:
    if result.original is None:
        return []
    p_rest, s_rest = psnr(result.restored, result.original), ssim(result.restored, result.original)
    p_base, s_base = psnr(result.baseline, result.original), ssim(result.baseline, result.original)
    if result.mean is not None:
        p_mean, s_mean = psnr(result.mean, result.original), ssim(result.mean, result.original)
    rows = []
    for i, name in enumerate(result.names):
        row = {"name": name, "psnr_restored": float(p_rest[i]), "ssim_restored": float(s_rest[i]),
               "psnr_degraded": float(p_base[i]), "ssim_degraded": float(s_base[i])}
        if result.mean is not None:
            row["psnr_mean"], row["ssim_mean"] = float(p_mean[i]), float(s_mean[i])
        if result.classes is not None:
            row["class"] = int(result.classes[i])
            row["class_name"] = class_name(int(result.classes[i]))
        rows.append(row)
    return rows


def _save(result: RunResult, root: Path) -> None:
    folder = new_run_dir(root, f"{result.config}_{'photo_' if result.from_photo else ''}{result.task}")
    spread_max = []
    for i, name in enumerate(result.names):
        stem = f"{i:02d}_{name}"
        pictures = [("degraded", result.degraded), ("restored", result.restored)]
        if result.original is not None:
            pictures.insert(0, ("reference" if result.from_photo else "original", result.original))
        if result.from_photo:
            pictures.insert(-1, ("baseline", result.baseline))
        for kind, images in pictures:
            result.files.append(save_image(images[i], folder / f"{stem}_{kind}.png"))
        if result.spread is not None:
            for k in range(result.num_samples):
                result.files.append(save_image(result.samples[i, k], folder / f"{stem}_sample{k + 1}.png"))
            result.files.append(save_image(result.mean[i], folder / f"{stem}_mean.png"))
            # Saved as grey, white = the largest spread of the image; that value is in metrics.json.
            top = float(result.spread[i].max())
            spread_max.append(top)
            shown = result.spread[i] / top * 2 - 1 if top > 0 else -torch.ones_like(result.spread[i])
            result.files.append(save_image(shown, folder / f"{stem}_spread.png"))
    summary = {
        "config": result.config, "task": result.task, "sigma_y": result.sigma_y, "steps": result.steps,
        "eta": result.eta, "eta_b": result.eta_b, "seed": result.seed, "device": result.device,
        "seconds": round(result.seconds, 3), "num_samples": result.num_samples, "images": result.metrics,
    }
    if result.metrics:
        keys = [key for key in result.metrics[0] if key.startswith(("psnr_", "ssim_"))]
        summary["mean"] = {key: sum(m[key] for m in result.metrics) / len(result.metrics) for key in keys}
    if result.from_photo:
        summary.update(photo=True, sigma_y_estimated=result.sigma_y_estimated, notes=result.notes)
    if spread_max:
        summary["spread_max"] = spread_max  # per image, [0, 1] pixel units: white in *_spread.png
    if not result.finite:
        summary["failed"] = "the restoration is not finite (NaN or infinity)"
    summary, replaced = _json_safe(summary)
    if replaced:
        summary["notes_on_values"] = f"{replaced} value(s) were NaN or infinite and are written as null"
    metrics_file = folder / "metrics.json"
    metrics_file.write_text(json.dumps(summary, indent=1, allow_nan=False))
    result.files.append(metrics_file)
    result.out_dir = folder


def _json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN), and how many were."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        pairs = [(k, _json_safe(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, (list, tuple)):
        pairs = [_json_safe(v) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    return value, 0


def new_run_dir(root: Path, stem: str) -> Path:
    """A new folder ``root/<stem>_<time>[_n]``; an existing run is never written into."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        folder = root / (base if n == 1 else f"{base}_{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"could not make a new run folder under {root}")


def _as_list(images) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return [images]


def image_names(sources) -> list[str]:
    """Short names for images, safe in file names: a file's own name (``face_eileen_collins``), and
    ``photo1``, ``photo2``, ... (by position) for an array, a tensor or a PIL image without a file."""
    return [_safe_name(describe(source), i) if _has_file_name(source) else f"photo{i + 1}"
            for i, source in enumerate(sources)]


def _has_file_name(source) -> bool:
    return isinstance(source, (str, os.PathLike)) or bool(getattr(source, "filename", ""))


def _safe_name(name: str, index: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return safe or f"image{index}"


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
