"""Does this machine really restore? A check with a real learned prior, offline, in seconds.

    python -m ddrm_helpers selftest [--device DEV] [--figure PATH]

>>> report = selftest()          # prints a table and a verdict
>>> report.ok, report.figure()   # True when every margin holds; the grid of what was restored

Every network the tests use otherwise has random weights, so nothing else can tell a good
restoration from a bad one. This one is trained: a small DDPM UNet of this project (``model.type:
simple``, 0.65M parameters) fitted to the 8x8 handwritten digits of scikit-learn's ``load_digits``
by ``scripts/train_digits_prior.py``. It ships in ``ddrm_helpers/prior/`` with its config
(``digits.yml``: image size 8, 3 equal channels, its own 500-step schedule), its registry
(``registry.yml``: size and sha256) and 300 held-out digits it never saw (``digits_heldout.npz``).

The check runs the product's own path: a :class:`~ddrm_helpers.store.CheckpointStore` finds and
verifies the shipped file (never downloading), :func:`~ddrm_helpers.runner.run_config` loads each
held-out digit with the image loader, degrades it (inpainting of half the pixels, Gaussian
deblurring, denoising at sigma_y 0.1, 2x super-resolution), restores it with DDRM from the config's
schedule and compares the mean of the samples with the baseline a user would otherwise have (the
degraded image, bicubically upscaled for super-resolution). A wrong image range, schedule,
timestep or noise unit costs far more than the margins (docs/ddrm.md, "Does it really restore?").

On a GPU it also samples with the network under float16 autocast and says how far that lands from
float32. (The DDPM UNet has no half-precision torso, ``convert_torso``, unlike the ImageNet UNet:
the product runs it in float32 everywhere, so this is for information, not part of the verdict.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PRIOR_DIR = Path(__file__).resolve().parent / "prior"
PRIOR_CONFIG = PRIOR_DIR / "digits.yml"
PRIOR_REGISTRY = PRIOR_DIR / "registry.yml"
HELDOUT_DIGITS = PRIOR_DIR / "digits_heldout.npz"


@dataclass(frozen=True)
class Check:
    """One restoration task and the margin (dB) by which the mean of the samples must beat the baseline."""

    task: str
    sigma_y: float
    margin: float
    label: str


# Margins set well below what the shipped prior gives on 16 digits with any of 6 seeds (gains of at
# least +9.9, +21.2, +5.5 and +2.0 dB; docs/ddrm.md), so that another device's random draws pass: this
# checks the machine. The tests (tests/test_learned_prior.py) hold the conventions to tighter margins.
CHECKS = (
    Check("inp", 0.0, 6.0, "inpainting, half the pixels missing"),
    Check("deblur_gauss", 0.0, 16.0, "Gaussian deblurring"),
    Check("deno", 0.1, 3.0, "denoising, sigma_y 0.1"),
    Check("sr2", 0.0, 1.0, "2x super-resolution"),
)
DIGITS = 16  # a 4x4 tile per picture
SAMPLES = 4
STEPS = 20
FP16_TOLERANCE_DB = 0.5


@dataclass
class Outcome:
    """What one task gave, in dB averaged over the digits: the baseline (what the user sees: the
    degraded image, bicubically upscaled for super-resolution), the pseudo-inverse ``H^+ y`` (singular
    values the sampler treats as 0 left out, as it does), the first sample and the samples' mean."""

    check: Check
    baseline: float
    pinv: float
    sample: float
    mean: float
    result: object = field(repr=False, default=None)  # the RunResult

    @property
    def gain(self) -> float:
        return self.mean - self.baseline

    @property
    def passed(self) -> bool:
        return math.isfinite(self.gain) and self.gain >= self.check.margin


