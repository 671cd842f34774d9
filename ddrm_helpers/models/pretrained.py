"""``load_pretrained``: the networks of a config with their verified official weights.

Each checkpoint of the config (``config.checkpoints``: ``model``, and ``classifier`` for
``imagenet_256_cc``) is made available by :func:`~ddrm_helpers.store.fetch_checkpoint` (a
verified file, downloaded if needed), read with ``torch.load(weights_only=True)`` (data, never
code), memory-mapped where the file format allows, and assigned into a network built on the
``meta`` device: the weights are never held twice in host memory. A file that is not the
network the config needs is refused with :class:`~ddrm_helpers.errors.CheckpointMismatchError`,
whose message says which file it looks like instead.

The result is cached per process, so that rerunning a notebook cell does not read 2 GB again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..config import Config, load_config
from ..errors import CheckpointMismatchError, ConfigError
from ..registry import CheckpointSpec
from ..verify import compare_to_manifest, load_state_dict
from .build import build_classifier, build_model


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns; unpacks as ``model, classifier = load_pretrained(cfg)``.

    ``model`` is the diffusion network (``model(x, t)``, or ``model(x, t, y)`` for the
    class-conditional config); ``classifier`` the noisy classifier (``classifier(x, t)``), or
    ``None`` when the config has none. Both are in eval mode, with ``requires_grad`` off
    (classifier guidance differentiates with respect to the image, not the weights).
    """

    model: nn.Module
    classifier: nn.Module | None


CELEBA_UNET = "the CelebA-HQ DDPM UNet (celeba_hq.ckpt)"
CLASSIFIER = "the guided-diffusion noisy classifier (256x256_classifier.pt)"
CONDITIONAL_UNET = "the class-conditional guided-diffusion UNet (256x256_diffusion.pt)"
UNCONDITIONAL_UNET = "the unconditional guided-diffusion UNet (256x256_diffusion_uncond.pt)"
# Each network told apart by a tensor name that only it has, among those checked before it
_SIGNATURES = (
    ("temb.dense.0.weight", CELEBA_UNET),
    ("out.2.c_proj.weight", CLASSIFIER),
    ("label_emb.weight", CONDITIONAL_UNET),
    ("output_blocks.0.0.in_layers.0.weight", UNCONDITIONAL_UNET),
)
# Mix-ups known to happen, and why: (found, wanted) -> a sentence for the message
_KNOWN_MIX_UPS = {
    (UNCONDITIONAL_UNET, CONDITIONAL_UNET): (
        " The reference DDRM code downloads the unconditional file under the class-conditional name."
    ),
}
_BUILDERS: dict[str, Callable[[Config], nn.Module]] = {"model": build_model, "classifier": build_classifier}
_FP16_KEYS = {"model": ("model", "use_fp16"), "classifier": ("classifier", "classifier_use_fp16")}

_cache: dict[tuple, Pretrained] = {}


def load_pretrained(
    config: Config | str,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None,
    *,
    store=None,
    paths: dict[str, str | os.PathLike] | None = None,
) -> Pretrained:
    """The networks of ``config`` with their official weights, ready for sampling.

    ``config`` is a :class:`~ddrm_helpers.config.Config` or a config name. ``paths`` maps each role
    of the config's checkpoints (``model``, ``classifier``) to a file that the caller's
    :class:`~ddrm_helpers.store.CheckpointStore` has verified (``store.paths(config)``); without
    it, the files are asked of ``store`` (default: a store of ``cache_dir``, the checkpoint root,
    and ``registry``, a registry or the path of a registry file), which downloads what is missing.
    Give ``store`` with ``paths`` too: a file its registry does not pin (the classifier) is then
    checked against its tensor manifest again as it is loaded, so that a file swapped since its
    verification is refused before any ``torch.load`` (docs/security.md).
    ``device`` defaults to CUDA when available, else the CPU.

    On CUDA, a network whose config asks for it (``model.use_fp16``,
    ``classifier.classifier_use_fp16``) runs its torso in float16, as it was trained; norms,
    softmax, embeddings and the output head stay in float32. On the CPU everything is float32.

    The result is cached per process, keyed by the config, the files (path, size and
    modification time), the device and the precision: calling again returns the same objects.
    :func:`clear_pretrained_cache` frees them.

    Raises :class:`~ddrm_helpers.errors.DownloadError` when a checkpoint cannot be made
    available, and :class:`~ddrm_helpers.errors.CheckpointMismatchError` when a file is not the
    network that the config needs (with the likely mix-up in the message).
    """
    if not isinstance(config, Config):
        config = load_config(config)
    device = torch.device(device) if device is not None else _default_device()
    roles = dict(config.checkpoints)
    unknown = set(roles) - set(_BUILDERS)
    if unknown or "model" not in roles:
        raise ConfigError(
            f"config {config.get('name')}: 'checkpoints' must name a 'model' checkpoint (and may name a "
            f"'classifier'); got {', '.join(sorted(roles)) or 'none'}"
        )
    if paths is None:
        from ..store import CheckpointStore

        store = CheckpointStore.of(store, cache_dir, registry)
        paths = store.paths(config)
    missing = set(roles) - set(paths)
    if missing:
        raise ConfigError(f"config {config.get('name')}: no file given for {', '.join(sorted(missing))}")
    paths = {role: Path(paths[role]) for role in roles}
    dtypes = {role: _torso_dtype(config, role, device) for role in roles}
    cache_key = (
        json.dumps(config.to_dict(), sort_keys=True, default=repr),
        tuple((role, *_file_identity(path)) for role, path in sorted(paths.items())),
        device_key(device),
        tuple(sorted((role, str(dtype)) for role, dtype in dtypes.items())),
    )
    if cache_key not in _cache:
        networks = {
            role: _load_network(config, role, roles[role], path, device, dtypes[role], _unpinned(store, roles[role]))
            for role, path in paths.items()
        }
        _cache[cache_key] = Pretrained(networks["model"], networks.get("classifier"))
    return _cache[cache_key]


