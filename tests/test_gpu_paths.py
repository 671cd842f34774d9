"""The GPU paths, checked on the CPU: device placement of the timestep table and fused attention.
(bench/gpu_check.py runs them on CUDA.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ddrm_helpers import load_config
from ddrm_helpers.models import build_classifier, build_model

from .model_utils import tiny_config, tiny_inputs

NETWORKS = ["celeba_hq", "imagenet_256_cc", "classifier"]


def _build(name: str) -> nn.Module:
    cfg = tiny_config(name)
    return build_classifier(cfg) if name == "classifier" else build_model(cfg)


def _op_names(work) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    return {event.key for event in prof.key_averages()}


# --- the timestep table follows the network ------------------------------------------------------


def test_timestep_table_is_a_non_persistent_buffer_that_moves_with_the_network():
    with torch.device("meta"):
        network = build_model(load_config("imagenet_256"))
    buffers = dict(network.named_buffers())
    assert "timestep_features.freqs" in buffers
    assert buffers["timestep_features.freqs"].device.type == "cpu"  # real values after assign-loading
    assert not any("freqs" in name for name in network.state_dict())
    network.to("meta")
    assert network.timestep_features.freqs.device.type == "meta"


@pytest.mark.parametrize("config, role", [("celeba_hq", "model"), ("imagenet_256_cc", "model"),
                                          ("imagenet_256_cc", "classifier")])
def test_full_size_network_built_on_meta_runs_on_meta(config, role):
    """Counting FLOPs builds on meta and runs there: no CPU table may meet meta activations."""
    with torch.device("meta"):
        cfg = load_config(config)
        network = build_classifier(cfg) if role == "classifier" else build_model(cfg)
        x, t = torch.empty(2, 3, 256, 256), torch.zeros(2)
        args = (x, t, torch.zeros(2, dtype=torch.long)) if getattr(network, "label_emb", None) is not None else (x, t)
    out = network(*args)
    assert out.device.type == "meta"
    assert out.shape == ((2, 1000) if role == "classifier" else (2, 6 if config != "celeba_hq" else 3, 256, 256))


def test_network_built_under_a_device_context_runs_on_another_device():
    with torch.device("cpu"):
        network = _build("imagenet_256")
    assert network.timestep_features.freqs.device.type == "cpu"
    network.to("meta")
    out = network(torch.empty(1, 3, 64, 64, device="meta"), torch.zeros(1, device="meta"))
    assert out.device.type == "meta" and out.shape == (1, 6, 64, 64)


def test_timestep_table_is_made_on_the_device_it_is_built_on(monkeypatch):
    """A network built under ``with torch.device(d)`` has its table on d (here d is the CPU, as the
    default device; the CUDA case is the same line, checked by bench/gpu_check.py)."""
    with torch.device("cpu"):
        features = _build("celeba_hq").temb.features
    assert features.freqs.device == torch.empty(0).device


# --- attention reaches the fused kernel ------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_attention_runs_the_fused_kernel(name):
    network = _build(name).eval()
    inputs = tiny_inputs(name, batch=1, dtype=torch.float32)
    if name == "celeba_hq":
        inputs = (inputs[0][..., :32, :32], inputs[1])  # attention at 16x16 still runs
    with torch.no_grad():
        names = _op_names(lambda: network(*inputs))
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


@pytest.mark.parametrize("name", NETWORKS)
def test_attention_inputs_are_contiguous(name, monkeypatch):
    seen = []

    def spy(q, k, v):
        seen.append(all(tensor.is_contiguous() for tensor in (q, k, v)))
        return F.scaled_dot_product_attention(q, k, v)

    from ddrm_helpers.models import adm_blocks, ddpm

    monkeypatch.setattr(adm_blocks, "attention", spy)
    monkeypatch.setattr(ddpm, "attention", spy)
    network = _build(name).eval()
    inputs = tiny_inputs(name, batch=2, dtype=torch.float32)
    with torch.no_grad():
        network(*inputs)
    assert seen and all(seen)
