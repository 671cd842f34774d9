"""One run on a lent GPU answers everything: correctness, speed, memory and precision of the CUDA path.

    python bench/gpu_check.py /tmp/gpu_report              # a CUDA machine: about 5 minutes, 8 at most
    python bench/gpu_check.py --compile /tmp/gpu_report    # also torch.compile (reduce-overhead), capped
    python bench/gpu_check.py --smoke /tmp/gpu_smoke       # every stage at tiny sizes (CPU: well under a minute)
    python bench/gpu_check.py --only forward,profile OUT   # some stages only

Stages, in order (docs/performance.md says what each measures and why its threshold is what it is):
environment, correctness, forward, profile, sampler, tiled, memory, precision, loading, compile. Each has
its own time cap; a stage past its cap is recorded as "timed out" and the next one runs. The whole
run has a budget (``--budget``, 460 s): a stage gets at most what is left. Stages that need CUDA
are recorded as "skipped: no CUDA" without one. Every figure is a check with a threshold and a
status: pass, fail, info (a figure to read, or a speed threshold in a --smoke run, whose sizes are
not the ones the thresholds are for) or skipped (with the reason).

``OUT/report.json`` and ``OUT/report.md`` are rewritten after every stage (and when a stage
starts), and everything is printed as it happens, so a run cut short still leaves what it measured.
The exit status is 0 when every stage ran to its end (whatever its checks said), 1 when one raised
an error or timed out, 2 for bad arguments.

Networks have random weights (PyTorch's default initialisation; timings do not depend on the
values); full size means the released architectures at 256x256.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny  # noqa: E402

from ddrm_helpers import make_degradation, sampler  # noqa: E402
from ddrm_helpers.models import clear_pretrained_cache, fast_path, fast_path_options, load_pretrained  # noqa: E402
from ddrm_helpers.models.layers import GroupNorm  # noqa: E402
from ddrm_helpers.sampler import ddrm_sample  # noqa: E402

GiB = 2**30
# What torch's allocator may use on a 15 GB T4 (Colab): the card reports about 14.7 GiB, and the
# CUDA context, cuBLAS and cuDNN take a few hundred MiB of it outside the allocator.
T4_ALLOCATOR_GIB = 14.0
# Kernels launched by one forward of the full ImageNet UNet before this check existed (the issue's
# count): the fast path must not launch more.
KERNELS_BEFORE = 1158
# Dense peak rates, TFLOP/s, from the vendors' data sheets: (float16 tensor, tf32 tensor)
PEAKS = {
    "H200": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0), "L4": (121.0, 60.0), "T4": (65.0, 8.1), "V100": (125.0, 15.7),
}
STAGE_NAMES = ["environment", "correctness", "forward", "profile", "sampler", "tiled", "memory", "precision",
               "loading", "compile"]


class StageTimeout(BaseException):
    """Raised in the main thread when a stage passes its cap (a BaseException, so that the stage's
    own ``except Exception`` does not swallow it)."""


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    value: object
    threshold: str
    status: str  # pass, fail, info, or "skipped: <reason>"
    unit: str = ""
    note: str = ""


@dataclass
class Stage:
    name: str
    title: str
    cap_s: float
    status: str = "not run"
    reason: str = ""
    seconds: float | None = None
    checks: list[Check] = field(default_factory=list)
    tables: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    smoke: bool = False

    def check(self, name: str, value, passed: bool | None, threshold: str, unit: str = "", note: str = "",
              perf: bool = False) -> Check:
        """Record a figure. ``passed`` None: a figure to read (info). ``perf``: a speed or size
        threshold, only judged at full size (info in a --smoke run)."""
        status = "info" if passed is None or (perf and self.smoke) else "pass" if passed else "fail"
        check = Check(name, _plain(value), threshold, status, unit, note)
        self.checks.append(check)
        shown = _show(check.value)
        print(f"  [{status}] {name}: {shown}{(' ' + unit) if unit else ''}"
              f"{f'  (threshold: {threshold})' if threshold else ''}{f'  {note}' if note else ''}", flush=True)
        return check

    def skip(self, name: str, reason: str, threshold: str = "") -> None:
        self.checks.append(Check(name, None, threshold, f"skipped: {reason}"))
        print(f"  [skipped] {name}: {reason}", flush=True)

    def table(self, name: str, columns: list[str]) -> list[list]:
        """A table of figures; rows appended to the returned list are printed by :meth:`row`."""
        self.tables[name] = {"columns": columns, "rows": []}
        print(f"  {name}: " + " | ".join(columns), flush=True)
        return self.tables[name]["rows"]

    def row(self, name: str, values: list) -> None:
        values = [_plain(v) for v in values]
        self.tables[name]["rows"].append(values)
        print("    " + " | ".join(_show(v) for v in values), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("smoke", None)
        return out


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class Report:
    def __init__(self, out: Path, meta: dict):
        self.out = out
        self.meta = meta
        self.stages: list[Stage] = []
        self.meta.setdefault("started_epoch", time.time())

    def write(self, finished: bool = False) -> None:
        self.meta["seconds"] = round(time.time() - self.meta["started_epoch"], 2)
        self.meta["finished"] = finished
        data = {**self.meta, "stages": [s.to_dict() for s in self.stages]}
        _atomic_write(self.out / "report.json", json.dumps(data, indent=1, default=str) + "\n")
        _atomic_write(self.out / "report.md", self.markdown())

    def markdown(self) -> str:
        m = self.meta
        lines = [
            "# GPU check report", "",
            f"- command: `{m['command']}`",
            f"- mode: {m['mode']}; device: {m['device']}; torch {m['torch']}",
            f"- started {m['started']}; {m['seconds']} s so far; budget {m['budget_s']} s; "
            f"{'finished' if m['finished'] else 'NOT FINISHED (cut short, or still running)'}",
            "", "## Summary", "",
            "| stage | status | seconds | cap (s) | checks: pass / fail / info / skipped |",
            "|---|---|---|---|---|",
        ]
        for s in self.stages:
            counts = [sum(c.status == k for c in s.checks) for k in ("pass", "fail", "info")]
            skipped = sum(c.status.startswith("skipped") for c in s.checks)
            seconds = "" if s.seconds is None else f"{s.seconds:.1f}"
            lines.append(f"| {s.name} | {s.status} | {seconds} | {s.cap_s:g} | "
                         f"{counts[0]} / {counts[1]} / {counts[2]} / {skipped} |")
        for s in self.stages:
            lines += ["", f"## {s.name}: {s.title}", "", f"Status: **{s.status}**"
                      + (f" ({s.reason})" if s.reason else "")]
            if s.checks:
                lines += ["", "| check | value | threshold | result |", "|---|---|---|---|"]
                for c in s.checks:
                    value = _show(c.value) + (f" {c.unit}" if c.unit and c.value is not None else "")
                    note = f" ({c.note})" if c.note else ""
                    lines.append(f"| {c.name} | {_md(value)} | {_md(c.threshold)} | {_md(c.status + note)} |")
            for name, table in s.tables.items():
                lines += ["", f"{name}:", "", "| " + " | ".join(table["columns"]) + " |",
                          "|" + "---|" * len(table["columns"])]
                lines += ["| " + " | ".join(_md(_show(v)) for v in row) + " |" for row in table["rows"]]
            if s.notes:
                lines += [""] + [f"- {_md(n)}" for n in s.notes]
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _atomic_write(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


# --- running the stages --------------------------------------------------------------------------


@dataclass
class Context:
    out: Path
    smoke: bool
    device: torch.device
    args: argparse.Namespace
    tmp: Path
    shared: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def batches(self) -> tuple[int, int]:
        return (1, 2) if self.smoke else (1, 8)

    @property
    def steps(self) -> int:
        return 3 if self.smoke else 20

    def side(self, cfg, role: str = "model") -> int:
        """The input side: the config's; in a --smoke run 16 for the UNets (float16 convolutions on a
        CPU take a slow reference kernel). The classifier always takes its trained size."""
        if role == "classifier":
            return int(cfg.classifier.image_size)
        return 16 if self.smoke else int(cfg.data.image_size)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


@dataclass
class StageDef:
    name: str
    title: str
    cap_s: float
    smoke_cap_s: float
    run: Callable[[Context, Stage], None]
    needs_cuda: str = ""  # the reason, when the whole stage needs CUDA
    optional: str = ""  # the flag that asks for it, when not run by default


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raise StageTimeout in the main thread after ``seconds`` (no cap where SIGALRM is missing)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise StageTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


GRACE_S = 20.0  # past a stage's cap, how long a call that ignores the alarm may run before the watchdog acts


@dataclass(frozen=True)
class Clock:
    """Where :func:`run_stages` reads the time and how it stops a stage at its cap: for a run, the
    wall clock (``time.time`` for the budget's deadline, ``time.monotonic`` for durations), SIGALRM
    and the watchdog thread. Tests hand in a clock of their own, whose seconds pass only when a
    stage says so, so that what they assert never depends on how fast the machine is."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    alarm: Callable[[float], contextlib.AbstractContextManager] = _alarm
    watchdog: bool = True


def run_stages(ctx: Context, report: Report, stages: list[StageDef], deadline: float,
               resume_after: str | None = None, clock: Clock = Clock()) -> int:
    """Run ``stages`` in order, each under its cap and what is left until ``deadline`` (seconds of
    ``clock.wall``: the wall clock, ``time.time()``, unless a test hands in another); returns the
    exit status.

    A stage past its cap gets StageTimeout from SIGALRM, which Python delivers between bytecodes. A
    stage stuck in one long call (a C function that never returns to Python) cannot be interrupted
    so: a watchdog thread then records it as timed out and replaces the process with a fresh one
    (``os.execv``) that resumes after it (``resume_after``, the stages before it read back from
    report.json), so the next stage still runs.
    """
    records = []
    previous = {}
    if resume_after is not None:
        saved = json.loads((report.out / "report.json").read_text())
        previous = {s["name"]: s for s in saved["stages"]}
    resumed = resume_after is not None
    failed_to_run = False
    for d in stages:
        cap = (d.smoke_cap_s if ctx.smoke else d.cap_s) * ctx.args.cap_scale
        record = Stage(d.name, d.title, cap, smoke=ctx.smoke)
        if resumed and d.name in previous:
            loaded = dict(previous[d.name])
            loaded["checks"] = [Check(**c) for c in loaded["checks"]]
            record = Stage(**loaded, smoke=ctx.smoke)
            failed_to_run |= record.status in ("timed out", "error")
        if d.name == resume_after:
            resumed = False
        records.append(record)
        report.stages.append(record)
    report.write()
    skip_until = resume_after
    for d, record in zip(stages, records):
        if skip_until is not None:
            if d.name == skip_until:
                skip_until = None
            continue
        left = deadline - clock.wall()
        print(f"\n== {d.name}: {d.title} (cap {record.cap_s:g} s, {max(left, 0):.0f} s of the budget left)", flush=True)
        if d.needs_cuda and not ctx.cuda:
            record.status, record.reason = "skipped: no CUDA", d.needs_cuda
        elif d.optional and not getattr(ctx.args, d.optional.strip("-").replace("-", "_"), False):
            record.status, record.reason = f"skipped: not asked for ({d.optional})", "optional stage"
        elif ctx.args.only and d.name not in ctx.args.only and d.name != "environment":  # it informs the rest
            record.status, record.reason = "skipped: not in --only", ""
        elif left < 3:
            record.status, record.reason = "skipped: out of time", f"{max(left, 0):.1f} s of the budget left"
        else:
            cap = min(record.cap_s, left)
            ctx.shared["stage_deadline"] = clock.monotonic() + cap
            record.status = "running"
            report.write()
            start = clock.monotonic()
            watchdog = _Watchdog(ctx, report, record, cap, deadline) if clock.watchdog else None
            try:
                with clock.alarm(cap):
                    d.run(ctx, record)
            except StageTimeout:
                record.status = "timed out"
                record.reason = f"stopped after {cap:.0f} s; the figures above are what it measured"
                failed_to_run = True
            except Exception as err:  # a stage that breaks is a result too; the next one runs
                record.status = "error"
                record.reason = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                record.notes.append("traceback (last lines): " + " / ".join(
                    line.strip() for line in traceback.format_exc().strip().splitlines()[-6:]))
                failed_to_run = True
            else:
                record.status = "failed" if record.failed_checks() else "passed"
            finally:
                if watchdog is not None:
                    watchdog.stop()
                record.seconds = round(clock.monotonic() - start, 2)
                _cleanup(ctx)
        if record.reason:
            print(f"  -> {record.status}: {record.reason}", flush=True)
        else:
            print(f"  -> {record.status}", flush=True)
        report.write()
    report.write(finished=True)
    _print_summary(report)
    return 1 if failed_to_run else 0


class _Watchdog:
    """Past ``cap + GRACE_S``, marks the stage timed out, writes the reports and re-executes this
    program to resume after the stage (see :func:`run_stages`)."""

    def __init__(self, ctx: Context, report: Report, record: Stage, cap: float, deadline: float):
        self.ctx, self.report, self.record, self.deadline = ctx, report, record, deadline
        self.lock = threading.Lock()
        self.done = False
        self.start = time.monotonic()
        self.timer = threading.Timer(cap + GRACE_S * ctx.args.cap_scale, self.fire)
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        with self.lock:
            self.done = True
        self.timer.cancel()

    def fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
            record = self.record
            record.status = "timed out"
            grace = GRACE_S * self.ctx.args.cap_scale
            record.reason = (f"stuck in one call {grace:.0f} s past its cap (it ignored the alarm); the stages "
                             "after it ran in a fresh process")
            record.seconds = round(time.monotonic() - self.start, 2)
            self.report.write()
            print(f"  -> {record.status}: {record.reason}", flush=True)
            argv = _without_resume(sys.argv)
            argv += ["--resume-after", record.name, "--deadline", repr(self.deadline),
                     "--work-dir", str(self.ctx.tmp)]
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, *argv])


