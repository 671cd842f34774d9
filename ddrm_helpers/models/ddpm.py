"""The DDPM UNet (Ho et al. 2020) of the CelebA-HQ checkpoint: config ``model.type: simple``.

This is the architecture that DDPM, DDIM and SDEdit share, in the PyTorch port whose tensor names
``celeba_hq.ckpt`` uses. For ``ch = 128``, ``ch_mult = (1, 1, 2, 2, 4, 4)`` at 256x256::

    conv_in                                                      3 -> 128 channels, 256x256
    down.0 .. down.5   2 residual blocks per level (+ attention where the side is 16),
                       a stride-2 convolution between levels     256x256 -> 8x8
    mid                residual block, attention, residual block
    up.5 .. up.0       3 residual blocks per level, each fed the matching skip connection,
                       nearest-neighbour x2 + convolution between levels
    norm_out, swish, conv_out                                    128 -> 3 channels: eps

The timestep enters every residual block: 128 sinusoidal features go through a two-layer MLP of
width ``4 ch`` and are projected to the block's channels and added after its first convolution.
Attention is single-headed over all ``H W`` positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fastpath import cudnn_scope, prepare_input
from .layers import GroupNorm, SinusoidalTimesteps, attention, check_image, check_timesteps

NORM_EPS = 1e-6


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(channels, eps=NORM_EPS)


class TimestepEmbedding(nn.Module):
    """``t -> dense[1](swish(dense[0](sinusoid(t))))``, the embedding every residual block reads."""

    def __init__(self, ch: int, emb_ch: int):
        super().__init__()
        self.features = SinusoidalTimesteps(ch, shift=1, cos_first=False)
        self.dense = nn.ModuleList([nn.Linear(ch, emb_ch), nn.Linear(emb_ch, emb_ch)])

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first, second = self.dense
        return second(F.silu(first(self.features(t).to(first.weight.dtype))))


class ResnetBlock(nn.Module):
    """``x + conv2(swish(norm2(conv1(swish(norm1(x))) + temb_proj(swish(emb)))))``.

    The skip path is a 1x1 convolution (``nin_shortcut``) when the channel count changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(emb_ch, out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions: ``x + proj_out(softmax(q k^T / sqrt(C)) v)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        # [B, C, H, W] -> [B, HW, C]: positions are the tokens, channels the features, contiguous
        # for the fused attention kernels (already so when h is channels-last, else one copy each)
        q, k, v = (
            proj(h).permute(0, 2, 3, 1).reshape(b, height * width, c).contiguous() for proj in (self.q, self.k, self.v)
        )
        out = attention(q, k, v)
        if x.is_contiguous(memory_format=torch.channels_last):  # [B, HW, C] is that layout already
            out = out.reshape(b, height, width, c).permute(0, 3, 1, 2)
        else:
            out = out.transpose(1, 2).reshape(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the side: a 3x3 stride-2 convolution after padding right and bottom by one, or 2x2 mean."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the side by nearest-neighbour repetition, then (optionally) a 3x3 convolution."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class DownLevel(nn.Module):
    """The residual (and attention) blocks of one resolution on the way down, then a downsample."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock], downsample: Downsample | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self.downsample = downsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        """Every intermediate result, in order: each is a skip connection for the way up."""
        outputs = []
        for i, block in enumerate(self.block):
            h = block(h, emb)
            if self.attn:
                h = self.attn[i](h)
            outputs.append(h)
        if self.downsample is not None:
            outputs.append(self.downsample(h))
        return outputs


class UpLevel(nn.Module):
    """The residual (and attention) blocks of one resolution on the way up, then an upsample."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock], upsample: Upsample | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self.upsample = upsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for i, (block, skip) in enumerate(zip(self.block, skips)):
            h = block(torch.cat([h, skip], dim=1), emb)
            if self.attn:
                h = self.attn[i](h)
        return h if self.upsample is None else self.upsample(h)


class Middle(nn.Module):
    def __init__(self, channels: int, emb_ch: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, emb_ch, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, emb_ch, dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h, emb)), emb)


class DDPMUNet(nn.Module):
    """The DDPM UNet: ``model(x, t) -> eps``, both ``[B, C, H, W]``; ``t`` holds one timestep per image.

    ``resolution`` is the image side the network was trained at: attention sits at the levels whose
    side is in ``attn_resolutions`` at that size. Other sides work if they are multiples of
    ``2 ** (len(ch_mult) - 1)``; the attention stays at the same levels.
    """

    def __init__(
        self,
        *,
        resolution: int,
        in_channels: int,
        out_channels: int,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int],
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.multiple = 2 ** (len(ch_mult) - 1)
        emb_ch = 4 * ch
        self.temb = TimestepEmbedding(ch, emb_ch)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        skip_channels = [ch]
        channels, side = ch, resolution
        down = []
        for level, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(channels, ch * mult, emb_ch, dropout))
                channels = ch * mult
                if side in attn_resolutions:
                    attns.append(AttnBlock(channels))
                skip_channels.append(channels)
            downsample = None
            if level < len(ch_mult) - 1:
                downsample = Downsample(channels, resamp_with_conv)
                skip_channels.append(channels)
                side //= 2
            down.append(DownLevel(blocks, attns, downsample))
        self.down = nn.ModuleList(down)

        self.mid = Middle(channels, emb_ch, dropout)

        up = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(channels + skip_channels.pop(), ch * mult, emb_ch, dropout))
                channels = ch * mult
                if side in attn_resolutions:
                    attns.append(AttnBlock(channels))
            upsample = None
            if level > 0:
                upsample = Upsample(channels, resamp_with_conv)
                side *= 2
            up.append(UpLevel(blocks, attns, upsample))
        # Indexed by level like `down` (up.0 is the full-resolution level, applied last)
        self.up = nn.ModuleList(reversed(up))

        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, self.multiple, "The DDPM UNet")
        check_timesteps(t, x.shape[0], "The DDPM UNet")
        emb = self.temb(t)
        with cudnn_scope(x):
            skips = [self.conv_in(prepare_input(self, self.conv_in, x))]
            for level in self.down:
                skips += level(skips[-1], emb)
            h = self.mid(skips[-1], emb)
            for level in reversed(self.up):
                h = level(h, emb, [skips.pop() for _ in level.block])
            return self.conv_out(F.silu(self.norm_out(h))).contiguous()
