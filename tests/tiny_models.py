"""Tiny random-weight checkpoints of all three configs, registered with their own hashes.

`install_tiny_checkpoints` writes them, serves them from a local HTTP server (so that the real
download path runs), and sets the environment variables that make the package use them:
``DDRM_REGISTRY``, ``DDRM_CHECKPOINT_DIR`` and ``DDRM_CONFIG_OVERRIDES`` (the tiny widths and a
small image size). A notebook or a CLI started with that environment runs unchanged.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from ddrm_helpers import build_classifier, build_model, load_config

from .tiny_files import pinned_entry, write_registry

TINY_OVERRIDES = {
    "celeba_hq": {"model.ch": 32, "data.image_size": 32},
    "imagenet_256": {"model.num_channels": 32, "model.num_head_channels": 32, "model.image_size": 64,
                     "data.image_size": 64},
    "imagenet_256_cc": {"model.num_channels": 32, "model.num_head_channels": 32, "model.image_size": 64,
                        "data.image_size": 64, "classifier.classifier_width": 64, "classifier.image_size": 64},
}
FILES = {  # registry key: (config, role, file, subdir)
    "celeba_hq": ("celeba_hq", "model", "celeba_hq.ckpt", "celeba"),
    "imagenet_256_uncond": ("imagenet_256", "model", "256x256_diffusion_uncond.pt", "imagenet"),
    "imagenet_256_cond": ("imagenet_256_cc", "model", "256x256_diffusion.pt", "imagenet"),
    "imagenet_256_classifier": ("imagenet_256_cc", "classifier", "256x256_classifier.pt", "imagenet"),
}


def tiny_checkpoint_bytes(key: str, seed: int = 0) -> bytes:
    config_name, role, _, _ = FILES[key]
    config = load_config(config_name, **TINY_OVERRIDES[config_name])
    torch.manual_seed(seed)  # the networks' own initialisation, made repeatable
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