def _without_resume(argv: list[str]) -> list[str]:
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in ("--resume-after", "--deadline", "--work-dir"):
            skip = 1
        elif not arg.startswith(("--resume-after=", "--deadline=", "--work-dir=")):
            out.append(arg)
    return out


def _cleanup(ctx: Context) -> None:
    """Leave the process as a stage found it, even after a timeout."""
    try:
        if ctx.cuda:
            torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize(ctx.device)
            torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        sampler.torch = torch
        clear_pretrained_cache()
        gc.collect()
        if ctx.cuda:
            torch.cuda.empty_cache()
    except Exception as err:  # noqa: BLE001 - cleanup must not stop the run
        print(f"  (cleanup: {type(err).__name__}: {err})", flush=True)


def _print_summary(report: Report) -> None:
    print("\n== summary (report.md and report.json in " + str(report.out) + ")", flush=True)
    for s in report.stages:
        fails = ", ".join(c.name for c in s.failed_checks())
        seconds = "" if s.seconds is None else f"{s.seconds:.1f} s"
        print(f"{s.name:12s} {s.status:28s} {seconds:>9s}" + (f"  failed: {fails}" if fails else ""), flush=True)


# --- helpers -------------------------------------------------------------------------------------


def timed(ctx: Context, work: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones (synchronised around each)."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        ctx.sync()
        start = time.perf_counter()
        work()
        ctx.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def peak_of(device_name: str) -> tuple[float, float] | None:
    for key, peaks in PEAKS.items():
        if key in device_name:
            return peaks
    return None


def model_inputs(network, batch: int, side: int, device, seed: int = 0, channels_last: bool = False):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, side, side, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), generator=generator).float().to(device)
    if getattr(network, "label_emb", None) is not None:
        return x, t, torch.randint(0, 1000, (batch,), generator=generator).to(device)
    return x, t


