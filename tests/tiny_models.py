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
import importlib.util
import io
import json
from pathlib import Path

import torch

from .tiny_files import pinned_entry, write_registry


def _bench_tiny():
    """bench/tiny.py, the one definition of the tiny networks (the benches build them too)."""
    spec = importlib.util.spec_from_file_location("ddrm_bench_tiny", Path(__file__).resolve().parent.parent
                                                  / "bench" / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TINY = _bench_tiny()
TINY_OVERRIDES = _TINY.TINY_OVERRIDES
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
    # TINY_OVERRIDES' network alone (whatever DDRM_CONFIG_OVERRIDES says), its own seeded initialisation
    network = _TINY.build(_TINY.config(config_name, tiny=True), role, seed=seed)
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
