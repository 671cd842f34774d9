"""Does this machine really restore? A check with a real learned prior, offline, in seconds.

    python -m ddrm_helpers selftest [--device DEV] [--figure PATH]

>>> report = selftest()          # prints a table and a verdict
>>> report.ok, report.figure()   # True when every check holds; the grid of what was restored

Every network the tests use otherwise has random weights, so nothing else can tell a good
restoration from a bad one. This one is trained: a small DDPM UNet of this project (``model.type:
simple``, 0.65M parameters) fitted to the 8x8 handwritten digits of scikit-learn's ``load_digits``
by ``scripts/train_digits_prior.py``. It ships in ``ddrm_helpers/prior/`` with its config
(``digits.yml``: image size 8, 3 equal channels, its own 500-step schedule), its registry
(``registry.yml``: size and sha256) and 300 held-out digits it never saw (``digits_heldout.npz``).

The check runs the product's own path: a :class:`~ddrm_helpers.store.CheckpointStore` finds and
verifies the shipped file (never downloading; a missing or altered file is named with what to do),
:func:`~ddrm_helpers.runner.run_config` loads each held-out digit with the image loader, degrades
it and restores it with DDRM from the config's schedule, on six tasks: inpainting of half the
pixels, Gaussian deblurring and 2x super-resolution without noise, denoising at sigma_y 0.1, and
the paper's noisy settings, 4x super-resolution and Gaussian deblurring at sigma_y 0.05, which
reach the branch of the update where ``y`` is noisier than the target and its singular values
count. Each task must pass four checks (:mod:`ddrm_helpers.prior_checks`): the mean of the
samples beats the baseline a user would otherwise have (the degraded image, bicubically upscaled
for super-resolution) by the task's margin; the grey digits come back grey; the measurement noise
the run drew has the std that sigma_y claims; and a noiseless measurement is reproduced
(``H x_hat = y``; the kept pixels of inpainting exactly). docs/ddrm.md ("Does it really restore?")
lists the convention errors each check catches, measured by ``scripts/mutate_prior_checks.py``.

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

from .paths import PRIOR_DIR, put_back_command
from .prior_checks import (
    FLOAT32_TOLERANCE,
    GREY_LIMIT,
    Noise,
    colour,
    kept_exactly,
    mean_psnr,
    measurement_noise,
    pseudo_inverse,
    reproduced,
)
from .prior_sampling import compare_half_precision

PRIOR_CONFIG = PRIOR_DIR / "digits.yml"
PRIOR_REGISTRY = PRIOR_DIR / "registry.yml"
PRIOR_KEY = "digits_ddpm"
HELDOUT_DIGITS = PRIOR_DIR / "digits_heldout.npz"


@dataclass(frozen=True)
class Check:
    """One restoration task and the margin (dB) by which the mean of the samples must beat the baseline."""

    task: str
    sigma_y: float
    margin: float
    label: str


# Margins set well below what the shipped prior gives on 16 digits with 3 samples in 10 runs (seeds 0
# to 9, each on 16 other digits: gains of at least +9.0, +20.0, +5.1, +1.6, +2.3 and +8.6 dB;
# docs/ddrm.md), so that another device's random draws pass: they catch what breaks a restoration
# outright. The convention errors that cost less are caught by the checks that need no margin
# (prior_checks), or by the colour of the restorations.
CHECKS = (
    Check("inp", 0.0, 6.0, "inpainting, half the pixels missing"),
    Check("deblur_gauss", 0.0, 15.0, "Gaussian deblurring"),
    Check("deno", 0.1, 3.0, "denoising, sigma_y 0.1"),
    Check("sr2", 0.0, 0.5, "2x super-resolution"),
    Check("sr4", 0.05, 1.0, "4x super-resolution, sigma_y 0.05 (the paper's setting)"),
    Check("deblur_gauss", 0.05, 5.0, "Gaussian deblurring, sigma_y 0.05 (the paper's setting)"),
)
DIGITS = 16  # a 4x4 tile per picture
SAMPLES = 3
REPRODUCED_DIGITS = 4  # the noiseless runs repeated unclipped: any digit shows a measurement not kept
STEPS = 20
FP16_TOLERANCE_DB = 0.5


@dataclass
class Outcome:
    """What one task gave: in dB averaged over the digits, the baseline (what the user sees: the
    degraded image, bicubically upscaled for super-resolution), the pseudo-inverse ``H^+ y`` (singular
    values the sampler treats as 0 left out, as it does), the first sample and the samples' mean; the
    samples' ``colour``, the measurement ``noise``, and for a noiseless task how far the measurement
    is from reproduced (``consistency``: the largest change of a kept pixel for inpainting, else the
    largest ``|H x_hat - y|``; None for a noisy task)."""

    check: Check
    baseline: float
    pinv: float
    sample: float
    mean: float
    colour: float
    noise: Noise
    consistency: float | None
    result: object = field(repr=False, default=None)  # the RunResult

    @property
    def gain(self) -> float:
        return self.mean - self.baseline

    @property
    def problems(self) -> list[str]:
        """What went wrong, a few words each; empty when every check holds."""
        problems = []
        if not (math.isfinite(self.gain) and self.gain >= self.check.margin):
            problems.append(f"the mean of the samples beats the baseline by {self.gain:+.1f} dB, "
                            f"{self.check.margin:+.1f} needed")
        if not self.colour <= GREY_LIMIT:
            problems.append(f"grey digits came back coloured (mean |channel - grey| {self.colour:.4f}, at most "
                            f"{GREY_LIMIT} is grey)")
        if not self.noise.passed:
            problems.append(self.noise.problem())
        if self.consistency is not None and self.check.task == "inp" and self.consistency != 0:
            problems.append(f"the kept pixels changed (by up to {self.consistency:.2g})")
        elif self.consistency is not None and not self.consistency <= FLOAT32_TOLERANCE:
            problems.append(f"the noiseless measurement is not reproduced (|H x_hat - y| up to {self.consistency:.2g}, "
                            f"float32 gives {FLOAT32_TOLERANCE:g} at most)")
        return problems

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def name(self) -> str:
        return f"{self.check.task} (sigma_y {self.check.sigma_y:g})"


@dataclass
class SelftestReport:
    """The self-test's outcome: ``ok``, a table (``str(report)``) and a picture (``report.figure()``)."""

    device: str
    outcomes: list[Outcome]
    seconds: float
    digits: int = DIGITS
    samples: int = SAMPLES
    problem: str | None = None  # the prior could not run at all (a missing or altered file)
    fp16: str | None = None  # on a GPU: how float16 autocast compares with float32
    threads: str | None = None  # on a CPU: PyTorch's thread count, and why

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.outcomes) and all(o.passed for o in self.outcomes)

    @property
    def verdict(self) -> str:
        if self.problem is not None:
            return f"FAIL: the prior could not run: {self.problem}"
        failed = [o.name for o in self.outcomes if not o.passed]
        if failed:
            return (f"FAIL: {', '.join(failed)} failed (the lines above say how); the restorations are wrong on "
                    "this machine (docs/ddrm.md, 'Does it really restore?')")
        return "PASS: DDRM with a real learned prior restores every task on this machine"

    def __str__(self) -> str:
        where = f"{self.device} ({self.threads})" if self.threads else self.device
        lines = [f"DDRM self-test on {where}: the shipped digits prior, {self.digits} held-out digits, "
                 f"{self.samples} samples each, {STEPS} steps ({self.seconds:.1f} s); PSNR in dB"]
        if self.outcomes:
            lines.append(f"  {'task':14s}{'sigma_y':>8s}{'baseline':>9s}{'pinv':>7s}{'sample':>8s}{'mean':>7s}"
                         f"{'gain':>7s}{'needed':>8s}{'colour':>8s}{'noise':>8s}{'H x = y':>10s}")
            for o in self.outcomes:
                lines.append(f"  {o.check.task:14s}{o.check.sigma_y:8.2g}{o.baseline:9.1f}{o.pinv:7.1f}{o.sample:8.1f}"
                             f"{o.mean:7.1f}{o.gain:+7.1f}{o.check.margin:+8.1f}{o.colour:8.4f}{o.noise.std:8.3f}"
                             f"{_consistency(o):>10s}  {'ok' if o.passed else 'FAIL'}")
            lines += [f"  FAIL {o.name}: {'; '.join(o.problems)}" for o in self.outcomes if not o.passed]
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