def measurement(op, batch: int, device, seed: int = 0, sigma_0: float = 0.1) -> torch.Tensor:
    """``y = H x0 + sigma_0 z`` for random images ``x0`` in [-1, 1], drawn on the CPU (the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, *op.image_shape, generator=generator) * 2 - 1
    y = op.H(x0.to(op.singulars().device))
    return y + sigma_0 * torch.randn(y.shape, generator=generator).to(y.device)


def guided_step(classifier, x, t, classes):
    """The classifier's share of a guided step: the gradient the sampler takes."""
    return sampler._log_prob_gradient(classifier, x, t, classes)


class ReplayNoise:
    """Stands in for the ``torch`` module inside :mod:`ddrm_helpers.sampler`: ``randn`` returns
    normals drawn on the CPU (float64) from a seeded generator, cast and moved where asked, so that
    a CPU run and a GPU run see the same noise; everything else is torch's."""

    def __init__(self, seed: int):
        self._generator = torch.Generator().manual_seed(seed)

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn(self, *size, generator=None, device=None, dtype=None, **kwargs):
        draw = torch.randn(*size, generator=self._generator, dtype=torch.float64)
        return draw.to(device=device, dtype=dtype or torch.float32)


@contextlib.contextmanager
def replayed_noise(seed: int):
    sampler.torch = ReplayNoise(seed)
    try:
        yield
    finally:
        sampler.torch = torch