@dataclass
class SelftestReport:
    """The self-test's outcome: ``ok``, a table (``str(report)``) and a picture (``report.figure()``)."""

    device: str
    outcomes: list[Outcome]
    seconds: float
    digits: int = DIGITS
    samples: int = SAMPLES
    problem: str | None = None  # the prior could not run at all (a missing or corrupt file)
    fp16: str | None = None  # on a GPU: how float16 autocast compares with float32

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.outcomes) and all(o.passed for o in self.outcomes)

    @property
    def verdict(self) -> str:
        if self.problem is not None:
            return f"FAIL: the prior could not run: {self.problem}"
        failed = [o.check.task for o in self.outcomes if not o.passed]
        if failed:
            return (f"FAIL: {', '.join(failed)} did not beat the baseline by the margin; the restorations are "
                    "wrong on this machine (see docs/ddrm.md, 'Does it really restore?')")
        return "PASS: DDRM with a real learned prior beats the baseline on every task on this machine"

    def __str__(self) -> str:
        lines = [f"DDRM self-test on {self.device}: the shipped digits prior, {self.digits} held-out digits, "
                 f"{self.samples} samples each, {STEPS} steps ({self.seconds:.1f} s); PSNR in dB"]
        if self.outcomes:
            lines.append(f"  {'task':14s}{'sigma_y':>8s}{'baseline':>9s}{'pinv':>7s}{'sample':>8s}"
                         f"{'mean':>7s}{'gain':>7s}{'needed':>8s}")
            for o in self.outcomes:
                lines.append(f"  {o.check.task:14s}{o.check.sigma_y:8.2g}{o.baseline:9.1f}{o.pinv:7.1f}{o.sample:8.1f}"
                             f"{o.mean:7.1f}{o.gain:+7.1f}{o.check.margin:+8.1f}  {'ok' if o.passed else 'FAIL'}")
        if self.fp16:
            lines.append(f"  {self.fp16}")
        lines.append(self.verdict)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(str(self))}</pre>"

    def figure(self, show: bool = False):
        """One row per task: the originals, the baseline, a sample and the mean, 16 digits tiled 4x4
        in each cell, with PSNR under it (:func:`~ddrm_helpers.display.show_grid`)."""
        from .display import show_grid

        if not self.outcomes:
            return None
        mean_name = f"mean of {self.samples}"
        columns = {"original": [], "baseline": [], "DDRM sample": [], mean_name: []}
        notes = {name: [] for name in columns}
        for o in self.outcomes:
            r = o.result
            for name, images, psnr_db in (("original", r.original, None), ("baseline", r.baseline, o.baseline),
                                          ("DDRM sample", r.restored, o.sample),
                                          (mean_name, r.mean, o.mean)):
                columns[name].append(tile(images[:16]))
                notes[name].append("" if psnr_db is None else f"{psnr_db:.1f} dB")
        labels = [f"{o.check.task}\nsigma_y {o.check.sigma_y:g}" for o in self.outcomes]
        return show_grid(columns, labels, title=f"Self-test on {self.device}: {self.verdict.split(':')[0]}",
                         notes=notes, cell_inches=2.0, show=show)