def _consistency(outcome: Outcome) -> str:
    if outcome.consistency is None:
        return "-"
    if outcome.check.task == "inp":
        return "kept" if outcome.consistency == 0 else f"{outcome.consistency:.1e}"
    return f"{outcome.consistency:.1e}"


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


def prior_problem(store=None) -> str | None:
    """None when the shipped prior is in place and verified; else what is wrong with it, in one
    line, and what to do: put the shipped files back (``git checkout`` where the package is a git
    checkout and git is installed, else a fresh copy of the package). Never downloads."""
    from .errors import ConfigError
    from .verify import CORRUPT, MISSING

    store = store or prior_store()
    try:
        found = store.verify(PRIOR_KEY, quiet=True)
    except (ConfigError, OSError) as err:
        return f"its registry {PRIOR_REGISTRY} cannot be used ({err}). {_put_back()}"
    if found.ok:
        return None
    what = {MISSING: "is missing", CORRUPT: f"is not the file that ships with the package: {found.detail}"}
    return f"{found.path} {what.get(found.state, f'is {found.state}: {found.detail}')}. {_put_back()}"


def _put_back() -> str:
    """How to put the shipped prior files back: only a command that works here."""
    command = put_back_command(PRIOR_DIR)
    if command is not None:
        return f"Put the shipped files back with `{command}`, then run the self-test again"
    return ("Reinstall the package from a fresh copy of the project (the prior's files, ddrm_helpers/prior/, are "
            "part of it), then run the self-test again")


