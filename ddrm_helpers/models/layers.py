"""Layers that the three networks share: group normalisation, timestep features, attention.

The DDPM UNet (CelebA-HQ) and the guided-diffusion (ADM) networks (ImageNet) differ in names and
details, but agree on these pieces up to a few constants, which are arguments here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelInputError

NUM_GROUPS = 32


class GroupNorm(nn.GroupNorm):
    """Group normalisation over 32 groups, computed in float32 at least.

    A float16 or bfloat16 input is normalised in float32 and the result cast back, because the
    mean and variance of a large feature map lose too many digits in half precision; this is how
    the guided-diffusion networks were trained in float16. Float32 and float64 inputs are
    normalised in their own precision. The affine parameters follow the computation, so a norm
    keeps working whatever precision its own parameters were cast to.
    """

    def __init__(self, channels: int, eps: float):
        super().__init__(NUM_GROUPS, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = F.group_norm(
            x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps
        )
        return out.to(x.dtype)


class SinusoidalTimesteps(nn.Module):
    """Fixed sinusoidal features of the diffusion timestep ``t`` (Vaswani et al. 2017, Ho et al. 2020).

    With ``half = dim // 2`` frequencies ``w_i = 10000 ** (-i / (half - shift))``, i = 0 .. half-1,
    the features are ``[sin(t w), cos(t w)]`` for the DDPM UNet (``shift=1``, ``cos_first=False``)
    and ``[cos(t w), sin(t w)]`` for guided diffusion (``shift=0``, ``cos_first=True``).

    Both families computed these in float32, on the CPU, with the operations in the order used
    here; the features come out in float32 and agree bit for bit with the ones the networks were
    trained on. The frequencies are a non-persistent buffer (not in the state dict), so they move
    with the network (``.to(device)``). They are computed on the CPU and put on the device the
    network is built on (``with torch.device("cuda"): build_model(cfg)`` gives CUDA frequencies);
    built on the ``meta`` device, they stay on the CPU, so that the network still has them after
    its weights are assigned from a file (``load_state_dict(..., assign=True)``). Called on a device
    the frequencies are not on (a network built on ``meta`` and run there, to count FLOPs), they are
    copied to ``t``'s device for the call.
    """

    def __init__(self, dim: int, *, shift: int, cos_first: bool):
        super().__init__()
        if dim % 2:
            raise ValueError(f"timestep features need an even dimension, got {dim}")
        half = dim // 2
        steps = torch.arange(half, dtype=torch.float32, device="cpu")
        if shift:
            freqs = torch.exp(steps * -(math.log(10000) / (half - shift)))
        else:
            freqs = torch.exp(-math.log(10000) * steps / half)
        building_on = torch.empty(0).device  # the device of a `with torch.device(...)` block, else the CPU
        if building_on.type != "meta":
            freqs = freqs.to(building_on)
        self.register_buffer("freqs", freqs, persistent=False)
        self.cos_first = cos_first

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = self.freqs if self.freqs.device == t.device else self.freqs.to(t.device)
        angles = t.float()[:, None] * freqs.float()[None, :]
        waves = (angles.cos(), angles.sin()) if self.cos_first else (angles.sin(), angles.cos())
        return torch.cat(waves, dim=1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over ``[..., tokens, d]`` tensors.

    Through ``scaled_dot_product_attention``, which picks a fused kernel where one exists: the
    fused kernels (flash attention on the CPU and CUDA, memory-efficient attention on CUDA) need
    the last dimension of ``q``, ``k`` and ``v`` contiguous, and without it torch falls back to
    explicit matrix products and a softmax; callers pass contiguous tensors (the tests check that
    the fused kernel runs). The fused GPU kernels accumulate the softmax in float32 also for
    half-precision inputs.
    """
    return F.scaled_dot_product_attention(q, k, v)


def check_image(x: torch.Tensor, in_channels: int, multiple: int, network: str) -> None:
    """Refuse an input that the network cannot take, with a message rather than a shape error deep inside."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ModelInputError(
            f"{network} takes images of shape [batch, {in_channels}, height, width]; got {list(x.shape)}"
        )
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ModelInputError(
            f"{network} halves the image size {int(math.log2(multiple))} times, so height and width "
            f"must be multiples of {multiple}; got {x.shape[2]}x{x.shape[3]} (resize or crop the image)"
        )


def check_timesteps(t: torch.Tensor, batch: int, network: str) -> None:
    if t.shape != (batch,):
        raise ModelInputError(
            f"{network} takes one timestep per image: t of shape [{batch}]; got {list(t.shape)}"
        )
