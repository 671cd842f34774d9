"""How long DDRM's own work takes: building each operator, and one sampler step without a network.

The noise model returns zeros, so a step's time is the sampler's overhead alone (two spectral
transforms, the per-coordinate update, one normal draw); add your network's time per evaluation.
A step's figure is the whole call (including the start) divided by the number of steps.

    python bench/sampler.py                          # CPU, 256x256, batch 1 and 8, every operator
    python bench/sampler.py --device cuda --names sr4 deblur_uni inp
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddrm_helpers import available_degradations, ddrm_sample, make_degradation, text_mask  # noqa: E402


def params_for(name: str, size: int) -> dict:
    """What an operator that needs a parameter gets here."""
    if name == "deblur":
        return {"kernel_h": [0.25, 0.5, 0.25], "kernel_w": [0.1, 0.2, 0.4, 0.2, 0.1]}
    if name == "inp_mask":
        return {"mask": text_mask("lorem ipsum\ndolor sit", size)}
    return {}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def zeros_model(x, t):
    return torch.zeros_like(x)


def build_seconds(name: str, size: int, device: torch.device, repeat: int) -> float:
    params = params_for(name, size)
    make_degradation(name, size, device=device, **params)  # the first call also starts libraries
    return statistics.median(
        timed(device, lambda: make_degradation(name, size, device=device, **params)) for _ in range(repeat)
    )


def step_seconds(op, batch: int, steps: int, device: torch.device, repeat: int) -> float:
    size = op.image_shape[1]
    y = op.H(torch.rand(batch, 3, size, size, device=device) * 2 - 1)
    generator = torch.Generator(device=device).manual_seed(0)

    def run(n):
        ddrm_sample(zeros_model, y, op, 0.1, steps=n, generator=generator, progress=False)

    run(2)  # warm-up
    return statistics.median(timed(device, lambda: run(steps)) for _ in range(repeat)) / steps


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = f"{models[0]} ({len(models)} logical cores)" if models else cpu
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}{gpu}; CPU {cpu}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--names", nargs="+", default=list(available_degradations()))
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(machine(device))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{args.size}x{args.size}, 3 channels, {args.steps} steps, median of {args.repeat}\n")
    print("| operator | build (ms) | " + " | ".join(f"step, batch {b} (ms)" for b in args.batch) + " |")
    print("|" + "---|" * (2 + len(args.batch)))
    for name in args.names:
        cells = [name, f"{build_seconds(name, args.size, device, args.repeat) * 1e3:.1f}"]
        op = make_degradation(name, args.size, device=device, **params_for(name, args.size))
        for batch in args.batch:
            cells.append(f"{step_seconds(op, batch, args.steps, device, args.repeat) * 1e3:.1f}")
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
