"""OpenAI's noisy ImageNet classifier for classifier guidance (Dhariwal & Nichol 2021).

The encoder half of the guided-diffusion UNet, trained on noisy images ``x_t`` together with
their timestep, and a pooling head: ``classifier(x, t) -> logits`` over the 1000 ImageNet classes.
For the 256x256 checkpoint (``classifier_width 128``, depth 2, attention at 32, 16 and 8 pixels)::

    time_embed       128 sinusoidal features of t -> MLP -> embedding of width 512
    input_blocks     as in the UNet: residual blocks, attention, downsampling residual blocks
    middle_block     residual block, attention, residual block       (512 channels at 8x8)
    out              norm, swish, attention pooling: the mean of the 64 positions, with a learned
                     positional embedding on all 65 tokens, attends to all of them (heads of 64
                     channels); a 1x1 projection of its output gives the logits

DDRM with classifier guidance adds ``scale * grad_x log softmax(classifier(x_t, t))[y]`` to the
update; the classifier itself only predicts.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelInputError
from .adm_blocks import (
    HeadSpec,
    TorsoSpec,
    build_encoder,
    convert_convolutions,
    make_time_embed,
    norm,
    qkv_attention,
    torso_dtype,
)
from .fastpath import cudnn_scope, prepare_input
from .layers import SinusoidalTimesteps, check_image, check_timesteps


class AttentionPool(nn.Module):
    """Pool a ``[B, C, S, S]`` feature map to ``[B, out_channels]`` by attention (as in CLIP).

    The tokens are the mean of the ``S^2`` positions followed by the positions themselves, plus
    ``positional_embedding`` (``[C, S^2 + 1]``). Only the mean token's query is needed: its
    attention output, projected by ``c_proj``, is the result. The query/key/value projection is
    laid out ``[(q|k|v), head, channel]``, whatever the order of the attention blocks.
    """

    def __init__(self, side: int, channels: int, head_channels: int, out_channels: int):
        super().__init__()
        self.num_heads = HeadSpec(head_channels=head_channels).heads_for(channels)
        self.positional_embedding = nn.Parameter(torch.zeros(channels, side * side + 1))
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2)
        tokens = torch.cat([tokens.mean(dim=-1, keepdim=True), tokens], dim=-1)
        tokens = tokens + self.positional_embedding.to(tokens.dtype)
        pooled = qkv_attention(self.qkv_proj(tokens), self.num_heads, legacy_order=False, queries=1)
        return self.c_proj(pooled)[:, :, 0]


class ADMClassifier(nn.Module):
    """``classifier(x, t) -> logits``: ``x`` ``[B, 3, S, S]`` (S the image size it was built for),
    ``t`` one timestep per image (``[B]``), logits ``[B, num_classes]`` in the dtype of ``x``.

    Like :class:`~.adm_unet.ADMUNet`, the torso (input and middle blocks) runs in the dtype of its
    convolutions (:meth:`convert_torso`), the rest in float32. On CUDA the fast-path switches
    (:mod:`.fastpath`) apply.
    """

    def __init__(
        self,
        spec: TorsoSpec,
        *,
        image_size: int,
        in_channels: int = 3,
        num_classes: int = 1000,
        pool_head_channels: int = 64,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.multiple = 2 ** (len(spec.channel_mult) - 1)
        self.timestep_features = SinusoidalTimesteps(spec.model_channels, shift=0, cos_first=True)
        self.time_embed = make_time_embed(spec.model_channels)
        encoder = build_encoder(spec, in_channels)
        self.input_blocks = encoder.input_blocks
        self.middle_block = encoder.middle_block
        self.out = nn.Sequential(
            norm(encoder.channels),
            nn.SiLU(),
            AttentionPool(image_size // encoder.ds, encoder.channels, pool_head_channels, num_classes),
        )

    def convert_torso(self, dtype: torch.dtype) -> ADMClassifier:
        """Store the torso's convolutions in ``dtype`` (for example ``torch.float16``); returns self."""
        convert_convolutions((self.input_blocks, self.middle_block), dtype)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_image(x, self.in_channels, self.multiple, "The guided-diffusion classifier")
        check_timesteps(t, x.shape[0], "The guided-diffusion classifier")
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ModelInputError(
                f"the classifier's attention pooling was trained at {self.image_size}x{self.image_size} "
                f"(its positional embedding has one entry per position); got {x.shape[-2]}x{x.shape[-1]}: "
                "resize the images to the classifier's image_size"
            )
        emb = self.time_embed(self.timestep_features(t).to(self.time_embed[0].weight.dtype))
        with cudnn_scope(x):
            h = prepare_input(self, self.input_blocks[0][0], x).to(torso_dtype(self.input_blocks))
            for block in self.input_blocks:
                h = block(h, emb)
            h = self.middle_block(h, emb)
            return self.out(h.to(x.dtype))
