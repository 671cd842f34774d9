"""Results: what a run hands back (:class:`RunResult`, or the engine's :class:`Skipped`), its metrics and its files.

:func:`report` is the end of every interactive run (``run_config``, ``restore_photo``): it makes
the :class:`RunResult` of a :class:`~ddrm_helpers.engine.Restoration`, measures it against the
original (PSNR, SSIM), saves it in a new folder under ``exp/image_samples/`` (or ``out_dir``) when
asked, and prints its summary; a :class:`Skipped` is printed and handed back as it is.

A run folder holds, per image ``i`` named ``name``: ``{i:02d}_{name}_original.png`` (or
``_reference`` for a photo), ``_degraded``, ``_baseline`` (photos), ``_restored``, and with several
samples ``_sample{k}``, ``_mean`` and ``_spread``; and ``metrics.json`` with the settings and
every image's figures (NaN and infinity written as null).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .classes import class_name
from .engine import Inputs, Restoration, Settings, Skipped
from .images import describe, save_image
from .metrics import psnr, ssim
from .paths import exp_dir

if TYPE_CHECKING:
    from .config import Config


@dataclass
class RunResult:
    """What one run produced. Images are CPU tensors in [-1, 1], one row per input image; when a run
    restored images of different sizes at their own sizes (``fit="full"``), each image field is a
    list of the images' tensors instead (``result.restored[i]`` is image i's either way).

    A run of :func:`~ddrm_helpers.runner.run_config` degrades ``original`` itself; a run of
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
        images = self.samples if self.samples is not None else self.restored
        return all(bool(torch.isfinite(image).all()) for image in images)

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


def report(config: Config, settings: Settings, inputs: Inputs, restoration: Restoration | Skipped, *,
           out_dir=None, save: bool = True) -> RunResult | Skipped:
    """The end of a run: its result, measured, saved (under ``out_dir``, default
    ``exp/image_samples``) when ``save``, and printed; a ``Skipped`` is handed back as it is."""
    if isinstance(restoration, Skipped):
        return restoration
    return finish(make_result(config, settings, inputs, restoration), out_dir=out_dir, save=save)


def finish(result: RunResult, *, out_dir=None, save: bool = True) -> RunResult:
    """Save ``result`` (under ``out_dir``, default ``exp/image_samples``) when ``save``, and print it."""
    if save:
        save_result(result, Path(out_dir) if out_dir is not None else exp_dir() / "image_samples")
    print(result, flush=True)
    return result


IMAGE_FIELDS = ("original", "degraded", "baseline", "restored", "samples", "mean", "spread")


def combine(parts: list[tuple[list[int], RunResult]]) -> RunResult:
    """One result of several runs of one config over parts of the inputs: ``parts`` pairs the input
    indices of each run with its result. Image fields are stacked where every image has the same
    shape, else kept as lists in input order; metrics, names and classes follow the input order."""
    order = sorted((index, part, j) for indices, part in parts for j, index in enumerate(indices))
    first = parts[0][1]
    fields = {}
    for name in IMAGE_FIELDS:
        images = [None if getattr(part, name) is None else getattr(part, name)[j] for _, part, j in order]
        if any(image is None for image in images):
            fields[name] = None
        elif len({tuple(image.shape) for image in images}) == 1:
            fields[name] = torch.stack(images)
        else:
            fields[name] = images
    classes = None if first.classes is None else [part.classes[j] for _, part, j in order]
    notes = list(dict.fromkeys(note for _, part in parts for note in part.notes))
    return dataclasses.replace(
        first, names=[part.names[j] for _, part, j in order], classes=classes, notes=notes, files=[],
        metrics=[part.metrics[j] for _, part, j in order] if first.metrics else [],
        seconds=sum(part.seconds for _, part in parts), **fields,
    )


