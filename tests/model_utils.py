"""Helpers for the model tests: tiny configs and reproducible weights."""

from __future__ import annotations

import math

import torch

from ddrm_helpers import load_config

# Tiny versions of the three configs: the real layouts (levels, attention placement, heads of 64
# channels where the width allows) at a fraction of the width. Inputs: see TINY_INPUT_SIZE.
TINY = {
    "celeba_hq": ("celeba_hq", {"model.ch": 32, "data.image_size": 64}),
    "imagenet_256": ("imagenet_256", {"model.num_channels": 32}),
    "imagenet_256_cc": ("imagenet_256_cc", {"model.num_channels": 32}),
    "classifier": ("imagenet_256_cc", {"classifier.classifier_width": 32}),
}
TINY_INPUT_SIZE = {"celeba_hq": 64, "imagenet_256": 64, "imagenet_256_cc": 64, "classifier": 256}


def tiny_config(name: str):
    base, overrides = TINY[name]
    return load_config(base, **overrides)


def seeded_weights_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every tensor of ``model``'s state dict from a seeded generator (float64 draws), in place.

    Matrices and kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.01), biases ~ N(0, 0.01): the
    activations stay of order one through the whole network, and nothing is zero (unlike the
    originals' initialisation, which zeroes some output layers and would hide their maths).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            draw = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if tensor.dim() >= 2:
                tensor.copy_(draw / math.sqrt(math.prod(tensor.shape[1:])))
            elif name.endswith("weight"):
                tensor.copy_(1 + 0.1 * draw)
            else:
                tensor.copy_(0.1 * draw)
    return model


def tiny_inputs(name: str, batch: int = 2, dtype=torch.float64, seed: int = 1, size: int | None = None):
    """``(x, t)`` or ``(x, t, y)``: seeded images (``size`` square, by default TINY_INPUT_SIZE's),
    timesteps spread over [0, 999], class labels."""
    generator = torch.Generator().manual_seed(seed)
    size = size or TINY_INPUT_SIZE[name]
    x = torch.randn(batch, 3, size, size, generator=generator, dtype=dtype)
    t = torch.tensor([0, 999, 500, 37][:batch])
    if name == "imagenet_256_cc":
        return x, t, torch.tensor([3, 999, 0, 500][:batch])
    return x, t
