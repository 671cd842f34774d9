"""Tiny random-weight networks of the three configs, for the benches (``bench/gpu_check.py``).

``TINY_OVERRIDES``: narrow and shallow networks with the real layouts, at 32x32 (DDPM UNet) and 64x64
(guided-diffusion UNet and classifier). The tests' tiny checkpoints (``tests/tiny_models.py``) are
built from this same definition.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ddrm_helpers import build_classifier, build_model, load_config

# guided-diffusion UNet at 64x64: levels of 32, 64, 96 and 128 channels, attention (heads of 32
# channels) at 8x8 only: the lowest level and the middle block
_TINY_ADM = {"model.num_channels": 32, "model.num_head_channels": 32, "model.num_res_blocks": 1,
             "model.attention_resolutions": "8", "model.image_size": 64, "data.image_size": 64}
TINY_OVERRIDES = {
    # DDPM UNet at 32x32: levels of 32 and 64 channels, attention at 16x16 (the lower level)
    "celeba_hq": {"model.ch": 32, "model.ch_mult": [1, 2], "model.num_res_blocks": 1,
                  "model.attn_resolutions": [16], "data.image_size": 32},
    "imagenet_256": _TINY_ADM,
    # the classifier sees the images at the config's size; attention (heads of 64) at 8x8 only
    "imagenet_256_cc": {**_TINY_ADM, "classifier.image_size": 64, "classifier.classifier_width": 32,
                        "classifier.classifier_depth": 1, "classifier.classifier_attention_resolutions": "8"},
}


def config(name: str, tiny: bool):
    """The config ``name``, tiny (``TINY_OVERRIDES``) or full size; ``DDRM_CONFIG_OVERRIDES`` is ignored."""
    saved = os.environ.pop("DDRM_CONFIG_OVERRIDES", None)
    try:
        return load_config(name, **(TINY_OVERRIDES[name] if tiny else {}))
    finally:
        if saved is not None:
            os.environ["DDRM_CONFIG_OVERRIDES"] = saved


def build(cfg, role: str, device: torch.device | str = "cpu", seed: int | None = None) -> torch.nn.Module:
    """The network ``role`` ("model" or "classifier") of ``cfg`` with PyTorch's default
    initialisation, built directly on ``device`` (seeded when ``seed`` is given)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device):
            network = build_classifier(cfg) if role == "classifier" else build_model(cfg)
    return network.eval().requires_grad_(False)


def write_checkpoints(cfg, folder: Path, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Path]:
    """Random-weight files of every network of ``cfg`` (plain float32 state dicts, as the official
    ones), made on ``device`` (fast on a GPU) and saved under ``folder``: ``{role: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in cfg.checkpoints:
        network = build(cfg, role, device, seed)
        state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in network.state_dict().items()}
        del network
        paths[role] = folder / f"{cfg.name}_{role}.pt"
        torch.save(state, paths[role])
        del state
    return paths
