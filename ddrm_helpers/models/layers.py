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
from .fastpath import fast_path

NUM_GROUPS = 32


class GroupNorm(nn.GroupNorm):
    """Group normalisation over 32 groups, with its statistics accumulated in float32 at least.

    Float32 and float64 inputs are normalised in their own precision. A float16 input (the float16
    torso of the guided-diffusion networks) is normalised one of two ways, chosen by the fast-path
    switch ``half_group_norm`` (:mod:`.fastpath`):

    - on (default): by torch's kernel in float16. That kernel accumulates the mean and variance in
      float32 on the CPU and on CUDA, so the statistics keep their digits; the output is rounded to
      float16 once, and the affine parameters are used rounded to float16 (cast once and cached,
      not at every call). One pass over the feature map in float16.
    - off: cast to float32, normalised there, and cast back, as guided-diffusion's ``GroupNorm32``
      does: two more passes, reading or writing float32.

    The two differ by the rounding of the affine parameters (at most 4.9e-4 relative). Measured on
    the CPU with the tiny ImageNet UNet's float16 torso (four seeds), eps differs from the float32
    network's by 1.4e-3 to 1.9e-3 (``||eps16 - eps32|| / ||eps32||``) either way, the float16 path
    1.4e-4 worse at most, within the 1e-3 allowed; ``bench/gpu_check.py`` repeats the comparison on
    CUDA at full size. A bfloat16 input always takes the float32 round trip: nothing here runs in
    bfloat16, and its rounding of the affine parameters is eight times coarser. The affine
    parameters follow the computation, so a norm keeps working whatever precision its own
    parameters were cast to.
    """

    def __init__(self, channels: int, eps: float):
        super().__init__(NUM_GROUPS, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16 and fast_path().half_group_norm:
            weight, bias = self._affine_in(x.dtype)
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = F.group_norm(
            x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps
        )
        return out.to(x.dtype)

    def _affine_in(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine parameters in ``dtype``: cast once and kept while the parameters are unchanged.

        Not cached where autograd needs the cast (parameters that require grad, with grad on), under
        ``torch.compile`` (which fuses the cast) or for inference tensors (no version counter).
        """
        weight, bias = self.weight, self.bias
        if weight.dtype == dtype and bias.dtype == dtype:
            return weight, bias
        if (
            (torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad))
            or torch.compiler.is_compiling()
            or weight.is_inference()
            or bias.is_inference()
        ):
            return weight.to(dtype), bias.to(dtype)
        # The sources are kept, so their memory cannot be reused by other parameters meanwhile
        key = (dtype, weight.device, weight.data_ptr(), weight._version, bias.data_ptr(), bias._version)
        cached = self.__dict__.get("_affine_cache")
        if cached is None or cached[0] != key:
            # Ordinary tensors even inside inference mode: classifier guidance differentiates through them
            with torch.inference_mode(False), torch.no_grad():
                sources = (weight.detach(), bias.detach())
                cached = (key, sources, weight.detach().to(dtype), bias.detach().to(dtype))
            self.__dict__["_affine_cache"] = cached
        return cached[2], cached[3]


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
