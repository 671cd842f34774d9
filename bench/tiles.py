"""What restoring at any size costs: tiled DDRM with the tiny networks, and the operators by side.

Three tables, on the machine it runs on:

1. Tiled restoration with the tiny random-weight networks (bench/tiny.py: the DDPM UNet at 32x32 tiles,
   the guided-diffusion UNet at 64x64): per canvas, its tiles, the seconds of a run of ``--steps``
   steps, seconds per megapixel, the peak memory of the process that ran it (each run in a fresh
   process, so that one run's peak is not another's) and what the run itself added to it per megapixel.
2. The ratio time(4x the area) / time(the area) beside the ratio of the tiles: the cost must grow no
   faster than the number of tiles.
3. The operators' build time (``make_degradation``) by side length, up to 4096.

    python bench/tiles.py                 # everything, CPU (a few minutes on 2 cores)
    python bench/tiles.py --device cuda   # on a GPU
    python bench/tiles.py --only build --sides 256 1024 4096
    python bench/tiles.py --threads 1     # steadier where other jobs share the cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# (config, canvas sides): each canvas and the one of 4x its area
CANVASES = {"celeba_hq": [(128, 96), (256, 192)], "imagenet_256": [(128, 96), (256, 192)]}
BUILD_TASKS = ("deblur_gauss", "sr_bicubic4", "sr4", "inp", "color")


def run_one(config_name: str, height: int, width: int, steps: int, device: str, batch: int) -> dict:
    """One tiled restoration in this process: seconds and the tiles."""
    import torch
    from tiny import build, config

    from ddrm_helpers import make_degradation
    from ddrm_helpers.engine import resolve_settings, sample_measurements
    from ddrm_helpers.models.pretrained import Pretrained
    from ddrm_helpers.schedule import betas_from_config
    from ddrm_helpers.tiles import tile_count

    cfg = config(config_name, tiny=True)
    model = build(cfg, "model", device, seed=0)
    tile = int(cfg.data.image_size)
    op = make_degradation("sr4", (height, width), device=device)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    y = op.H(x)
    settings = resolve_settings(cfg, "sr4", 0.0, steps, None, None, 0, 1, batch_size=batch, device=device)
    learned = bool(cfg.model.get("learn_sigma", False))

    def work():
        sample_measurements(Pretrained(model, None), y, op, settings, classes=None, progress=False,
                            generator=torch.Generator(device=device).manual_seed(0),
                            betas=betas_from_config(cfg), learned_sigma=learned, tile=tile)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the network and the inputs, made
    work()  # the first run also starts libraries
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"seconds": seconds, "tiles": tile_count((height, width), tile), "gpu_peak": peak, "rss_before": before}


def measure(config_name: str, height: int, width: int, steps: int, device: str, batch: int) -> dict:
    """:func:`run_one` in a fresh process, with that process's peak resident memory."""
    code = (f"import json, resource, sys; sys.path[:0] = {[str(HERE.parent), str(HERE)]!r}; "
            "from tiles import run_one; "
            f"r = run_one({config_name!r}, {height}, {width}, {steps}, {device!r}, {batch}); "
            "r['rss_peak'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024; print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_table(sides, repeat: int) -> None:
    from ddrm_helpers import make_degradation

    print(f"\n3. Operators: build time (median of {repeat}), seconds")
    print("  side  " + "".join(f"{task:>14s}" for task in BUILD_TASKS))
    make_degradation("deblur_gauss", 64)  # starts the libraries
    for side in sides:
        row = []
        for task in BUILD_TASKS:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                make_degradation(task, side)
                times.append(time.perf_counter() - start)
            row.append(sorted(times)[len(times) // 2])
        print(f"  {side:5d} " + "".join(f"{t:14.2f}" for t in row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="tiles through the network at once")
    parser.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=1, help="builds per operator and side")
    parser.add_argument("--only", choices=("tiles", "build"))
    parser.add_argument("--threads", type=int,
                        help="intra-op threads (default: torch's); 1 is steadier on shared cores")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the fresh processes of table 1 too
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, load average {os.getloadavg()[0]:.1f}")
    if args.only != "build":
        print(f"\n1. Tiled sr4 restoration, tiny networks, {args.steps} steps, {args.batch} tiles a batch")
        print(f"  {'network':14s}{'canvas':>10s}{'tiles':>7s}{'seconds':>9s}{'s/MP':>8s}{'peak MB':>9s}"
              f"{'run MB/MP':>11s}")
        ratios = []
        for name, canvases in CANVASES.items():
            runs = []
            for height, width in canvases:
                r = measure(name, height, width, args.steps, args.device, args.batch)
                runs.append(r)
                megapixels = height * width / 1e6
                peak = r["gpu_peak"] if r["gpu_peak"] is not None else r["rss_peak"]
                run = peak - (0 if r["gpu_peak"] is not None else r["rss_before"])  # the run's own, not the import's
                print(f"  {name:14s}{f'{width}x{height}':>10s}{r['tiles']:7d}{r['seconds']:9.2f}"
                      f"{r['seconds'] / megapixels:8.1f}{peak / 2**20:9.0f}{run / 2**20 / megapixels:11.0f}",
                      flush=True)
            (small_h, small_w), (large_h, large_w) = canvases
            extra_mp = (large_h * large_w - small_h * small_w) / 1e6
            memory = (runs[1]["rss_peak"] - runs[1]["rss_before"] - runs[0]["rss_peak"] + runs[0]["rss_before"]) \
                if runs[0]["gpu_peak"] is None else runs[1]["gpu_peak"] - runs[0]["gpu_peak"]
            ratios.append((name, runs[1]["seconds"] / runs[0]["seconds"], runs[1]["tiles"] / runs[0]["tiles"],
                           memory / 2**20 / extra_mp))
        print("\n2. Cost of 4x the area: time ratio against tile ratio (the first must not exceed the second by much),"
              "\n   and the memory each further megapixel takes (the larger run's minus the smaller's)")
        for name, time_ratio, tile_ratio, per_mp in ratios:
            print(f"  {name:14s} time x{time_ratio:.2f}, tiles x{tile_ratio:.2f}, {per_mp:.0f} MB per further MP")
    if args.only != "tiles":
        build_table(args.sides, args.repeat)


if __name__ == "__main__":
    main()
