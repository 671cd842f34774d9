"""The GPU fast path: switches that change how the networks run, not what they compute (beyond rounding).

======================  ========  =====================================================================
switch                  default   what it does
======================  ========  =====================================================================
``channels_last``       True      On CUDA, a network stores its 4-D convolution weights channels-last
                                  (NHWC) from its first call on, and takes its input channels-last:
                                  cuDNN's tensor-core convolutions work in NHWC, so NCHW costs a
                                  transpose around every convolution. Outputs come back in the usual
                                  (NCHW-contiguous) layout. No effect on the CPU.
``cudnn_benchmark``     True      On CUDA, each network call (and the classifier's gradient in
                                  :func:`~ddrm_helpers.sampler.ddrm_sample`) runs with
                                  ``torch.backends.cudnn.benchmark`` on: cuDNN times its algorithms
                                  once per shape and keeps the fastest. The global flag is restored
                                  after the call. No effect on the CPU.
``half_group_norm``     True      A float16 input (the float16 torso) is normalised by torch's
                                  kernel in float16, which accumulates the statistics in float32 on
                                  CPU and CUDA, with the affine parameters cast once and cached; off:
                                  the input is cast to float32 and the result back, as guided-diffusion
                                  does (two more passes over every feature map). bfloat16 always
                                  takes the float32 round trip (see :class:`.layers.GroupNorm`).
``compile_mode``        None      :func:`~ddrm_helpers.sampler.ddrm_sample` runs the diffusion network
                                  through ``torch.compile(network, mode=compile_mode)``;
                                  ``"reduce-overhead"`` replays CUDA graphs, so that a step at batch 1
                                  does not pay a launch per kernel (about 1,100 per forward). The
                                  classifier stays eager. The first call compiles (minutes).
======================  ========  =====================================================================

The defaults of the first three were chosen by reasoning, not measurement: no GPU was available
when they were written. ``bench/gpu_check.py`` measures each against its alternative and says which
to keep (see docs/performance.md).

>>> from ddrm_helpers.models import fast_path, fast_path_options
>>> with fast_path_options(channels_last=False):
...     fast_path().channels_last
False
>>> fast_path().channels_last
True
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The device types that channels_last and cudnn_benchmark apply to (a test widens it to the CPU)
GPU_DEVICE_TYPES = ("cuda",)


@dataclass(frozen=True)
class FastPath:
    """The switches in force; see the module notes."""

    channels_last: bool = True
    cudnn_benchmark: bool = True
    half_group_norm: bool = True
    compile_mode: str | None = None

    def __post_init__(self):
        for name in ("channels_last", "cudnn_benchmark", "half_group_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"fast path switch {name} must be True or False; got {getattr(self, name)!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {', '.join(map(repr, COMPILE_MODES))}; got {self.compile_mode!r}"
            )


_current = FastPath()


def fast_path() -> FastPath:
    """The switches in force."""
    return _current


def set_fast_path(**changes) -> FastPath:
    """Change some switches (``set_fast_path(channels_last=False)``); returns the previous settings.

    ``set_fast_path(**dataclasses.asdict(previous))`` restores them. Unknown names raise ``TypeError``.
    """
    global _current
    previous = _current
    _current = dataclasses.replace(_current, **changes)
    return previous


@contextlib.contextmanager
def fast_path_options(**changes) -> Iterator[FastPath]:
    """The switches changed inside a ``with`` block, restored after it."""
    previous = set_fast_path(**changes)
    try:
        yield _current
    finally:
        set_fast_path(**dataclasses.asdict(previous))


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def prepare_input(network: nn.Module, first_conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """At the start of a network's forward: ``x`` in the layout the network runs in.

    On CUDA with ``channels_last`` on, the network's 4-D weights are made channels-last the first
    time (``first_conv``'s layout tells whether that was done), outside inference mode so that they
    stay ordinary tensors, and ``x`` is returned channels-last. Anywhere else ``x`` is returned as is.
    """
    if x.device.type not in GPU_DEVICE_TYPES or not _current.channels_last:
        return x
    weight = first_conv.weight
    if not _compiling() and weight.device == x.device and not weight.is_contiguous(memory_format=torch.channels_last):
        with torch.inference_mode(False), torch.no_grad():
            network.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def _benchmark_on() -> Iterator[None]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def cudnn_scope(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The cuDNN settings a network call on ``x`` runs under: benchmark on for CUDA inputs when
    ``cudnn_benchmark`` is on (and not already set), else nothing changes."""
    if (
        x.device.type not in GPU_DEVICE_TYPES
        or not _current.cudnn_benchmark
        or torch.backends.cudnn.benchmark
        or _compiling()
    ):
        return contextlib.nullcontext()
    return _benchmark_on()
