"""OpenAI's guided-diffusion (ADM) UNet (Dhariwal & Nichol 2021): config ``model.type: openai``.

For the 256x256 ImageNet checkpoints (``num_channels 256``, ``channel_mult 1,1,2,2,4,4``)::

    time_embed       256 sinusoidal features of t -> MLP -> embedding of width 1024
    label_emb        + a learned vector per ImageNet class (class-conditional checkpoint only)
    input_blocks     a 3x3 convolution, then per level 2 residual blocks (+ attention at 32, 16
                     and 8 pixels: downsampling rates 8, 16, 32) and a downsampling residual block
    middle_block     residual block, attention, residual block                 (at 8x8)
    output_blocks    per level 3 residual blocks, each fed the matching skip connection
                     (+ attention), and an upsampling residual block
    out              norm, swish, 3x3 convolution: 6 channels = eps (3) and the learned-variance
                     interpolation (3); DDRM uses eps only

Every residual block reads the embedding through scale-shift norm; attention has heads of 64
channels, the query/key/value projections laid out in the legacy order the checkpoints were
trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelInputError
from .adm_blocks import (
    AttentionBlock,
    EmbedSequential,
    HeadSpec,
    TorsoSpec,
    build_encoder,
    convert_convolutions,
    make_time_embed,
    norm,
    torso_dtype,
)
from .fastpath import cudnn_scope, prepare_input
from .layers import SinusoidalTimesteps, check_image, check_timesteps


class ADMUNet(nn.Module):
    """``model(x, t) -> out`` or, class-conditional, ``model(x, t, y) -> out``.

    ``x`` is ``[B, in_channels, H, W]``, ``t`` one timestep per image (shape ``[B]``), ``y`` one
    class index per image (``[B]``, integers in ``[0, num_classes)``). ``out`` is
    ``[B, out_channels, H, W]``: with learned sigma, eps in the first half of the channels.

    The torso (input, middle and output blocks) runs in the dtype of its convolutions, which
    :meth:`convert_torso` sets (float16 on a GPU, as the checkpoints were trained); the timestep
    MLP, the class embedding, every norm, the attention softmax and the output head stay in float32.
    The output comes back in the dtype of ``x``, NCHW-contiguous. On CUDA the fast-path switches
    (:mod:`.fastpath`) apply: channels-last weights and activations, cuDNN benchmark mode.
    """

    def __init__(
        self,
        spec: TorsoSpec,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_classes: int | None = None,
        decoder_heads: HeadSpec | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.multiple = 2 ** (len(spec.channel_mult) - 1)
        self.timestep_features = SinusoidalTimesteps(spec.model_channels, shift=0, cos_first=True)
        self.time_embed = make_time_embed(spec.model_channels)
        self.label_emb = nn.Embedding(num_classes, spec.emb_dim) if num_classes is not None else None

        encoder = build_encoder(spec, in_channels)
        self.input_blocks = encoder.input_blocks
        self.middle_block = encoder.middle_block
        self.output_blocks = self._build_decoder(spec, encoder.channels, encoder.ds,
                                                 list(encoder.skip_channels), decoder_heads or spec.heads)
        channels = spec.width(spec.channel_mult[0])
        self.out = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))

    @staticmethod
    def _build_decoder(
        spec: TorsoSpec, channels: int, ds: int, skip_channels: list[int], heads: HeadSpec
    ) -> nn.ModuleList:
        blocks = []
        for level, mult in reversed(list(enumerate(spec.channel_mult))):
            for i in range(spec.num_res_blocks + 1):
                layers: list[nn.Module] = [spec.res_block(channels + skip_channels.pop(), spec.width(mult))]
                channels = spec.width(mult)
                if ds in spec.attention_ds:
                    layers.append(AttentionBlock(channels, heads))
                if level > 0 and i == spec.num_res_blocks:
                    layers.append(spec.upsample(channels))
                    ds //= 2
                blocks.append(EmbedSequential(*layers))
        return nn.ModuleList(blocks)

    def convert_torso(self, dtype: torch.dtype) -> ADMUNet:
        """Store the torso's convolutions in ``dtype`` (for example ``torch.float16``); returns self."""
        convert_convolutions((self.input_blocks, self.middle_block, self.output_blocks), dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image(x, self.in_channels, self.multiple, "The guided-diffusion UNet")
        check_timesteps(t, x.shape[0], "The guided-diffusion UNet")
        emb = self.time_embed(self.timestep_features(t).to(self.time_embed[0].weight.dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(_class_labels(y, x.shape[0], self.num_classes))
        elif y is not None:
            raise ModelInputError(
                "this guided-diffusion UNet is unconditional (class_cond: false): call model(x, t) "
                "without class labels, or use the class-conditional config imagenet_256_cc"
            )

        with cudnn_scope(x):
            h = prepare_input(self, self.input_blocks[0][0], x).to(torso_dtype(self.input_blocks))
            skips = []
            for block in self.input_blocks:
                h = block(h, emb)
                skips.append(h)
            h = self.middle_block(h, emb)
            for block in self.output_blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            return self.out(h.to(x.dtype)).contiguous()


def _class_labels(y: torch.Tensor | None, batch: int, num_classes: int) -> torch.Tensor:
    if y is None:
        raise ModelInputError(
            "this guided-diffusion UNet is class-conditional (class_cond: true): call "
            f"model(x, t, y) with y the class index of each image (shape [{batch}], 0..{num_classes - 1})"
        )
    if y.shape != (batch,):
        raise ModelInputError(f"class labels y must have shape [{batch}]; got {list(y.shape)}")
    return y