def make_result(config: Config, settings: Settings, inputs: Inputs, restoration: Restoration) -> RunResult:
    """The :class:`RunResult` of a restoration, on the CPU, with its metrics."""
    samples = restoration.samples
    several = settings.num_samples > 1
    result = RunResult(
        config=config.name, display=config.display, task=settings.task, sigma_y=settings.sigma_y,
        steps=settings.steps, eta=settings.eta, eta_b=settings.eta_b, seed=settings.seed, names=inputs.names,
        original=None if inputs.original is None else inputs.original.cpu(),
        degraded=restoration.degraded.cpu(), baseline=restoration.baseline.cpu(), restored=samples[:, 0].cpu(),
        metrics=[], classes=restoration.classes, device=str(restoration.device), seconds=restoration.seconds,
        num_samples=settings.num_samples, samples=samples.cpu(), mean=samples.mean(dim=1).cpu() if several else None,
        spread=sample_spread(samples).cpu() if several else None, from_photo=inputs.measurement is not None,
        sigma_y_estimated=inputs.sigma_y_estimated, notes=list(inputs.notes),
    )
    result.metrics = image_metrics(result)
    return result


def sample_spread(samples: torch.Tensor) -> torch.Tensor:
    """Per pixel, how much ``samples`` [N, K, C, H, W] (K >= 2) disagree: the standard deviation
    across the K samples (sample std, K - 1 in the denominator), root-mean-square over the
    channels, in [0, 1] pixel units (half the [-1, 1] value), as ``[N, 1, H, W]``."""
    return samples.var(dim=1, correction=1).mean(dim=1, keepdim=True).sqrt() / 2


def spread_picture(spread: torch.Tensor) -> torch.Tensor:
    """One image's spread ``[1, H, W]`` as a grey picture in [-1, 1]: black = the samples agree,
    white = the largest spread of the image (all black when they agree everywhere)."""
    top = float(spread.max())
    return spread / top * 2 - 1 if top > 0 else -torch.ones_like(spread)


def image_metrics(result: RunResult) -> list[dict]:
    """Per image: PSNR and SSIM of the restoration, the degraded baseline and (K >= 2) the samples'
    mean against the original, and the class used; empty without an original."""
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


def save_result(result: RunResult, root: Path) -> None:
    """Write ``result``'s pictures and ``metrics.json`` to a new folder under ``root`` (see the module
    docstring); ``result.out_dir`` and ``result.files`` say where."""
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
                result.files.append(save_image(result.samples[i][k], folder / f"{stem}_sample{k + 1}.png"))
            result.files.append(save_image(result.mean[i], folder / f"{stem}_mean.png"))
            spread_max.append(float(result.spread[i].max()))  # what white stands for, in metrics.json
            result.files.append(save_image(spread_picture(result.spread[i]), folder / f"{stem}_spread.png"))
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
    summary, replaced = json_safe(summary)
    if replaced:
        summary["notes_on_values"] = f"{replaced} value(s) were NaN or infinite and are written as null"
    metrics_file = folder / "metrics.json"
    metrics_file.write_text(json.dumps(summary, indent=1, allow_nan=False))
    result.files.append(metrics_file)
    result.out_dir = folder


def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN), and how many were."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        pairs = [(k, json_safe(v)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, (list, tuple)):
        pairs = [json_safe(v) for v in value]
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


def image_names(sources) -> list[str]:
    """Short names for images, safe in file names: a file's own name (``face_eileen_collins``), and
    ``photo1``, ``photo2``, ... (by position) for an array, a tensor or a PIL image without a file."""
    return [safe_name(describe(source), i) if _has_file_name(source) else f"photo{i + 1}"
            for i, source in enumerate(sources)]


def _has_file_name(source) -> bool:
    return isinstance(source, (str, os.PathLike)) or bool(getattr(source, "filename", ""))


def safe_name(name: str, index: int) -> str:
    """``name`` cut to 40 characters of letters, digits, ``-`` and ``_`` (others become ``_``), or
    ``image{index}`` when nothing is left."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return safe or f"image{index}"
