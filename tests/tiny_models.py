"""Tiny random-weight checkpoints of all three configs, registered with their own hashes.

`install_tiny_checkpoints` writes them, serves them from a local HTTP server (so that the real
download path runs), and sets the environment variables that make the package use them:
``DDRM_REGISTRY``, ``DDRM_CHECKPOINT_DIR`` and ``DDRM_CONFIG_OVERRIDES`` (the tiny networks and a
small image size). A notebook or a CLI started with that environment runs unchanged.

These networks are for the wiring (download, loading, run_config, restore_photo, the notebook), not
for the architectures: besides narrow, they are shallow (one residual block a level, attention at
one level; two levels for the DDPM UNet). The architectures at full depth are tests/test_models.py's.
The guided-diffusion UNet and the classifier keep four levels: their levels follow from
``image_size`` (64 is the smallest size with known multipliers), since the configs have no
``channel_mult`` key to override.
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path

import torch

from ddrm_helpers import build_classifier, build_model, load_config

from .tiny_files import pinned_entry, write_registry

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
FILES = {  # registry key: (config, role, file, subdir)
    "celeba_hq": ("celeba_hq", "model", "celeba_hq.ckpt", "celeba"),
    "imagenet_256_uncond": ("imagenet_256", "model", "256x256_diffusion_uncond.pt", "imagenet"),
    "imagenet_256_cond": ("imagenet_256_cc", "model", "256x256_diffusion.pt", "imagenet"),
    "imagenet_256_classifier": ("imagenet_256_cc", "classifier", "256x256_classifier.pt", "imagenet"),
}


@functools.cache
def tiny_checkpoint_bytes(key: str, seed: int = 0) -> bytes:
    """The saved state dict of ``key``'s tiny network, the same bytes in every test (so, made once)."""
    config_name, role, _, _ = FILES[key]
    saved_env = os.environ.pop("DDRM_CONFIG_OVERRIDES", None)  # the network is TINY_OVERRIDES' alone
    try:
        config = load_config(config_name, **TINY_OVERRIDES[config_name])
    finally:
        if saved_env is not None:
            os.environ["DDRM_CONFIG_OVERRIDES"] = saved_env
    with torch.random.fork_rng(devices=[]):  # the networks' own initialisation, made repeatable
        torch.manual_seed(seed)
        network = build_classifier(config) if role == "classifier" else build_model(config)
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getvalue()


def install_tiny_checkpoints(server, folder: Path, monkeypatch=None, keys=tuple(FILES)) -> dict[str, str]:
    """Serve tiny checkpoints for ``keys`` (the others answer 404) and point the package at them.

    Returns the environment variables it sets (also set through ``monkeypatch`` when given).
    """
    entries = {}
    for key, (_, _, file, subdir) in FILES.items():
        payload = tiny_checkpoint_bytes(key)
        url = server.add(f"/tiny/{file}", payload) if key in keys else server.url(f"/missing/{file}")
        entries[key] = pinned_entry(file, subdir, payload, [url])
    env = {
        "DDRM_REGISTRY": str(write_registry(folder / "tiny_registry.yml", entries)),
        "DDRM_CHECKPOINT_DIR": str(folder / "checkpoints"),
        "DDRM_CONFIG_OVERRIDES": json.dumps(TINY_OVERRIDES),
    }
    if monkeypatch is not None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    return env
