"""`run_config`: one config, end to end: images in, degraded, restored, measured, saved.

>>> result = run_config("celeba_hq")                 # the demo face, 4x super-resolution
>>> result = run_config("imagenet_256", task="inp_box", sigma_y=0.0, images=["my_photo.jpg"])
>>> show_results(result)

A config whose checkpoints cannot be had returns a `Skipped` result naming the file and the remedy,
never an exception, so that "run all" in the notebook goes on. Bad input (a file that is not an
image, an unknown task, a class name that is not an ImageNet class) raises a ``ValueError`` that
says what is wrong.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .classes import class_name, resolve_classes
from .config import Config, load_config
from .degradations import make_degradation
from .images import describe, load_images, save_image
from .metrics import psnr, ssim
from .paths import DEMO_DIR, exp_dir
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .status import checkpoint_status, ensure_checkpoints


@dataclass
class Skipped:
    """A config that could not run, and why."""

    config: str
    display: str
    reason: str
    remedy: str
    missing: list[str] = field(default_factory=list)
    skipped: bool = True

    def __str__(self) -> str:
        return f"{self.display}: skipped: {self.reason}. {self.remedy}"

    def _repr_html_(self) -> str:
        import html

        return (f"<p><b>{html.escape(self.display)}</b>: skipped: {html.escape(self.reason)}.<br>"
                f"{html.escape(self.remedy)}</p>")


@dataclass
class RunResult:
    """What one run produced. Images are CPU tensors in [-1, 1], one row per input image."""

    config: str
    display: str
    task: str
    sigma_y: float
    steps: int
    eta: float
    eta_b: float
    seed: int
    names: list[str]
    original: torch.Tensor
    degraded: torch.Tensor  # the measurement y shown as an image (a low-resolution image for SR)
    baseline: torch.Tensor  # the degraded image at full size (bicubic upscale for SR), for comparison
    restored: torch.Tensor
    metrics: list[dict]
    classes: list[int] | None = None
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    device: str = "cpu"
    seconds: float = 0.0
    skipped: bool = False

    def __str__(self) -> str:
        lines = [f"{self.display}: {self.task}, sigma_y {self.sigma_y:g}, {self.steps} steps, "
                 f"{len(self.names)} image(s) in {self.seconds:.1f} s on {self.device}"]
        for m in self.metrics:
            lines.append(f"  {m['name']}: restored PSNR {m['psnr_restored']:.2f} dB / SSIM {m['ssim_restored']:.3f}"
                         f"; degraded PSNR {m['psnr_degraded']:.2f} dB / SSIM {m['ssim_degraded']:.3f}")
        if self.out_dir:
            lines.append(f"  saved in {self.out_dir}")
        return "\n".join(lines)


def run_config(
    name: str,
    images=None,
    task: str | None = None,
    sigma_y: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    classes=None,
    eta: float | None = None,
    eta_b: float | None = None,
    classifier_scale: float | None = None,
    degradation_params: dict | None = None,
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    save: bool = True,
    download: bool = True,
    progress: bool = True,
    registry=None,
) -> RunResult | Skipped:
    """Degrade and restore ``images`` with config ``name``; see the module docstring.

    ``images``: paths, PIL images or arrays (default: the shipped demo images that suit the
    config). ``task``, ``sigma_y`` (in [0, 1] pixel units), ``steps``, ``eta``, ``eta_b`` and
    ``classifier_scale`` default to the config's. ``classes`` (Config 3): one ImageNet label
    (index or name) for all images or one per image; by default the demo images' own classes, or
    for other images the classifier's best guess, which is printed. ``degradation_params`` go to
    :func:`make_degradation` (a kernel, a mask, a seed). Outputs go to a new folder under
    ``out_dir`` (default ``exp/image_samples``) unless ``save`` is False.
    """
    config = load_config(name)
    plan = config.ddrm
    task = task or plan.task
    sigma_y = float(plan.sigma_y if sigma_y is None else sigma_y)
    steps = int(plan.steps if steps is None else steps)
    eta = float(plan.eta if eta is None else eta)
    eta_b = float(plan.eta_b if eta_b is None else eta_b)
    if sigma_y < 0:
        raise ValueError(f"sigma_y is a noise level in [0, 1] pixel units; got {sigma_y}")

    size = int(config.data.image_size)
    sources = list(default_images(config)) if images is None else _as_list(images)
    if not sources:
        raise ValueError("no images given")
    x = load_images(sources, size)  # bad input fails here, before any download
    names = [_safe_name(describe(s), i) for i, s in enumerate(sources)]
    degradation = make_degradation(task, size, channels=x.shape[1], **(degradation_params or {}))
    if classes is not None:
        if "classifier" in config.checkpoints:
            classes = resolve_classes(classes, len(sources))
        else:
            print(f"{config.display} is not class-conditional: the classes given are not used.", flush=True)
            classes = None

    ready = _ready(config, cache_dir, registry, download, progress)
    if isinstance(ready, Skipped):
        print(ready, flush=True)
        return ready

    from .models import load_pretrained

    device = torch.device(device) if device is not None else _default_device()
    started = time.perf_counter()
    networks = load_pretrained(config, cache_dir=cache_dir, device=device, registry=registry)
    degradation = degradation.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    sigma_0 = sigma_0_from_sigma_y(sigma_y)  # the one conversion to the model's [-1, 1] range

    x = x.to(device)
    y = degradation.H(x) + sigma_0 * torch.randn(
        x.shape[0], degradation.measurement_dim, generator=generator, device=device, dtype=x.dtype)
    baseline = natural_inverse(degradation, y)
    if networks.classifier is not None and classes is None:
        classes = _default_classes(sources, networks.classifier, baseline, names)

    scale = 1.0
    if networks.classifier is not None:
        scale = float(config.classifier.classifier_scale if classifier_scale is None else classifier_scale)
    batch = batch_size or int(config.sampling.batch_size)
    restored = []
    for start in range(0, x.shape[0], batch):
        part = slice(start, start + batch)
        restored.append(ddrm_sample(
            networks.model, y[part], degradation, sigma_0, steps=steps, eta=eta, eta_b=eta_b,
            classifier=networks.classifier,
            classes=None if classes is None else torch.tensor(classes[part], device=device),
            classifier_scale=scale,
            generator=generator, progress=progress,
        ))
    restored = torch.cat(restored).clamp(-1, 1)
    seconds = time.perf_counter() - started

    result = RunResult(
        config=config.name, display=config.display, task=task, sigma_y=sigma_y, steps=steps, eta=eta,
        eta_b=eta_b, seed=seed, names=names, original=x.cpu(), degraded=degradation.degraded_image(y).cpu(),
        baseline=baseline.cpu(), restored=restored.cpu(), metrics=[], classes=classes, device=str(device),
        seconds=seconds,
    )
    result.metrics = _metrics(result)
    if save:
        _save(result, Path(out_dir) if out_dir is not None else exp_dir() / "image_samples")
    print(result, flush=True)
    return result


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


def _ready(config: Config, cache_dir, registry, download: bool, progress: bool) -> Skipped | None:
    names = [config.name]
    status = (ensure_checkpoints(names, cache_dir, registry=registry, progress=progress, quiet=not progress)
              if download else checkpoint_status(names, cache_dir, registry=registry))
    problems = status.problems(config.name)
    if not problems:
        return None
    reason = "; ".join(f"{p.file} is {p.state} ({p.detail})" for p in problems)
    remedy = (f"Put the file at {problems[0].path}, or run `python -m ddrm_helpers download --config "
              f"{config.name}` once the download works (docs/downloads.md says what each message means).")
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
    p_rest, s_rest = psnr(result.restored, result.original), ssim(result.restored, result.original)
    p_base, s_base = psnr(result.baseline, result.original), ssim(result.baseline, result.original)
    rows = []
    for i, name in enumerate(result.names):
        row = {"name": name, "psnr_restored": float(p_rest[i]), "ssim_restored": float(s_rest[i]),
               "psnr_degraded": float(p_base[i]), "ssim_degraded": float(s_base[i])}
        if result.classes is not None:
            row["class"] = int(result.classes[i])
            row["class_name"] = class_name(int(result.classes[i]))
        rows.append(row)
    return rows


def _save(result: RunResult, root: Path) -> None:
    folder = new_run_dir(root, f"{result.config}_{result.task}")
    for i, name in enumerate(result.names):
        stem = f"{i:02d}_{name}"
        for kind, images in (("original", result.original), ("degraded", result.degraded),
                             ("restored", result.restored)):
            result.files.append(save_image(images[i], folder / f"{stem}_{kind}.png"))
    summary = {
        "config": result.config, "task": result.task, "sigma_y": result.sigma_y, "steps": result.steps,
        "eta": result.eta, "eta_b": result.eta_b, "seed": result.seed, "device": result.device,
        "seconds": round(result.seconds, 3), "images": result.metrics,
        "mean": {key: sum(m[key] for m in result.metrics) / len(result.metrics)
                 for key in ("psnr_restored", "ssim_restored", "psnr_degraded", "ssim_degraded")},
    }
    metrics_file = folder / "metrics.json"
    metrics_file.write_text(json.dumps(summary, indent=1))
    result.files.append(metrics_file)
    result.out_dir = folder


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


def _safe_name(name: str, index: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
    return safe or f"image{index}"


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