@contextlib.contextmanager
def tf32(enabled: bool):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def proc_status() -> dict[str, int]:
    """This process's memory from /proc/self/status, in bytes (empty where there is none)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile") and value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def count_flops(cfg, role: str, side: int, with_input_grad: bool = False) -> int:
    """FLOPs of one image through the network, counted on the meta device (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        network = tiny.build(cfg, role, "meta")
        x = torch.empty(1, 3, side, side, requires_grad=with_input_grad)
        args = (x, torch.zeros(1))
        if getattr(network, "label_emb", None) is not None:
            args += (torch.zeros(1, dtype=torch.long),)
    counter = FlopCounterMode(display=False)
    with counter:
        out = network(*args)
        if with_input_grad:
            out.log_softmax(-1)[:, 0].sum().backward()
    return counter.get_total_flops()


# --- stages --------------------------------------------------------------------------------------


def stage_environment(ctx: Context, st: Stage) -> None:
    from torch.profiler import ProfilerActivity, profile

    env = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "torch CUDA": torch.version.cuda,
        "cuDNN": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "CPU cores": os.cpu_count(), "torch threads": torch.get_num_threads(), "device": str(ctx.device),
        "TF32 matmul": torch.backends.cuda.matmul.allow_tf32, "TF32 cuDNN": torch.backends.cudnn.allow_tf32,
        "cudnn.benchmark (global)": torch.backends.cudnn.benchmark,
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "fast path": dataclasses.asdict(fast_path()),
        "SDPA flash enabled": torch.backends.cuda.flash_sdp_enabled(),
        "SDPA memory-efficient enabled": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "SDPA cuDNN enabled": torch.backends.cuda.cudnn_sdp_enabled(),
        "SDPA math enabled": torch.backends.cuda.math_sdp_enabled(),
    }
    flash_available = getattr(torch.backends.cuda, "is_flash_attention_available", lambda: None)()
    env["flash attention built in"] = flash_available
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        env.update({"GPU": props.name, "capability": f"{props.major}.{props.minor}",
                    "GPU memory (GiB)": round(props.total_memory / GiB, 2),
                    "multiprocessors": props.multi_processor_count})
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            env["nvidia-smi"] = smi.stdout.strip() or smi.stderr.strip()[:200]
        except (OSError, subprocess.SubprocessError) as err:
            env["nvidia-smi"] = f"not available ({type(err).__name__})"
    st.table("environment", ["what", "value"])
    for key, value in env.items():
        plain = isinstance(value, (int, float, str, bool, type(None)))
        st.row("environment", [key, value if plain else json.dumps(value)])
    ctx.shared["env"] = env

    if ctx.smoke:
        st.check("CUDA device", ctx.cuda, None, "", note="a --smoke run uses the CPU when there is no GPU")
    else:
        st.check("CUDA device", ctx.cuda, ctx.cuda, "present (the full check is for a GPU)")
    peaks = peak_of(env.get("GPU", "")) if ctx.cuda else None
    ctx.shared["peaks"] = peaks
    if ctx.cuda:
        st.check("dense peak known for this GPU (float16 / tf32 TFLOP/s)", list(peaks) if peaks else None, None, "",
                 note="" if peaks else "fraction-of-peak checks become info")

    # Which kernel scaled_dot_product_attention picks for the UNet's head shape (64 channels)
    dtype = torch.float16 if ctx.cuda else torch.float32
    q = torch.randn(2, 4, 256, 64, device=ctx.device, dtype=dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=activities) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        ctx.sync()
    names = sorted({e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")})
    fused = [n for n in names if "math" not in n]
    st.check("fused attention for contiguous [B, heads, tokens, 64] " + str(dtype).replace("torch.", ""),
             ", ".join(names), bool(fused), "a flash / memory-efficient / cuDNN kernel, not the math fallback")


def _tiny_files(ctx: Context) -> dict:
    """Random-weight tiny checkpoint files of the three configs (made once per run)."""
    if "tiny_files" not in ctx.shared:
        ctx.shared["tiny_files"] = {
            name: (tiny.config(name, True), tiny.write_checkpoints(tiny.config(name, True), ctx.tmp / "tiny", seed=0))
            for name in tiny.TINY_OVERRIDES
        }
    return ctx.shared["tiny_files"]


def _restore(networks, op, y, steps, classes=None, seed=0, device=None, scale=1.0):
    generator = torch.Generator(device=device or y.device).manual_seed(seed)
    return ddrm_sample(networks.model, y, op, 0.1, steps=steps, classifier=networks.classifier,
                       classes=classes, classifier_scale=scale, generator=generator, progress=False)


def stage_correctness(ctx: Context, st: Stage) -> None:
    tasks = ["sr4", "inp"] if ctx.smoke else ["sr4", "deblur_uni", "inp", "cs4"]
    files = _tiny_files(ctx)
    table = "runs (tiny random-weight networks through load_pretrained)"
    st.table(table, ["config", "task", "finite", "same seed, same bits", "sync-free loop",
                     "GPU vs CPU, max |diff| / max |cpu| (TF32 off)", "seconds"])
    for name, (cfg, paths) in files.items():
        networks = load_pretrained(cfg, paths=paths, device=ctx.device)
        fp16_wanted = ctx.cuda and bool(cfg.model.get("use_fp16", False))
        first_convs = [n.input_blocks[0][0] if hasattr(n, "input_blocks") else n.conv_in for n in networks
                       if n is not None]
        dtypes = sorted({str(conv.weight.dtype).replace("torch.", "") for conv in first_convs})
        want = "float16" if fp16_wanted else "float32"
        st.check(f"{name}: torso precision on {ctx.device.type}", ", ".join(dtypes), dtypes == [want],
                 f"{want} (the config's use_fp16, on CUDA only)")
        cpu_networks = load_pretrained(cfg, paths=paths, device="cpu") if ctx.cuda else None
        side = cfg.data.image_size
        for task in tasks:
            start = time.monotonic()
            op = make_degradation(task, side, device=ctx.device)
            y = measurement(op, 2, ctx.device, seed=1)
            classes = torch.tensor([3, 7], device=ctx.device) if networks.classifier is not None else None
            first = _restore(networks, op, y, ctx.steps, classes)
            finite = bool(torch.isfinite(first).all())
            sync_free = "skipped: no CUDA"
            if ctx.cuda:
                torch.cuda.set_sync_debug_mode("error")
                try:
                    second = _restore(networks, op, y, ctx.steps, classes)
                    sync_free = True
                except RuntimeError as err:
                    sync_free = False
                    st.note(f"{name} {task}: a host sync in the loop: {str(err).splitlines()[0][:200]}")
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                if not sync_free:
                    second = _restore(networks, op, y, ctx.steps, classes)
            else:
                second = _restore(networks, op, y, ctx.steps, classes)
            same = bool(torch.equal(first, second))
            diff = "skipped: no CUDA"
            if ctx.cuda:
                diff = _cpu_against_gpu(ctx, cpu_networks, task, side, y, classes)
            st.row(table, [name, task, finite, same, sync_free, diff, round(time.monotonic() - start, 2)])
            st.check(f"{name} {task}: output finite", finite, finite, "all finite")
            st.check(f"{name} {task}: same seed twice, same bits", same, same, "bitwise equal")
            if ctx.cuda:
                st.check(f"{name} {task}: loop under set_sync_debug_mode('error')", sync_free, sync_free is True,
                         "no host synchronisation")
                st.check(f"{name} {task}: GPU vs CPU, float32, TF32 off", diff, diff <= 1e-4,
                         "max |gpu - cpu| / max |cpu| <= 1e-4 (float32 against float64 on the CPU: 1e-6)")
            else:
                st.skip(f"{name} {task}: loop under set_sync_debug_mode('error')", "no CUDA")
                st.skip(f"{name} {task}: GPU vs CPU, float32, TF32 off", "no CUDA")
        clear_pretrained_cache()


def _cpu_against_gpu(ctx, cpu_networks, task, side, y, classes) -> float:
    """The restoration of the float32 networks on the GPU (TF32 off) against the CPU's, with the same
    noise: ``max |gpu - cpu| / max |cpu|`` (random-weight networks restore far outside [-1, 1])."""
    gpu32 = type(cpu_networks)(*(None if n is None else copy.deepcopy(n).to(ctx.device) for n in cpu_networks))
    op_gpu = make_degradation(task, side, device=ctx.device)
    op_cpu = make_degradation(task, side)
    with tf32(False):
        with replayed_noise(5):
            on_gpu = _restore(gpu32, op_gpu, y, ctx.steps, classes).cpu()
        with replayed_noise(5):
            on_cpu = _restore(cpu_networks, op_cpu, y.cpu(), ctx.steps, None if classes is None else classes.cpu())
    return ((on_gpu - on_cpu).abs().max() / on_cpu.abs().max()).item()


# The networks timed, in order: (label, config, role, torso dtypes, variants: "all" or "default")
FORWARD_NETWORKS = [
    ("ADM UNet (imagenet_256)", "imagenet_256", "model", ("float16", "float32"), "all"),
    ("classifier fwd+grad (imagenet_256_cc)", "imagenet_256_cc", "classifier", ("float16", "float32"), "all"),
    ("DDPM UNet (celeba_hq)", "celeba_hq", "model", ("float32",), "all"),
    ("ADM UNet (imagenet_256_cc)", "imagenet_256_cc", "model", ("float16",), "default"),
]


def stage_forward(ctx: Context, st: Stage) -> None:
    tiny_sizes = ctx.smoke
    peaks = ctx.shared.get("peaks")
    warmup, repeats = (1, 1) if ctx.smoke else (2, 5)
    table = "seconds per forward"
    st.table(table, ["network", "batch", "torso", "layout", "cudnn.benchmark", "group norm", "ms / forward",
                     "ms / image", "TFLOP/s", "% of fp16 peak", "peak GiB"])
    flops = ctx.shared.setdefault("flops", {})
    results = ctx.shared.setdefault("forward", {})
    for label, config_name, role, dtypes, variants in FORWARD_NETWORKS:
        cfg = tiny.config(config_name, tiny_sizes)
        side = ctx.side(cfg, role)
        key = (config_name, role)
        if key not in flops:
            flops[key] = count_flops(cfg, role, side, with_input_grad=(role == "classifier"))
            st.check(f"{label}: FLOPs per image", flops[key] / 1e12, None, "", unit="TFLOP",
                     note="counted on meta" + (", forward + input gradient" if role == "classifier" else ""))
        for dtype_name in dtypes:
            network = tiny.build(cfg, role, ctx.device)  # built on the device: the table must follow
            if dtype_name == "float16":
                network.convert_torso(torch.float16)
            combos = [(cl, bench, True) for cl in (True, False) for bench in (True, False)]
            if variants == "default":
                combos = combos[:1]
            elif dtype_name == "float16":
                combos.append((True, ctx.cuda, False))  # the group norm's float32 round trip
            for channels_last, benchmark, half_norm in combos:
                if benchmark and not ctx.cuda:
                    continue  # cuDNN only
                network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                for batch in ctx.batches:
                    args = model_inputs(network, batch, side, ctx.device, channels_last=channels_last)
                    if role == "classifier":
                        classes = torch.zeros(batch, dtype=torch.long, device=ctx.device)

                        def work(args=args, classes=classes, network=network):
                            return guided_step(network, *args, classes)
                    else:
                        def work(args=args, network=network):
                            with torch.inference_mode():
                                return network(*args)
                    with fast_path_options(channels_last=False, cudnn_benchmark=benchmark, half_group_norm=half_norm):
                        if ctx.cuda:
                            torch.cuda.reset_peak_memory_stats(ctx.device)
                        seconds = timed(ctx, work, warmup, repeats)
                    peak_gib = torch.cuda.max_memory_allocated(ctx.device) / GiB if ctx.cuda else None
                    rate = flops[key] * batch / seconds / 1e12
                    share = 100 * rate / peaks[0] if peaks else None
                    variant = (dtype_name, channels_last, benchmark, half_norm)
                    results[(label, batch, *variant)] = seconds
                    st.row(table, [label, batch, dtype_name, "channels_last" if channels_last else "NCHW",
                                   benchmark, ("float16" if half_norm else "float32 round trip")
                                   if dtype_name == "float16" else "float32",
                                   round(seconds * 1e3, 3), round(seconds * 1e3 / batch, 3), round(rate, 2),
                                   None if share is None else round(share, 1),
                                   None if peak_gib is None else round(peak_gib, 2)])
            del network
            gc.collect()
            if ctx.cuda:
                torch.cuda.empty_cache()
    _forward_checks(ctx, st, results, flops, peaks)


def _forward_checks(ctx, st, results, flops, peaks) -> None:
    big = ctx.batches[1]
    adm = "ADM UNet (imagenet_256)"

    def get(label, batch, dtype, cl=True, bench=True, half=True):
        return results.get((label, batch, dtype, cl, bench, half))

    default_gpu = ctx.cuda
    default = get(adm, big, "float16", True, default_gpu)
    if default is not None:
        rate = flops[("imagenet_256", "model")] * big / default / 1e12
        if peaks:
            st.check(f"ADM UNet, float16 torso, batch {big}: share of the GPU's float16 peak", 100 * rate / peaks[0],
                     100 * rate / peaks[0] >= 20, ">= 20 % (the estimate behind 0.19 s per image on an H200)",
                     unit="%", perf=True)
        else:
            st.check(f"ADM UNet, float16 torso, batch {big}: TFLOP/s", rate, None, "")
        st.check(f"ADM UNet: seconds per image-forward at batch {big} (package defaults)", default / big, None, "",
                 unit="s")
    comparisons = [
        ("channels_last not slower than NCHW (ADM float16, batch {b})", get(adm, big, "float16", True, default_gpu),
         get(adm, big, "float16", False, default_gpu), "keeps the channels_last default"),
        ("channels_last not slower than NCHW (DDPM float32, batch {b})",
         get("DDPM UNet (celeba_hq)", big, "float32", True, default_gpu),
         get("DDPM UNet (celeba_hq)", big, "float32", False, default_gpu), "keeps the channels_last default"),
        ("float16 group norm not slower than the float32 round trip (ADM, batch {b})",
         get(adm, big, "float16", True, default_gpu, True), get(adm, big, "float16", True, default_gpu, False),
         "keeps half_group_norm on"),
        ("float16 torso faster than float32 (ADM, batch {b})", get(adm, big, "float16", True, default_gpu),
         get(adm, big, "float32", True, default_gpu), "float16 is what load_pretrained uses"),
    ]
    if ctx.cuda:
        comparisons.append(("cudnn.benchmark not slower than without (ADM float16 channels_last, batch {b})",
                            get(adm, big, "float16", True, True), get(adm, big, "float16", True, False),
                            "keeps the cudnn_benchmark default"))
    for name, new, old, why in comparisons:
        name = name.format(b=big)
        if new is None or old is None:
            st.skip(name, "a figure is missing (timed out before it?)")
            continue
        strict = "faster than" in name
        ok = new < old if strict else new <= 1.05 * old
        if not ctx.cuda:
            st.check(name, new / old, None, "", unit="x the other's time",
                     note="CPU figures: they do not decide the CUDA defaults")
        else:
            st.check(name, new / old, ok, ("< 1" if strict else "<= 1.05") + f": {why}", unit="x the other's time",
                     perf=True)
    if not ctx.cuda:
        st.skip("cudnn.benchmark not slower than without", "no CUDA")


def stage_profile(ctx: Context, st: Stage) -> None:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    cfg = tiny.config("imagenet_256", ctx.smoke)
    network = tiny.build(cfg, "model", ctx.device)
    network.convert_torso(torch.float16)
    side = ctx.side(cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    torso_norms = sum(isinstance(m, GroupNorm) for blocks in (network.input_blocks, network.middle_block,
                                                               network.output_blocks) for m in blocks.modules())
    figures = {}
    for batch in ctx.batches:
        args = model_inputs(network, batch, side, ctx.device)
        with torch.inference_mode():
            for _ in range(2):
                network(*args)  # layout, autotuning, caches
            ctx.sync()
            with profile(activities=activities) as prof, record_function("forward"):  # launch to completion
                network(*args)
                ctx.sync()
        events = prof.events()
        averages = prof.key_averages()
        names = {e.key for e in averages}
        casts = sum(e.count for e in averages if e.key == "aten::_to_copy")
        if ctx.cuda:
            kernels = [e for e in events if e.device_type == DeviceType.CUDA]
            busy = sum(e.time_range.elapsed_us() for e in kernels)  # microseconds of GPU work
            conv = sum(e.device_time_total for e in averages if e.key == "aten::convolution")
            wall = next((e.cpu_time_total for e in averages if e.key == "forward"), 0)
            figures[batch] = {"kernels": len(kernels), "conv share": conv / max(busy, 1e-9), "casts": casts,
                              "busy": busy, "wall": wall}
        else:
            total = next((e.cpu_time_total for e in averages if e.key == "forward"), 1)
            conv = sum(e.cpu_time_total for e in averages if e.key == "aten::convolution")
            figures[batch] = {"ops": sum(e.count for e in averages if e.key.startswith("aten::")),
                              "conv share": conv / total, "casts": casts}
        figures[batch]["attention"] = sorted(n for n in names if n.startswith("aten::_scaled_dot_product"))
        st.table(f"batch {batch}: the 12 costliest ops", ["op", "calls", "time (ms)"])
        key = (lambda e: e.self_device_time_total) if ctx.cuda else (lambda e: e.self_cpu_time_total)
        for e in sorted(averages, key=key, reverse=True)[:12]:
            st.row(f"batch {batch}: the 12 costliest ops", [e.key[:60], e.count, round(key(e) / 1e3, 3)])

    small, big = ctx.batches
    attention = figures[big]["attention"]
    fused = [n for n in attention if "math" not in n]
    st.check("attention kernel", ", ".join(attention), bool(fused) and len(fused) == len(attention),
             "fused only (flash / memory-efficient / cuDNN), no math fallback")
    with fast_path_options(half_group_norm=False):
        args = model_inputs(network, small, side, ctx.device)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            network(*args)
    casts_off = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    st.check("casts per forward removed by the float16 group norm", casts_off - figures[small]["casts"],
             casts_off - figures[small]["casts"] == 2 * torso_norms,
             f"= 2 x {torso_norms} torso norms (one cast in, one out, each)",
             note=f"{figures[small]['casts']} casts left per forward")
    if ctx.cuda:
        st.check(f"kernels per forward, batch {small}", figures[small]["kernels"],
                 figures[small]["kernels"] <= KERNELS_BEFORE, f"<= {KERNELS_BEFORE} (before this work)", perf=True)
        st.check(f"GPU busy share of the forward's wall time, batch {small}",
                 100 * figures[small]["busy"] / max(figures[small]["wall"], 1e-9), None, "", unit="%",
                 note="low: launch-bound (what compile_mode='reduce-overhead' is for)")
        st.check(f"convolution share of GPU time, batch {big}", 100 * figures[big]["conv share"],
                 figures[big]["conv share"] >= 0.6, ">= 60 % (99.4 % of the FLOPs are convolutions)", unit="%",
                 perf=True)
        st.check(f"kernels per forward, batch {big}", figures[big]["kernels"], None, "")
    else:
        st.skip(f"kernels per forward, batch {small}", "no CUDA (kernels are CUDA events)")
        st.check(f"convolution share of CPU time, batch {big}", 100 * figures[big]["conv share"], None, "", unit="%")
        st.check(f"aten ops per forward, batch {small}", figures[small]["ops"], None, "")


def _sampler_setups(ctx: Context):
    """Config 2 (unconditional UNet) and Config 3 (class-conditional UNet + classifier), random
    weights, placed as load_pretrained places them (float16 torsos on CUDA)."""
    setups = []
    for name in ("imagenet_256", "imagenet_256_cc"):
        cfg = tiny.config(name, ctx.smoke)
        model = tiny.build(cfg, "model", ctx.device, seed=0)
        classifier = tiny.build(cfg, "classifier", ctx.device, seed=1) if "classifier" in cfg.checkpoints else None
        if ctx.cuda:
            model.convert_torso(torch.float16)
            if classifier is not None:
                classifier.convert_torso(torch.float16)
        setups.append((name, cfg, model, classifier))
    return setups


def stage_sampler(ctx: Context, st: Stage) -> None:
    table = f"the {ctx.steps}-step sampler against its network work alone"
    st.table(table, ["config", "batch", "sampler s", "networks alone s", "ratio", "s / image"])
    for name, cfg, model, classifier in _sampler_setups(ctx):
        side = ctx.side(cfg, "classifier" if classifier is not None else "model")
        op = make_degradation("sr4", side, device=ctx.device)
        for batch in ctx.batches:
            y = measurement(op, batch, ctx.device)
            classes = torch.arange(batch, device=ctx.device) if classifier is not None else None

            def run(steps, y=y, classes=classes, model=model, classifier=classifier, op=op):
                generator = torch.Generator(device=ctx.device).manual_seed(0)
                return ddrm_sample(model, y, op, 0.1, steps=steps, classifier=classifier, classes=classes,
                                   generator=generator, progress=False)

            run(2)  # warm: layout, autotuning
            ctx.sync()
            start = time.perf_counter()
            out = run(ctx.steps)
            ctx.sync()
            whole = time.perf_counter() - start
            args = model_inputs(model, batch, side, ctx.device)

            def networks(args=args, classes=classes, model=model, classifier=classifier):
                for _ in range(ctx.steps):
                    with torch.no_grad():
                        model(*args)
                    if classifier is not None:
                        guided_step(classifier, args[0], args[1], classes)

            alone = timed(ctx, networks, 1, 1)
            ratio = whole / alone
            st.row(table, [name, batch, round(whole, 3), round(alone, 3), round(ratio, 3), round(whole / batch, 4)])
            st.check(f"{name}, batch {batch}: sampler / its network work", ratio, ratio <= 1.10,
                     "<= 1.10 (the sampler's own work under 10 %)", unit="x", perf=True)
            st.check(f"{name}, batch {batch}: seconds per image", whole / batch, None, "", unit="s")
            st.check(f"{name}, batch {batch}: output finite", bool(torch.isfinite(out).all()),
                     bool(torch.isfinite(out).all()), "all finite")


def stage_tiled(ctx: Context, st: Stage) -> None:
    """Photos at their own size: a 1024x768 result (--smoke: 32x24), Config 2 sr4 (from a 256x192
    photo) and Config 1 deblur_gauss, restored in tiles of the model's size with the default
    overlap, at the sampler's default batch of tiles; seconds per photo and peak memory."""
    from ddrm_helpers.engine import resolve_settings, sample_measurements
    from ddrm_helpers.models.pretrained import Pretrained
    from ddrm_helpers.schedule import betas_from_config
    from ddrm_helpers.tiles import tile_count

    height, width = (24, 32) if ctx.smoke else (768, 1024)
    table = f"a {width}x{height} result restored at its own size, {ctx.steps} steps"
    st.table(table, ["config", "task", "tile", "tiles", "network evaluations", "seconds per photo", "peak GiB"])
    for name, task, sigma_y in (("imagenet_256", "sr4", 0.05), ("celeba_hq", "deblur_gauss", 0.0)):
        cfg = tiny.config(name, ctx.smoke)
        tile = ctx.side(cfg)
        model = tiny.build(cfg, "model", ctx.device, seed=0)
        if ctx.cuda and cfg.model.get("use_fp16", False):
            model.convert_torso(torch.float16)  # as load_pretrained does on CUDA
        op = make_degradation(task, (height, width), device=ctx.device)
        y = measurement(op, 1, ctx.device, sigma_0=2 * sigma_y)
        settings = resolve_settings(cfg, task, sigma_y, ctx.steps, None, None, 0, 1, batch_size=8,
                                    device=ctx.device)
        learned = bool(cfg.model.get("learn_sigma", False))

        def run(op=op, y=y, settings=settings, model=model, cfg=cfg, tile=tile, learned=learned):
            return sample_measurements(Pretrained(model, None), y, op, settings, classes=None, progress=False,
                                       generator=torch.Generator(device=ctx.device).manual_seed(0),
                                       betas=betas_from_config(cfg), learned_sigma=learned, tile=tile)

        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        ctx.sync()
        start = time.perf_counter()
        out = run()
        ctx.sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(ctx.device) / GiB if ctx.cuda else proc_status().get("VmHWM", 0) / GiB
        tiles = tile_count((height, width), tile)
        st.row(table, [name, task, tile, tiles, tiles * ctx.steps, round(seconds, 2), round(peak, 2)])
        st.check(f"{name} {task}: seconds per {width}x{height} photo", seconds, None, "", unit="s")
        st.check(f"{name} {task}: peak memory", peak, None, "",
                 unit="GiB" + ("" if ctx.cuda else " (the process's high-water mark)"))
        st.check(f"{name} {task}: output finite", bool(torch.isfinite(out).all()), bool(torch.isfinite(out).all()),
                 "all finite")
        del model, op


def stage_memory(ctx: Context, st: Stage) -> None:
    """The notebook's worst state: all four networks resident (the cache keeps every config's), then
    Config 3 guided at its batch size (8)."""
    dev = ctx.device
    resident = []
    for name in ("celeba_hq", "imagenet_256", "imagenet_256_cc"):
        cfg = tiny.config(name, ctx.smoke)
        for role in cfg.checkpoints:
            network = tiny.build(cfg, role, dev, seed=0)
            if cfg[role].get("use_fp16" if role == "model" else "classifier_use_fp16", False):
                network.convert_torso(torch.float16)  # as load_pretrained does on CUDA
            resident.append(network)
    model, classifier = resident[2], resident[3]
    weights = torch.cuda.memory_allocated(dev) / GiB
    st.check("weights of all four networks", weights, None, "", unit="GiB")
    cfg = tiny.config("imagenet_256_cc", ctx.smoke)
    side = cfg.data.image_size
    op = make_degradation("sr4", side, device=dev)
    batch = int(cfg.sampling.batch_size)
    y = measurement(op, batch, dev)
    classes = torch.arange(batch, device=dev)

    def step_twice():
        generator = torch.Generator(device=dev).manual_seed(0)
        return ddrm_sample(model, y, op, 0.1, steps=2, classifier=classifier, classes=classes,
                           generator=generator, progress=False)

    torch.cuda.reset_peak_memory_stats(dev)
    step_twice()
    torch.cuda.synchronize(dev)
    allocated, reserved = torch.cuda.max_memory_allocated(dev) / GiB, torch.cuda.max_memory_reserved(dev) / GiB
    st.check(f"peak allocated, Config 3 guided at batch {batch}, all networks resident", allocated,
             allocated <= T4_ALLOCATOR_GIB - 0.5, f"<= {T4_ALLOCATOR_GIB - 0.5:g} GiB (headroom on a 15 GB T4)",
             unit="GiB", perf=True)
    st.check("peak reserved (allocator cache included; cuDNN's autotuning tries big workspaces)", reserved, None, "",
             unit="GiB")
    total = torch.cuda.get_device_properties(dev).total_memory
    fraction = min(1.0, T4_ALLOCATOR_GIB * GiB / total)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(fraction, dev)
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        out = step_twice()
        torch.cuda.synchronize(dev)
        ok, message = bool(torch.isfinite(out).all()), "ran"
    except torch.OutOfMemoryError as err:
        ok, message = False, f"out of memory: {str(err).splitlines()[0][:160]}"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
    st.check(f"the same under set_per_process_memory_fraction({fraction:.3f}) = {T4_ALLOCATOR_GIB:g} GiB",
             message, ok, "runs, finite (as on a 15 GB T4)", perf=True)
    st.check("peak allocated under that cap", torch.cuda.max_memory_allocated(dev) / GiB, None, "", unit="GiB")


def stage_precision(ctx: Context, st: Stage) -> None:
    """Float32 against the float16 torso. Full size: Config 3's networks. --smoke: the unconditional
    tiny UNet at 16 pixels for eps and the restoration (float16 convolutions are slow on a CPU)."""
    dev = ctx.device
    cfg = tiny.config("imagenet_256_cc", ctx.smoke)
    model_cfg = tiny.config("imagenet_256", True) if ctx.smoke else cfg
    side = ctx.side(model_cfg)
    model32 = tiny.build(model_cfg, "model", dev, seed=0)
    classifier32 = tiny.build(cfg, "classifier", dev, seed=1)
    model16 = copy.deepcopy(model32).convert_torso(torch.float16)
    classifier16 = copy.deepcopy(classifier32).convert_torso(torch.float16)
    args = model_inputs(model32, 2, side, dev, seed=3)
    args = (args[0], torch.tensor([999.0, 50.0], device=dev), *args[2:])
    with torch.no_grad(), tf32(False):
        eps32 = model32(*args)[:, :3]
        eps16 = model16(*args)[:, :3]
        with fast_path_options(half_group_norm=False):
            eps16_old = model16(*args)[:, :3]
    new, old = rel(eps16, eps32), rel(eps16_old, eps32)
    which = model_cfg.name + (" (tiny, 16 px)" if ctx.smoke else "")
    st.check(f"eps of {which}, float16 torso vs float32 (TF32 off)", new, new <= 1e-2, "||d|| / ||eps32|| <= 1e-2")
    st.check("eps, float16 torso with the float32 group-norm round trip vs float32", old, None, "")
    st.check("float16 group norm: eps error over the round trip's", new - old, new - old <= 1e-3,
             "<= 1e-3 (else keep half_group_norm off)")
    side_c = ctx.side(cfg, "classifier")
    x = model_inputs(classifier32, 2, side_c, dev, seed=4)[0]
    t, classes = torch.tensor([999.0, 50.0], device=dev), torch.tensor([3, 500], device=dev)
    with tf32(False):
        g32 = guided_step(classifier32, x, t, classes)
    g16 = guided_step(classifier16, x, t, classes)
    error = rel(g16, g32)
    zeros32, zeros16 = (g32 == 0).double().mean().item(), (g16 == 0).double().mean().item()
    st.check("classifier gradient, float16 torso vs float32", error, error <= 5e-2, "||d|| / ||g32|| <= 5e-2")
    st.check("classifier gradient: share of exact zeros, float16 torso", 100 * zeros16, zeros16 - zeros32 <= 1e-3,
             f"at most 0.1 points above float32's ({100 * zeros32:.3f} %)", unit="%")
    guided = not ctx.smoke
    op = make_degradation("sr4", side, device=dev)
    y_meas = measurement(op, 1, dev)
    outs = []
    for model, classifier in ((model32, classifier32), (model16, classifier16)):
        generator = torch.Generator(device=dev).manual_seed(0)
        with tf32(False) if model is model32 else contextlib.nullcontext():
            outs.append(ddrm_sample(model, y_meas, op, 0.1, steps=ctx.steps, classifier=classifier if guided else None,
                                    classes=torch.tensor([3], device=dev) if guided else None,
                                    generator=generator, progress=False))
    what = "Config 3 guided" if guided else f"{which}, unguided"
    error = rel(outs[1], outs[0])
    st.check(f"full restoration ({what}, sr4, {ctx.steps} steps): float16 torso vs float32", error, error <= 2e-2,
             "||d|| / ||x32|| <= 2e-2 (random weights restore far outside [-1, 1]: relative, not PSNR)")
    clipped = [o.clamp(-1, 1) for o in outs]
    mse = (clipped[0] - clipped[1]).double().pow(2).mean().item()
    st.check("full restoration clipped to [-1, 1]: PSNR float16 vs float32",
             10 * math.log10(4 / mse) if mse > 0 else float("inf"), None, "", unit="dB")


def stage_loading(ctx: Context, st: Stage) -> None:
    cfg = tiny.config("imagenet_256_cc", ctx.smoke)
    folder = ctx.tmp / "full"
    start = time.monotonic()
    paths = tiny.write_checkpoints(cfg, folder, ctx.device)
    ctx.sync()
    size = sum(p.stat().st_size for p in paths.values())
    st.check("random-weight files written (model + classifier)", size / GiB, None, "", unit="GiB",
             note=f"in {time.monotonic() - start:.1f} s")
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
    before = proc_status()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (VmHWM)
        peak_reset = True
    except OSError:
        peak_reset = False
    gpu_before = torch.cuda.memory_allocated(ctx.device) if ctx.cuda else 0
    start = time.monotonic()
    networks = load_pretrained(cfg, paths=paths, device=ctx.device)
    ctx.sync()
    seconds = time.monotonic() - start
    after = proc_status()
    st.check("load_pretrained time", seconds, seconds <= (10 if ctx.smoke else 30), "<= 30 s (file in the page cache)",
             unit="s", perf=True)
    if before and after:
        mib = 2**20
        grown = (after.get("RssAnon", 0) - before.get("RssAnon", 0)) / mib
        st.check("host anonymous memory growth", grown, grown <= 1024, "<= 1024 MiB (weights are memory-mapped)",
                 unit="MiB")
        st.check("host file-backed resident memory growth (page cache mapped)",
                 (after.get("RssFile", 0) - before.get("RssFile", 0)) / mib, None, "", unit="MiB")
        if peak_reset:
            st.check("host peak resident memory growth during the load",
                     (after.get("VmHWM", 0) - before.get("VmRSS", 0)) / mib, None, "", unit="MiB")
    else:
        st.skip("host memory growth", "no /proc/self/status")
    weight_bytes = sum(t.numel() * t.element_size() for n in networks if n is not None
                       for t in (*n.parameters(), *n.buffers()))
    if ctx.cuda:
        on_gpu = torch.cuda.memory_allocated(ctx.device) - gpu_before
        st.check("GPU memory after the load / the weights' bytes", on_gpu / weight_bytes,
                 0.95 <= on_gpu / weight_bytes <= 1.10, "0.95 .. 1.10", unit="x",
                 note=f"{on_gpu / GiB:.2f} GiB on the GPU; weights {weight_bytes / GiB:.2f} GiB")
    else:
        st.skip("GPU memory after the load", "no CUDA")
    start = time.monotonic()
    other_name = f"cuda:{torch.cuda.current_device()}" if ctx.cuda else "cpu:0"
    again = load_pretrained(cfg, paths=paths, device=other_name)
    seconds = time.monotonic() - start
    same = again.model is networks.model and again.classifier is networks.classifier
    st.check(f"second call ('{other_name}' after '{ctx.device}'): the cached networks", same, same,
             "the same objects")
    st.check("second call time", seconds, seconds <= 0.5, "<= 0.5 s", unit="s", perf=True)
    del networks, again
    clear_pretrained_cache()
    shutil.rmtree(folder, ignore_errors=True)


def stage_compile(ctx: Context, st: Stage) -> None:
    """In a subprocess (a hung compile is killed at the cap), results passed back through a JSON file."""
    result = ctx.tmp / "compile.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--compile-child", str(result),
               "--device", str(ctx.device)] + (["--smoke"] if ctx.smoke else [])
    deadline = ctx.shared.get("stage_deadline", time.monotonic() + st.cap_s) - 3
    cap = deadline - time.monotonic()
    process = subprocess.Popen(command, start_new_session=True)
    try:
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    except StageTimeout:
        _kill(process)
        raise
    if process.poll() is None:
        _kill(process)
        st.note(f"the compile subprocess was stopped at {cap:.0f} s; the figures below are what it wrote")
    data = json.loads(result.read_text()) if result.exists() else {"rows": [], "checks": []}
    table = "the sampler, eager against compile_mode='reduce-overhead'"
    st.table(table, ["batch", "eager s", "first compiled call s", "compiled s", "speedup", "rel. difference"])
    for row in data["rows"]:
        st.row(table, row)
    for c in data["checks"]:
        st.check(c["name"], c["value"], c["passed"], c["threshold"], unit=c.get("unit", ""), perf=c.get("perf", False))
    for n in data.get("notes", []):
        st.note(n)
    if process.returncode not in (0, None):
        st.check("compile subprocess exit status", process.returncode, False, "0")


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def compile_child(result: Path, device: torch.device, smoke: bool) -> int:
    data = {"rows": [], "checks": [], "notes": []}

    def save():
        _atomic_write(result, json.dumps(data, default=str))

    def check(name, value, passed, threshold, unit="", perf=False):
        data["checks"].append({"name": name, "value": value, "passed": passed, "threshold": threshold,
                               "unit": unit, "perf": perf})
        print(f"  [compile] {name}: {value} ({threshold})", flush=True)
        save()

    ctx = Context(Path("."), smoke, device, argparse.Namespace(only=None, cap_scale=1.0), Path("."))
    cfg = tiny.config("imagenet_256", smoke)
    model = tiny.build(cfg, "model", device, seed=0)
    if device.type == "cuda":
        model.convert_torso(torch.float16)
    side = ctx.side(cfg)
    op = make_degradation("sr4", side, device=device)
    for batch in ctx.batches:
        y = measurement(op, batch, device)

        def run(steps=ctx.steps, y=y):
            generator = torch.Generator(device=device).manual_seed(0)
            return ddrm_sample(model, y, op, 0.1, steps=steps, generator=generator, progress=False)

        run(2)
        eager_out = run()
        eager = timed(ctx, run, 0, 1)
        with fast_path_options(compile_mode="reduce-overhead"):
            first = timed(ctx, run, 0, 1)
            compiled_out = run()
            compiled = timed(ctx, run, 0, 2)
        difference = rel(compiled_out, eager_out)
        data["rows"].append([batch, round(eager, 3), round(first, 2), round(compiled, 3), round(eager / compiled, 2),
                             difference])
        save()
        check(f"batch {batch}: speedup of the compiled sampler", eager / compiled,
              eager / compiled >= (1.5 if batch == 1 else 1.0), ">= 1.5 at batch 1, >= 1.0 at batch 8", "x", True)
        check(f"batch {batch}: first call (compiling)", first, first <= 180, "<= 180 s", "s", True)
        check(f"batch {batch}: compiled vs eager output", difference, difference <= 1e-2, "||d|| / ||eager|| <= 1e-2")
    try:
        from torch._dynamo.utils import counters

        data["notes"].append("dynamo: " + json.dumps({k: dict(v) for k, v in counters.items()
                                                      if k in ("stats", "graph_break", "recompiles")}, default=str))
    except Exception as err:  # noqa: BLE001 - a missing private counter is no failure
        data["notes"].append(f"dynamo counters unavailable: {err}")
    save()
    return 0


STAGES = [
    StageDef("environment", "versions, GPU, attention backends", 20, 15, stage_environment),
    StageDef("correctness", "tiny networks of the three configs on the device: finite, precision, no host sync, "
             "same seed same bits, CPU against GPU", 75, 25, stage_correctness),
    StageDef("forward", "full-size forwards: batch 1 and 8, float32/float16 torso x NCHW/channels_last x "
             "cudnn.benchmark, TFLOP/s", 150, 25, stage_forward),
    StageDef("profile", "one profiled forward: convolution share, kernel count, attention kernel, casts", 40, 15,
             stage_profile),
    StageDef("sampler", "20-step DDRM, Config 2 and Config 3 (guided), batch 1 and 8, against its networks alone",
             75, 20, stage_sampler),
    StageDef("tiled", "a 1024x768 photo at its own size, in tiles: Config 2 sr4 and Config 1 deblur, seconds "
             "per photo and peak memory", 90, 30, stage_tiled),
    StageDef("memory", "peak memory in the notebook's worst state, and under a 15 GB card's cap", 60, 15,
             stage_memory, needs_cuda="peak memory and the per-process cap are CUDA allocator figures"),
    StageDef("precision", "float32 against float16 torso: eps, classifier gradient, a full restoration", 50, 20,
             stage_precision),
    StageDef("loading", "load_pretrained of random-weight full-size files: time, host memory, GPU memory", 60, 15,
             stage_loading),
    StageDef("compile", "the sampler with compile_mode='reduce-overhead' (CUDA graphs), in a capped subprocess",
             240, 60, stage_compile, needs_cuda="torch.compile's CUDA graphs need CUDA (on the CPU it needs a C "
             "compiler and minutes)", optional="--compile"),
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", help="folder for report.json and report.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, every stage (CPU: well under a minute)")
    parser.add_argument("--compile", action="store_true", help="also the compile stage (in a capped subprocess)")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (default 460; 50 with --smoke)")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--cap-scale", type=float, default=1.0,
                        help="multiply every stage's cap (a slow or busy machine; the budget still applies)")
    parser.add_argument("--only", type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
                        help=f"comma-separated stages, of: {', '.join(STAGE_NAMES)} (environment always runs)")
    parser.add_argument("--compile-child", metavar="RESULT", help=argparse.SUPPRESS)
    parser.add_argument("--resume-after", help=argparse.SUPPRESS)  # set by the watchdog's re-execution
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_child is None and not args.out:
        parser.error("give the output folder, e.g. python bench/gpu_check.py /tmp/gpu_report")
    if args.only and set(args.only) - set(STAGE_NAMES):
        parser.error(f"--only: unknown stages {', '.join(sorted(set(args.only) - set(STAGE_NAMES)))}")
    return args


def main(argv=None) -> int:
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.compile_child:
        return compile_child(Path(args.compile_child), device, args.smoke)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget if args.budget is not None else (50.0 if args.smoke else 460.0)
    if args.resume_after:  # a fresh process after a stuck stage: the same run goes on
        meta = {k: v for k, v in json.loads((out / "report.json").read_text()).items() if k != "stages"}
        deadline = args.deadline
        print(f"GPU check: resuming after the stuck stage '{args.resume_after}'", flush=True)
    else:
        meta = {
            "format": 1, "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "mode": "smoke" if args.smoke else "full", "device": str(device), "torch": torch.__version__,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "budget_s": budget,
            "gpu_figures": device.type == "cuda", "started_epoch": time.time(),
        }
        deadline = meta["started_epoch"] + budget
        print(f"GPU check: {meta['mode']} run on {device}, budget {budget:g} s, reports in {out}", flush=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        ctx = Context(out, args.smoke, device, args, work)
        return run_stages(ctx, Report(out, meta), STAGES, deadline, resume_after=args.resume_after)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