def tile(images, columns: int = 4):
    """Images ``[N, C, h, w]`` in [-1, 1] as one picture, ``columns`` wide, one grey pixel between them."""
    import torch

    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.zeros(c, rows * (h + 1) - 1, columns * (w + 1) - 1)
    for i in range(n):
        top, left = (i // columns) * (h + 1), (i % columns) * (w + 1)
        canvas[:, top:top + h, left:left + w] = images[i].float().cpu()
    return canvas


def heldout_digits(count: int | None = None):
    """The held-out digits as float arrays (8, 8) in [0, 1], the way a user hands in a grey picture,
    and their labels. The training never saw them (``prior/digits_split.json``)."""
    import numpy as np

    with np.load(HELDOUT_DIGITS, allow_pickle=False) as data:
        values, labels = data["images"], data["labels"]
    values, labels = values[:count], labels[:count]
    return [v.astype(np.float64) / 16.0 for v in values], [int(label) for label in labels]


def prior_store():
    """The store of the shipped prior: the file is in place, verified by size and sha256."""
    from .store import CheckpointStore

    return CheckpointStore(PRIOR_DIR, PRIOR_REGISTRY)


def prior_config():
    from .config import load_config

    return load_config(PRIOR_CONFIG)


def mean_psnr(images, reference) -> float:
    from .metrics import psnr

    return float(psnr(images, reference).mean())


def run_check(check: Check, images, *, store=None, device=None, digits: int | None = None,
              samples: int = SAMPLES, steps: int = STEPS, seed: int = 0, quiet: bool = True) -> Outcome:
    """One task through :func:`~ddrm_helpers.runner.run_config` with the prior; never downloads."""
    from .runner import run_config

    output = io.StringIO()
    with contextlib.redirect_stdout(output) if quiet else contextlib.nullcontext():
        result = run_config(str(PRIOR_CONFIG), images=images[:digits] if digits else images, task=check.task,
                            sigma_y=check.sigma_y, steps=steps, seed=seed, num_samples=samples,
                            store=store or prior_store(), device=device, save=False, download=False,
                            progress=False)
    if result.skipped:
        raise RuntimeError(str(result))
    mean = result.mean if result.mean is not None else result.restored
    original = result.original
    return Outcome(check, mean_psnr(result.baseline, original), mean_psnr(pseudo_inverse(result), original),
                   mean_psnr(result.restored, original), mean_psnr(mean, original), result)


def pseudo_inverse(result):
    """``H^+ y`` of a run's measurements, clipped to [-1, 1], leaving out the singular values that
    :func:`ddrm_sample` treats as 0 (the plain ``H_pinv`` divides float32 rounding by them)."""
    import torch

    from .degradations import make_degradation
    from .restore import measurement_from_photo

    op = make_degradation(result.task, result.original.shape[-1], channels=result.original.shape[1])
    y = torch.cat([measurement_from_photo(op, degraded) for degraded in result.degraded])
    s = op.singulars()
    kept = s > s.max() * torch.finfo(s.dtype).eps ** 0.5
    spectral = torch.where(kept, op.Ut(y) / torch.where(kept, s, 1.0), 0.0)
    return op.V(op.add_zeros(spectral)).reshape(result.original.shape).clamp(-1, 1)


def sample_prior(model, config, count: int, *, steps: int = 50, eta: float = 0.85, generator=None):
    """``count`` unconditional samples ``[count, C, H, W]`` in [-1, 1] from ``model`` with the
    schedule of ``config``: DDRM with nothing measured (every coordinate "missing"), i.e. DDIM in
    the variance-exploding form of :mod:`ddrm_helpers.sampler`, over ``timestep_sequence(steps, T)``."""
    import torch

    from .schedule import alphas_cumprod, betas_from_config, timestep_sequence

    abar = alphas_cumprod(betas_from_config(config)).tolist() + [1.0]  # abar[-1]: after the last step
    times = timestep_sequence(steps, len(abar) - 1)
    device = next(model.parameters()).device
    shape = (count, int(config.data.channels), int(config.data.image_size), int(config.data.image_size))

    def sigma(t: int) -> float:
        return math.sqrt((1 - abar[t]) / abar[t])

    with torch.no_grad():
        x = sigma(times[-1]) * torch.randn(shape, generator=generator, device=device)  # x_t / sqrt(abar_t)
        for t, t_next in zip(reversed(times), reversed([-1, *times[:-1]])):
            t_batch = torch.full((count,), float(t), device=device)
            eps = model(math.sqrt(abar[t]) * x, t_batch).float()
            x0 = x - sigma(t) * eps
            noise = torch.randn(shape, generator=generator, device=device)
            x = x0 + math.sqrt(1 - eta**2) * sigma(t_next) * eps + eta * sigma(t_next) * noise
    return x.clamp(-1, 1)


def half_precision(model, dtype=None):
    """``model`` run under autocast in ``dtype`` (float16 on a GPU) with a float32 output, for
    :func:`ddrm_sample`: only the network runs in half precision, the sampler's algebra stays float32."""
    import torch

    def predict(x, t, *rest):
        kind = x.device.type
        with torch.autocast(device_type=kind, dtype=dtype or (torch.float16 if kind == "cuda" else torch.bfloat16)):
            out = model(x, t, *rest)
        return out.float()

    return predict


def compare_half_precision(outcome: Outcome, device, dtype=None) -> tuple[float, float]:
    """The same run as ``outcome`` (same seed, so the same measurement and sampler noise) with the
    network under autocast: (PSNR of its mean minus float32's, largest pixel difference in [0, 1] units)."""
    import torch

    from .config import load_config
    from .degradations import make_degradation
    from .engine import resolve_settings, sample_measurements
    from .models import load_pretrained
    from .models.pretrained import Pretrained
    from .sampler import sigma_0_from_sigma_y
    from .schedule import betas_from_config

    r = outcome.result
    config = load_config(PRIOR_CONFIG)
    settings = resolve_settings(config, r.task, r.sigma_y, r.steps, r.eta, r.eta_b, r.seed, r.num_samples,
                                batch_size=int(config.sampling.batch_size), classifier_scale=1.0)
    device = torch.device(device)
    networks = load_pretrained(config, device=device, paths=prior_store().paths(config, download=False,
                                                                                  progress=False))
    x = r.original.to(device)
    degradation = make_degradation(r.task, x.shape[-1], channels=x.shape[1]).to(device)
    generator = torch.Generator(device=device).manual_seed(r.seed)
    sigma_0 = sigma_0_from_sigma_y(r.sigma_y)
    y = degradation.H(x) + sigma_0 * torch.randn(x.shape[0], degradation.measurement_dim, generator=generator,
                                                 device=device)
    samples = sample_measurements(Pretrained(half_precision(networks.model, dtype), None), y, degradation,
                                  settings, classes=None, generator=generator, progress=False,
                                  betas=betas_from_config(config), learned_sigma=False).cpu()
    gap = mean_psnr(samples.mean(dim=1), r.original) - outcome.mean
    return gap, float((samples - r.samples).abs().max()) / 2


def selftest(device=None, show: bool = False, *, digits: int = DIGITS, samples: int = SAMPLES,
             quiet: bool = False) -> SelftestReport:
    """Restore ``digits`` held-out digits (16 of the 300) ``samples`` times with the shipped prior on
    ``device`` (default: CUDA when available, else the CPU), print the table and the verdict, and
    return the report. ``show`` draws the figure too (inline in a notebook). No download, no file
    written outside the prior's own verification record."""
    import torch

    from . import validate

    validate.check_device(device)
    if validate.check_count(digits, "digits", "how many held-out digits to restore, 1 to 300") > 300:
        raise validate.ArgumentError(f"digits={digits}: 300 digits are held out; give 1 to 300")
    if validate.check_count(samples, "samples", "restorations per digit, 2 or more") < 2:
        raise validate.ArgumentError(f"samples={samples}: the mean of 2 or more samples is measured; give 2 or more")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    started = time.perf_counter()
    images, _ = heldout_digits(digits)
    outcomes, problem, fp16 = [], None, None
    try:
        store = prior_store()
        for check in CHECKS:
            outcomes.append(run_check(check, images, store=store, device=device, samples=samples))
    except RuntimeError as err:
        problem = str(err)
    if problem is None and device.type == "cuda":
        gaps = [(o.check.task, *compare_half_precision(o, device)) for o in outcomes]
        worst = min(gap for _, gap, _ in gaps)
        differs = max(d for _, _, d in gaps)
        fp16 = (f"float16 (autocast, for information): mean PSNR {worst:+.2f} dB from float32 at worst, pixels "
                f"differ by up to {differs:.3f}; "
                + ("as good as float32" if worst > -FP16_TOLERANCE_DB else "worse than float32 on this GPU"))
    report = SelftestReport(str(device), outcomes, time.perf_counter() - started, digits, samples, problem, fp16)
    if not quiet:
        print(report, flush=True)
    if show:
        report.figure(show=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m ddrm_helpers selftest``: 0 when every margin holds, 1 when not, 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m ddrm_helpers selftest",
                                     description="Check that DDRM restores on this machine, with a small "
                                                 "learned prior that ships with the package (offline, seconds).")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--figure", metavar="PATH", help="save the picture of the restorations here (PNG)")
    parser.add_argument("--digits", type=int, default=DIGITS, help=f"held-out digits to restore (default {DIGITS})")
    parser.add_argument("--samples", type=int, default=SAMPLES, help=f"samples per digit (default {SAMPLES})")
    args = parser.parse_args(argv)
    from . import validate
    from .errors import ConfigError

    try:
        validate.check_device(args.device, "--device")
        report = selftest(args.device, digits=args.digits, samples=args.samples)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.figure and report.outcomes:
        figure = report.figure(show=False)
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=100)
        print(f"figure saved in {args.figure}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