def clear_pretrained_cache() -> None:
    """Forget every network :func:`load_pretrained` returned, so that their memory can be freed."""
    _cache.clear()


def device_key(device: str | torch.device) -> str:
    """The device as the cache knows it: one name for one device.

    ``"cuda"`` means the current CUDA device, so it is ``"cuda:0"`` (or whichever is current) like
    ``"cuda:0"`` itself; the CPU is ``"cpu"`` with or without an index.

    >>> device_key("cuda"), device_key(torch.device("cuda", 0)), device_key("cpu:0")
    ('cuda:0', 'cuda:0', 'cpu')
    """
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    index = device.index
    if index is None:
        index = torch.cuda.current_device() if device.type == "cuda" and torch.cuda.is_available() else 0
    return f"{device.type}:{index}"


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torso_dtype(config: Config, role: str, device: torch.device) -> torch.dtype | None:
    """float16 where the config asks for it and the device is a GPU; None: all float32."""
    section, key = _FP16_KEYS[role]
    wants_fp16 = bool(config[section].get(key, False)) if section in config else False
    return torch.float16 if wants_fp16 and device.type == "cuda" else None


def _file_identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _unpinned(store, key: str) -> CheckpointSpec | None:
    """The spec of ``key`` when no hash vouches for its file (it is then checked against its manifest
    as it is loaded); None when it is pinned, or when no store says."""
    if store is None:
        return None
    spec = store.spec(key)
    return None if spec.pinned else spec


def _load_network(
    config: Config, role: str, key: str, path: Path, device: torch.device, torso_dtype: torch.dtype | None,
    unpinned: CheckpointSpec | None = None,
) -> nn.Module:
    where = f"config {config.get('name')}, {role} checkpoint '{key}'"
    try:
        state = load_state_dict(path, unpinned=unpinned)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{where}: {err}") from err
    with torch.device("meta"):
        network = _BUILDERS[role](config)
    problem = _mismatch(network, state, path)
    if problem:
        raise CheckpointMismatchError(
            f"{where}: {problem} Check the registry entry '{key}' (a registry of your own, "
            "DDRM_REGISTRY, that points at another file is the usual cause)."
        )
    # `assign` keeps the (memory-mapped) tensors of the file instead of copying them into the
    # meta network's storage, which does not exist
    network.load_state_dict(state, strict=True, assign=True)
    network.to(device)
    if torso_dtype is not None:
        network.convert_torso(torso_dtype)
    return network.eval().requires_grad_(False)


def _mismatch(network: nn.Module, state: dict, path: Path) -> str:
    """'' when ``state`` loads into ``network``; else what the file is and how it differs."""
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        return (
            f"{path} holds a dict whose entries are not all tensors ({', '.join(not_tensors[:4])}"
            f"{', ...' if len(not_tensors) > 4 else ''}): a training checkpoint or another wrapper, "
            "not the plain state dict that the official files are."
        )
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    differences = compare_to_manifest(found, expected)
    if not differences:
        other_dtypes = sorted({str(t.dtype) for t in state.values()} - {"torch.float32"})
        if other_dtypes:
            return f"{path} holds {', '.join(other_dtypes)} tensors; the official files are float32."
        return ""
    wanted, got = _identify(expected), _identify(found)
    if got is None:
        what = "it is not one of the three networks"
    elif got == wanted:
        what = f"it looks like {got}, but of another size or configuration"
    else:
        what = f"it looks like {got}, not {wanted}"
    hint = _KNOWN_MIX_UPS.get((got, wanted), "")
    return f"{path.name} is not the network this config needs: {what} ({differences}).{hint}"


def _identify(names) -> str | None:
    for name, description in _SIGNATURES:
        if name in names:
            return description
    return None
