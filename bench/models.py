"""Seconds per forward of the three networks (and the classifier), on the CPU and, if present, a GPU.

    python bench/models.py            # CPU: tiny widths; GPU (if any): full size, every variant
    python bench/models.py --full     # also the full-size networks on the CPU (minutes on 2 cores)
    python bench/models.py --compile  # also torch.compile on a GPU (minutes per compile)

Weights are PyTorch's default initialisation (the timings do not depend on the values); inputs
are float32 images at the config's size and random timesteps. On the CPU: batch 1, float32. On a
GPU, at full size, batch 1 and 8: float32; float16 and bfloat16 torsos (``convert_torso``, how
``load_pretrained`` runs the ImageNet networks on a GPU); each contiguous (NCHW) and channels_last,
with cuDNN benchmark mode on (the fast path's default); with the peak GPU memory of the forward.
With ``--compile``, also ``torch.compile`` of the precision ``load_pretrained`` uses, channels_last:
two compiles per network, each from a fresh dynamo cache (so none falls back to eager after
torch's recompile limit). ``bench/gpu_check.py`` is the fuller GPU check (docs/performance.md).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddrm_helpers import build_classifier, build_model, load_config  # noqa: E402
from ddrm_helpers.models import fast_path_options  # noqa: E402

# name: (config, which network, overrides for the tiny width, tiny input side)
NETWORKS = {
    "celeba_hq DDPM UNet": ("celeba_hq", "model", {"model.ch": 32, "data.image_size": 64}, 64),
    "imagenet_256 ADM UNet": ("imagenet_256", "model", {"model.num_channels": 32}, 64),
    "imagenet_256_cc ADM UNet": ("imagenet_256_cc", "model", {"model.num_channels": 32}, 64),
    "imagenet_256_cc classifier": ("imagenet_256_cc", "classifier", {"classifier.classifier_width": 32}, 256),
}
GPU_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build(name: str, tiny: bool, device: torch.device) -> tuple[torch.nn.Module, int]:
    config_name, which, overrides, tiny_side = NETWORKS[name]
    config = load_config(config_name, **(overrides if tiny else {}))
    side = tiny_side if tiny else config.data.image_size
    with torch.device(device):  # initialised where it runs (fast on a GPU)
        network = build_classifier(config) if which == "classifier" else build_model(config)
    return network.to(device).eval().requires_grad_(False), side


def inputs(network: torch.nn.Module, batch: int, side: int, device: torch.device, channels_last=False):
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, side, side, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    if getattr(network, "label_emb", None) is not None:
        return x, t, torch.randint(0, 1000, (batch,), generator=generator).to(device)
    return x, t


def seconds_per_forward(network, args, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` forwards after ``warmup`` untimed ones."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            network(*args)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_cpu(full: bool, repeats: int) -> None:
    device = torch.device("cpu")
    print(f"## CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; batch 1, float32")
    print("| network | size | input | s / forward |")
    print("|---|---|---|---|")
    for tiny in (True, False) if full else (True,):
        for name in NETWORKS:
            network, side = build(name, tiny, device)
            args = inputs(network, 1, side, device)
            seconds = seconds_per_forward(network, args, repeats if tiny else 1, 1, device)
            width = "tiny" if tiny else "full"
            print(f"| {name} | {width} | {side}x{side} | {seconds:.3f} |", flush=True)
            del network


def bench_gpu(repeats: int, compile_too: bool) -> None:
    """Eager: every torso dtype x layout x batch. Compiled: only the precision load_pretrained uses
    (float16 torso for the ImageNet networks, float32 for the DDPM UNet), channels_last, to keep
    compile time sane. The fast path's own layout switch is off here: the layout is the row's."""
    device = torch.device("cuda")
    print(f"\n## GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}; full size")
    print("| network | batch | torso dtype | layout | compiled | s / forward | peak GiB (weights + activations)"
          " |")
    print("|---|---|---|---|---|---|---|")
    for name in NETWORKS:
        # The DDPM UNet has no mixed-precision torso (its checkpoint runs in float32)
        dtypes = ["float32"] if name.startswith("celeba") else list(GPU_DTYPES)
        variants = [(d, False, layout) for d in dtypes for layout in (False, True)]
        if compile_too:
            variants.append((dtypes[-1] if len(dtypes) == 1 else "float16", True, True))
        for dtype_name, compiled, channels_last in variants:
            for batch in (1, 8):
                layout = "channels_last" if channels_last else "contiguous"
                figures = gpu_figures(name, GPU_DTYPES[dtype_name], channels_last, compiled, batch,
                                      repeats, device)
                print(f"| {name} | {batch} | {dtype_name} | {layout} | {compiled} | {figures}", flush=True)


def gpu_figures(name, dtype, channels_last, compiled, batch, repeats, device) -> str:
    network, side = build(name, False, device)
    if dtype is not None:
        network.convert_torso(dtype)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if compiled:
        torch._dynamo.reset()  # a fresh cache: this compile is not a recompile of the last network's
        network = torch.compile(network, dynamic=False)
    args = inputs(network, batch, side, device, channels_last)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        with fast_path_options(channels_last=False, cudnn_benchmark=True):
            seconds = seconds_per_forward(network, args, repeats, 3, device)
    except (RuntimeError, torch.OutOfMemoryError) as err:  # a variant that fails is a result too
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]} | |"
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    return f"{seconds:.4f} | {peak:.2f} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also time the full-size networks on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per figure (median)")
    parser.add_argument("--compile", action="store_true", help="also the torch.compile variants on a GPU")
    parser.add_argument("--no-gpu", action="store_true", help="CPU figures only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    bench_cpu(args.full, args.repeats)
    if torch.cuda.is_available() and not args.no_gpu:
        bench_gpu(args.repeats, args.compile)
    elif not args.no_gpu:
        print("\n(no CUDA device: GPU figures skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
