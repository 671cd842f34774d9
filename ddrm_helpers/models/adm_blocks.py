"""Building blocks of OpenAI's guided-diffusion (ADM) networks (Dhariwal & Nichol 2021).

The diffusion UNet (:mod:`.adm_unet`) and the noisy classifier (:mod:`.adm_classifier`) share the
timestep MLP, the residual and attention blocks, and the whole encoder half
(:func:`build_encoder`). Module and tensor names are those of the released checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import GroupNorm, attention

NORM_EPS = 1e-5


def norm(channels: int) -> GroupNorm:
    return GroupNorm(channels, eps=NORM_EPS)


def make_time_embed(model_channels: int) -> nn.Sequential:
    """The MLP from ``model_channels`` sinusoidal features to the embedding of width ``4 model_channels``."""
    emb_dim = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))


class ResBlock(nn.Module):
    """A residual block conditioned on the embedding ``emb`` of the timestep (and class).

    ``h = conv(swish(norm(x)))``, resampled between the swish and the convolution when the block
    also changes resolution (``resample`` "up": nearest x2, "down": 2x2 mean; the skip path is
    resampled the same way). Then, with scale-shift norm (FiLM-like),
    ``h = conv(swish(norm(h) (1 + scale) + shift))`` where ``[scale, shift] = linear(swish(emb))``,
    or without it ``h = conv(swish(norm(h + linear(swish(emb)))))``. The output is
    ``skip(x) + h``, ``skip`` a 1x1 convolution when the channel count changes.
    """

    def __init__(
        self,
        channels: int,
        emb_dim: int,
        out_channels: int | None = None,
        *,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        resample: str | None = None,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = resample
        self.in_layers = nn.Sequential(
            norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            norm(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        in_norm, in_act, in_conv = self.in_layers
        h = in_conv(self._resample(in_act(in_norm(x))))
        x = self._resample(x)
        # The embedding MLP may stay in float32 while the block runs in float16
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        out_norm, *out_rest = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + emb_out)
        for layer in out_rest:
            h = layer(h)
        return self.skip_connection(x) + h


@dataclass(frozen=True)
class HeadSpec:
    """How attention blocks split their channels into heads.

    ``head_channels`` (when not -1) takes precedence: ``channels // head_channels`` heads; else
    ``num_heads`` heads. ``legacy_order`` is the layout of the ``qkv`` projection's output: the
    released 256x256 checkpoints use ``[head, (q|k|v), channel]`` (legacy); the alternative is
    ``[(q|k|v), head, channel]`` (``use_new_attention_order``).
    """

    num_heads: int = 1
    head_channels: int = -1
    legacy_order: bool = True

    def heads_for(self, channels: int) -> int:
        if self.head_channels == -1:
            heads = self.num_heads
            if channels % heads:
                raise ConfigError(
                    f"attention over {channels} channels cannot be split into {heads} heads; "
                    "change the model's width (num_channels) or num_heads"
                )
            return heads
        if channels % self.head_channels:
            raise ConfigError(
                f"attention over {channels} channels cannot be split into heads of "
                f"{self.head_channels} channels (num_head_channels); change the model's width "
                "(num_channels) so that every attention level is a multiple of it"
            )
        return channels // self.head_channels


def qkv_attention(
    qkv: torch.Tensor, heads: int, *, legacy_order: bool, queries: int | None = None
) -> torch.Tensor:
    """Multi-head attention from a fused projection ``qkv`` of shape ``[B, 3 C, T]``.

    Each head attends with ``softmax(q k^T / sqrt(C / heads)) v``; the result is ``[B, C, T']``
    with the heads' channels side by side, ``T' = queries`` (the first positions only) or ``T``.
    """
    b, width, tokens = qkv.shape
    head_channels = width // (3 * heads)
    layout = (b, heads, 3, head_channels, tokens) if legacy_order else (b, 3, heads, head_channels, tokens)
    # -> [3, B, heads, T, head_channels]: q, k and v with the tokens as rows, made contiguous in one
    # copy (the fused attention kernels need each row's channels side by side)
    order = (2, 0, 1, 4, 3) if legacy_order else (1, 0, 2, 4, 3)
    q, k, v = qkv.reshape(layout).permute(order).contiguous()
    if queries is not None:
        q = q[:, :, :queries].contiguous()
    out = attention(q, k, v)
    return out.transpose(-1, -2).reshape(b, heads * head_channels, -1)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the positions: ``x + proj_out(attention(qkv(norm(x))))``."""

    def __init__(self, channels: int, heads: HeadSpec):
        super().__init__()
        self.num_heads = heads.heads_for(channels)
        self.legacy_order = heads.legacy_order
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, legacy_order=self.legacy_order)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Halve the side with a 3x3 stride-2 convolution, or a 2x2 mean (when not ``resblock_updown``)."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the side by nearest-neighbour repetition, then (optionally) a 3x3 convolution."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class EmbedSequential(nn.Sequential):
    """Layers applied in turn; the residual blocks among them also get the embedding."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h


@dataclass(frozen=True)
class TorsoSpec:
    """What the encoder and decoder halves are made of (the guided-diffusion hyper-parameters)."""

    model_channels: int
    channel_mult: tuple[float, ...]
    num_res_blocks: int
    attention_ds: tuple[int, ...]
    heads: HeadSpec
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True

    @property
    def emb_dim(self) -> int:
        return 4 * self.model_channels

    def width(self, mult: float) -> int:
        return int(mult * self.model_channels)

    def res_block(
        self, channels: int, out_channels: int | None = None, resample: str | None = None
    ) -> ResBlock:
        return ResBlock(
            channels,
            self.emb_dim,
            out_channels,
            dropout=self.dropout,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resample=resample,
        )

    def downsample(self, channels: int) -> nn.Module:
        if self.resblock_updown:
            return self.res_block(channels, resample="down")
        return Downsample(channels, self.conv_resample)

    def upsample(self, channels: int) -> nn.Module:
        if self.resblock_updown:
            return self.res_block(channels, resample="up")
        return Upsample(channels, self.conv_resample)


class Encoder(NamedTuple):
    input_blocks: nn.ModuleList
    middle_block: EmbedSequential
    skip_channels: list[int]  # channels of each input block's output, for the decoder
    channels: int  # at the bottom
    ds: int  # the downsampling rate at the bottom


def build_encoder(spec: TorsoSpec, in_channels: int) -> Encoder:
    """The encoder half: input blocks (residual blocks, attention where the downsampling rate is in
    ``attention_ds``, a downsampling block between levels) and the middle block."""
    channels = spec.width(spec.channel_mult[0])
    blocks = [EmbedSequential(nn.Conv2d(in_channels, channels, 3, padding=1))]
    skip_channels = [channels]
    ds = 1
    for level, mult in enumerate(spec.channel_mult):
        for _ in range(spec.num_res_blocks):
            layers: list[nn.Module] = [spec.res_block(channels, spec.width(mult))]
            channels = spec.width(mult)
            if ds in spec.attention_ds:
                layers.append(AttentionBlock(channels, spec.heads))
            blocks.append(EmbedSequential(*layers))
            skip_channels.append(channels)
        if level < len(spec.channel_mult) - 1:
            blocks.append(EmbedSequential(spec.downsample(channels)))
            skip_channels.append(channels)
            ds *= 2
    middle = EmbedSequential(
        spec.res_block(channels), AttentionBlock(channels, spec.heads), spec.res_block(channels)
    )
    return Encoder(nn.ModuleList(blocks), middle, skip_channels, channels, ds)


def convert_convolutions(modules: Iterable[nn.Module], dtype: torch.dtype) -> None:
    """Store every convolution's weights in ``modules`` in ``dtype``; norms and linear layers keep theirs."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                layer.to(dtype)


def torso_dtype(input_blocks: Sequence[nn.Module]) -> torch.dtype:
    """The dtype the torso runs in: that of its first convolution's weights."""
    return input_blocks[0][0].weight.dtype