def run_check(check: Check, images, *, store=None, device=None, digits: int | None = None,
              samples: int = SAMPLES, steps: int = STEPS, seed: int = 0, quiet: bool = True) -> Outcome:
    """One task through :func:`~ddrm_helpers.runner.run_config` with the prior, and its checks
    (:mod:`ddrm_helpers.prior_checks`); never downloads."""
    from .runner import run_config

    store = store or prior_store()
    output = io.StringIO()
    with contextlib.redirect_stdout(output) if quiet else contextlib.nullcontext():
        result = run_config(str(PRIOR_CONFIG), images=images[:digits] if digits else images, task=check.task,
                            sigma_y=check.sigma_y, steps=steps, seed=seed, num_samples=samples,
                            store=store, device=device, save=False, download=False, progress=False)
    if result.skipped:
        raise RuntimeError(str(result))
    mean = result.mean if result.mean is not None else result.restored
    original = result.original
    consistency = None
    if check.sigma_y == 0:
        consistency = kept_exactly(result) if check.task == "inp" else _reproduced(result, store, device)
    return Outcome(check, mean_psnr(result.baseline, original), mean_psnr(pseudo_inverse(result), original),
                   mean_psnr(result.restored, original), mean_psnr(mean, original), colour(result.samples),
                   measurement_noise(result), consistency, result)


def _reproduced(result, store, device) -> float:
    import torch

    from .models import load_pretrained

    config = prior_config()
    device = torch.device(result.device if device is None else device)
    networks = load_pretrained(config, device=device, paths=store.paths(config, download=False, progress=False))
    return reproduced(networks, config, result, device, digits=REPRODUCED_DIGITS)


def selftest(device=None, show: bool = False, *, digits: int = DIGITS, samples: int = SAMPLES,
             quiet: bool = False) -> SelftestReport:
    """Restore ``digits`` held-out digits (16 of the 300) ``samples`` times with the shipped prior on
    ``device`` (default: CUDA when available, else the CPU), print the table and the verdict, and
    return the report. ``show`` draws the figure too (inline in a notebook). No download, no file
    written outside the prior's own verification record. On a CPU, PyTorch's thread count is chosen
    once for the process (:func:`ddrm_helpers.threads.apply`) and shown in the table's first line."""
    import torch

    from . import threads, validate

    validate.check_device(device)
    if validate.check_count(digits, "digits", "how many held-out digits to restore, 1 to 300") > 300:
        raise validate.ArgumentError(f"digits={digits}: 300 digits are held out; give 1 to 300")
    if validate.check_count(samples, "samples", "restorations per digit, 2 or more") < 2:
        raise validate.ArgumentError(f"samples={samples}: the mean of 2 or more samples is measured; give 2 or more")
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    chosen = threads.apply(device)
    started = time.perf_counter()
    images, _ = heldout_digits(digits)
    outcomes, fp16 = [], None
    store = prior_store()
    problem = prior_problem(store)
    if problem is None:
        try:
            for check in CHECKS:
                outcomes.append(run_check(check, images, store=store, device=device, samples=samples))
        except RuntimeError as err:
            problem = str(err)
    if problem is None and device.type == "cuda":
        config = prior_config()
        gaps = [(o.check.task, *compare_half_precision(o, device, config=config, store=store)) for o in outcomes]
        worst = min(gap for _, gap, _ in gaps)
        differs = max(d for _, _, d in gaps)
        fp16 = (f"float16 (autocast, for information): mean PSNR {worst:+.2f} dB from float32 at worst, pixels "
                f"differ by up to {differs:.3f}; "
                + ("as good as float32" if worst > -FP16_TOLERANCE_DB else "worse than float32 on this GPU"))
    report = SelftestReport(str(device), outcomes, time.perf_counter() - started, digits, samples, problem, fp16,
                            None if chosen is None else str(chosen))
    if not quiet:
        print(report, flush=True)
    if show:
        report.figure(show=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m ddrm_helpers selftest``: 0 when every check holds, 1 when not (or the prior is
    missing or altered), 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m ddrm_helpers selftest",
                                     description="Check that DDRM restores on this machine, with a small "
                                                 "learned prior that ships with the package (offline, seconds).")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--figure", metavar="PATH", help="save the picture of the restorations here (PNG)")
    parser.add_argument("--digits", type=int, default=DIGITS, help=f"held-out digits to restore (default {DIGITS})")
    parser.add_argument("--samples", type=int, default=SAMPLES, help=f"samples per digit (default {SAMPLES})")
    args = parser.parse_args(argv)
    from . import threads, validate
    from .errors import ConfigError

    try:
        validate.check_device(args.device, "--device")
        threads.requested()
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
