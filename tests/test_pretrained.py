"""load_pretrained on tiny checkpoints of our own, registered in a registry of their own.

The files are already in place with the registry's size and sha256, so fetch_checkpoint verifies
them and never touches the network (the loopback URLs are never contacted).
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
import torch

from ddrm_helpers import CheckpointMismatchError, build_classifier, build_model, load_config
from ddrm_helpers.models import Pretrained, clear_pretrained_cache, load_pretrained
from ddrm_helpers.models.pretrained import _torso_dtype
from ddrm_helpers.registry import load_registry

from .model_utils import seeded_weights_, tiny_inputs
from .tiny_files import pinned_entry, write_registry
from .tiny_models import TINY_OVERRIDES

# The shallow tiny networks of the wiring tests: loading does not depend on depth.
CONFIGS = TINY_OVERRIDES
# registry key -> (config, which network)
NETWORKS = {
    "celeba_hq": ("celeba_hq", build_model),
    "imagenet_256_uncond": ("imagenet_256", build_model),
    "imagenet_256_cond": ("imagenet_256_cc", build_model),
    "imagenet_256_classifier": ("imagenet_256_cc", build_classifier),
}
NEEDS = {  # config -> registry keys of its checkpoints
    "celeba_hq": ["celeba_hq"],
    "imagenet_256": ["imagenet_256_uncond"],
    "imagenet_256_cc": ["imagenet_256_cond", "imagenet_256_classifier"],
}


def tiny_config(name: str, **more):
    return load_config(name, **{**CONFIGS[name], **more})


def saved(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def states():
    """Seeded float32 state dicts of the four tiny networks, by registry key."""
    out = {}
    for seed, (key, (config, build)) in enumerate(NETWORKS.items()):
        out[key] = seeded_weights_(build(tiny_config(config)), seed).state_dict()
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_pretrained_cache()
    yield
    clear_pretrained_cache()


def install(tmp_path: Path, payloads: dict[str, bytes]):
    """Write each payload where the registry entry of its key puts it; return (cache_dir, registry)."""
    real = load_registry()
    cache_dir = tmp_path / "checkpoints"
    entries = {}
    for key, payload in payloads.items():
        spec = real[key]
        path = cache_dir / spec.subdir / spec.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        entries[key] = pinned_entry(spec.file, spec.subdir, payload, [f"http://127.0.0.1:9/{spec.file}"])
    return cache_dir, load_registry(write_registry(tmp_path / "registry.yml", entries))


def install_config(tmp_path, states, config: str, replace: dict[str, bytes] | None = None):
    payloads = {key: saved(states[key]) for key in NEEDS[config]}
    payloads.update(replace or {})
    return install(tmp_path, payloads)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_loads_the_file_weights_frozen_in_eval_mode(tmp_path, states, config):
    cache_dir, registry = install_config(tmp_path, states, config)
    result = load_pretrained(tiny_config(config), cache_dir, device="cpu", registry=registry)
    assert isinstance(result, Pretrained)
    model, classifier = result
    assert (classifier is not None) == (config == "imagenet_256_cc")
    for network, key in zip((model, classifier), NEEDS[config]):
        assert not network.training
        assert not any(p.requires_grad for p in network.parameters())
        loaded = network.state_dict()
        assert loaded.keys() == states[key].keys()
        assert all(torch.equal(loaded[name], states[key][name]) for name in loaded)
        assert {t.dtype for t in loaded.values()} == {torch.float32}
        assert {t.device.type for t in network.buffers()} | {t.device.type for t in loaded.values()} == {"cpu"}
    with torch.no_grad():
        name = "classifier" if config == "imagenet_256_cc" else config
        inputs = tiny_inputs(name, batch=1, dtype=torch.float32, size=tiny_config(config).data.image_size)
        network = classifier if classifier is not None else model
        assert torch.isfinite(network(*inputs)).all()


def test_a_second_call_returns_the_same_networks(tmp_path, states):
    cache_dir, registry = install_config(tmp_path, states, "imagenet_256_cc")
    first = load_pretrained(tiny_config("imagenet_256_cc"), cache_dir, "cpu", registry)
    again = load_pretrained(tiny_config("imagenet_256_cc"), cache_dir, torch.device("cpu"), registry)
    assert again.model is first.model and again.classifier is first.classifier
    other = load_pretrained(tiny_config("imagenet_256_cc", **{"ddrm.steps": 10}), cache_dir, "cpu", registry)
    assert other.model is not first.model  # another config, another entry
    clear_pretrained_cache()
    assert load_pretrained(tiny_config("imagenet_256_cc"), cache_dir, "cpu", registry).model is not first.model


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the mappings")
def test_cpu_weights_are_the_memory_mapped_file_not_a_copy(tmp_path, states):
    cache_dir, registry = install_config(tmp_path, states, "imagenet_256")
    model, _ = load_pretrained(tiny_config("imagenet_256"), cache_dir, "cpu", registry)
    path = str(registry["imagenet_256_uncond"].path(cache_dir).resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(path):
            start, end = (int(a, 16) for a in line.split()[0].split("-"))
            ranges.append((start, end))
    assert ranges, "the checkpoint is not memory-mapped"
    pointers = [p.data_ptr() for p in model.parameters()]
    assert all(any(start <= ptr < end for start, end in ranges) for ptr in pointers)


def test_the_legacy_non_zip_format_loads_too(tmp_path, states):
    legacy = saved(states["celeba_hq"], _use_new_zipfile_serialization=False)
    cache_dir, registry = install(tmp_path, {"celeba_hq": legacy})
    model, classifier = load_pretrained(tiny_config("celeba_hq"), cache_dir, "cpu", registry)
    assert classifier is None
    assert torch.equal(model.conv_in.weight, states["celeba_hq"]["conv_in.weight"])


def test_half_precision_only_where_the_config_asks_and_on_a_gpu():
    cc, celeba = load_config("imagenet_256_cc"), load_config("celeba_hq")
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert _torso_dtype(cc, "model", gpu) == torch.float16
    assert _torso_dtype(cc, "classifier", gpu) == torch.float16
    assert _torso_dtype(cc, "model", cpu) is None
    assert _torso_dtype(celeba, "model", gpu) is None
    no_fp16 = load_config("imagenet_256_cc", **{"classifier.classifier_use_fp16": False})
    assert _torso_dtype(no_fp16, "classifier", gpu) is None


def _without_learned_sigma(state: dict) -> dict:
    """The same network with 3 output channels instead of 6 (``learn_sigma: false``)."""
    return {**state, "out.2.weight": state["out.2.weight"][:3], "out.2.bias": state["out.2.bias"][:3]}


# case -> (config, registry key, what to put in its file, what the message must say)
WRONG_FILES = {
    "unconditional file for the class-conditional config": (
        "imagenet_256_cc", "imagenet_256_cond", lambda s: saved(s["imagenet_256_uncond"]),
        r"looks like the unconditional guided-diffusion UNet \(256x256_diffusion_uncond\.pt\), not the "
        r"class-conditional .*1 tensor\(s\) missing \(label_emb\.weight\)\)\. The reference DDRM code "
        r"downloads the unconditional file under the class-conditional name"),
    "class-conditional file for the unconditional config": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(s["imagenet_256_cond"]),
        r"looks like the class-conditional guided-diffusion UNet \(256x256_diffusion\.pt\), not the "
        r"unconditional .*unexpected \(label_emb\.weight\)"),
    "classifier file as the diffusion model": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(s["imagenet_256_classifier"]),
        r"'imagenet_256_uncond'.*looks like the guided-diffusion noisy classifier \(256x256_classifier\.pt\)"),
    "diffusion model as the classifier": (
        "imagenet_256_cc", "imagenet_256_classifier", lambda s: saved(s["imagenet_256_uncond"]),
        r"classifier checkpoint .*looks like the unconditional guided-diffusion UNet.*not the "
        r"guided-diffusion noisy classifier"),
    "CelebA-HQ file for ImageNet": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(s["celeba_hq"]),
        r"looks like the CelebA-HQ DDPM UNet \(celeba_hq\.ckpt\), not the unconditional"),
    "ImageNet file for CelebA-HQ": (
        "celeba_hq", "celeba_hq", lambda s: saved(s["imagenet_256_uncond"]),
        r"looks like the unconditional guided-diffusion UNet.*not the CelebA-HQ DDPM UNet"),
    "a network of another configuration": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(_without_learned_sigma(s["imagenet_256_uncond"])),
        r"but of another size or configuration \(2 tensor\(s\) of another shape \(out\.2\.weight: "
        r"\[3, 32, 3, 3\] instead of \[6, 32, 3, 3\]"),
    "some other network": (  # all 256 tensors of the tiny unconditional UNet are missing
        "imagenet_256", "imagenet_256_uncond", lambda s: saved({"encoder.weight": torch.ones(4, 4)}),
        r"it is not one of the three networks \(256 tensor\(s\) missing .*1 tensor\(s\) unexpected"),
    "truncated file": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(s["imagenet_256_uncond"])[:200_000],
        r"cannot be loaded as a checkpoint \(RuntimeError"),
    "a pickle that names a Python class": (
        "celeba_hq", "celeba_hq", lambda s: saved({"weights": s["celeba_hq"], "when": datetime.date(2022, 1, 1)}),
        r"holds Python objects or code, not only tensors \(it names datetime\.date\).*will not load it"),
    "an error page saved as the file": (
        "celeba_hq", "celeba_hq",
        lambda s: b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
        r"cannot be loaded as a checkpoint"),
    "a list, not a state dict": (
        "imagenet_256", "imagenet_256_uncond", lambda s: saved(list(s["imagenet_256_uncond"].values())),
        r"holds a list, not a state dict"),
    "a training checkpoint wrapping the state dict": (
        "imagenet_256", "imagenet_256_uncond",
        lambda s: saved({"state_dict": s["imagenet_256_uncond"], "epoch": 3}),
        r"entries are not all tensors \(epoch, state_dict\): a training checkpoint"),
    "float16 tensors": (
        "imagenet_256", "imagenet_256_uncond",
        lambda s: saved({name: t.half() for name, t in s["imagenet_256_uncond"].items()}),
        r"holds torch\.float16 tensors; the official files are float32"),
}


@pytest.mark.parametrize("case", sorted(WRONG_FILES))
def test_a_wrong_file_gets_a_message_naming_the_mix_up(tmp_path, states, case):
    config, key, payload, message = WRONG_FILES[case]
    cache_dir, registry = install_config(tmp_path, states, config, {key: payload(states)})
    with pytest.raises(CheckpointMismatchError, match=message) as caught:
        load_pretrained(tiny_config(config), cache_dir, "cpu", registry)
    assert isinstance(caught.value, ValueError)
    assert f"config {config}" in str(caught.value)
    # A file that passed its checks is never called corrupt nor to be deleted, and code is never to be trusted
    assert "delete" not in str(caught.value) and "weights_only=False" not in str(caught.value)
