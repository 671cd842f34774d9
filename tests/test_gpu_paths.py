"""The GPU paths, checked on the CPU: device placement of the timestep table, fused attention,
the float16 group norm, the fast-path switches' plumbing, guidance under inference mode, the
pretrained cache's device key and the compile switch. (bench/gpu_check.py runs them on CUDA.)"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ddrm_helpers import load_config, make_degradation, sampler
from ddrm_helpers.models import (
    build_classifier,
    build_model,
    clear_pretrained_cache,
    fast_path,
    fast_path_options,
    fastpath,
    load_pretrained,
    set_fast_path,
)
from ddrm_helpers.models.layers import GroupNorm
from ddrm_helpers.models.pretrained import device_key
from ddrm_helpers.sampler import ddrm_sample

from .model_utils import seeded_weights_, tiny_config, tiny_inputs
from .tiny_models import FILES, TINY_OVERRIDES, tiny_checkpoint_bytes

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


# --- group norm in float16 -------------------------------------------------------------------------


def _norm_and_input(offset=50.0):
    norm = GroupNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(64, generator=torch.Generator().manual_seed(0)))
        norm.bias.copy_(0.1 * torch.randn(64, generator=torch.Generator().manual_seed(1)))
    x = offset + torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(2))
    return norm.requires_grad_(False), x.half()


def test_half_group_norm_accumulates_in_float32():
    """Values around 50 with unit spread: float16 sums of squares would lose everything, yet the
    float16 path agrees with the float32 one to float16 rounding."""
    norm, x = _norm_and_input()
    reference = F.group_norm(x.float(), 32, norm.weight, norm.bias, 1e-5)
    out = norm(x)
    assert out.dtype == torch.float16
    error = ((out.float() - reference).abs().max() / reference.abs().max()).item()
    assert error < 2e-3


def test_half_group_norm_switch_off_is_the_float32_round_trip():
    norm, x = _norm_and_input()
    with fast_path_options(half_group_norm=False):
        out = norm(x)
    assert torch.equal(out, F.group_norm(x.float(), 32, norm.weight, norm.bias, 1e-5).half())
    with fast_path_options(half_group_norm=True):
        assert not torch.equal(norm(x), out)  # the switch does change the path


def test_half_group_norm_casts_nothing_after_the_first_call():
    norm, x = _norm_and_input()
    norm(x)
    assert not {n for n in _op_names(lambda: norm(x)) if "to_copy" in n or n == "aten::to"}
    with fast_path_options(half_group_norm=False):
        assert "aten::_to_copy" in _op_names(lambda: norm(x))


def test_half_group_norm_cache_follows_the_parameters():
    norm, x = _norm_and_input()
    first = norm(x)
    with torch.no_grad():
        norm.bias.add_(1.0)  # in place: the version counter moves
    assert torch.allclose(norm(x).float(), first.float() + 1.0, atol=2e-2)
    norm.to(torch.float64).to(torch.float32)  # new storage
    assert torch.allclose(norm(x).float(), first.float() + 1.0, atol=2e-2)


def test_half_group_norm_made_inside_inference_mode_serves_autograd_later():
    norm, x = _norm_and_input()
    with torch.inference_mode():
        norm(x)  # the cache is filled here
    x_in = x.clone().requires_grad_(True)
    norm(x_in).float().square().sum().backward()
    assert x_in.grad is not None and torch.isfinite(x_in.grad).all()


def test_half_group_norm_trains_its_parameters():
    norm, x = _norm_and_input()
    norm.requires_grad_(True)
    norm(x).float().sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None


def test_bfloat16_keeps_the_float32_round_trip():
    norm, x = _norm_and_input()
    x = x.bfloat16()
    assert torch.equal(norm(x), F.group_norm(x.float(), 32, norm.weight, norm.bias, 1e-5).bfloat16())


def test_half_group_norm_changes_the_float16_torso_by_less_than_1e_3():
    """The rule for keeping the switch on: eps of the float16 torso no more than 1e-3 further from
    the float32 network's (``||eps16 - eps32|| / ||eps32||``) than with the float32 round trip."""
    cfg = load_config("imagenet_256", **{"model.num_channels": 32})
    network = seeded_weights_(build_model(cfg).eval(), seed=0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 100])
    with torch.no_grad():
        reference = network(x, t)[:, :3]
        network.convert_torso(torch.float16)
        new = network(x, t)[:, :3]
        with fast_path_options(half_group_norm=False):
            old = network(x, t)[:, :3]
    new_error, old_error = (((e - reference).norm() / reference.norm()).item() for e in (new, old))
    assert 0 < new_error < 5e-3 and 0 < old_error < 5e-3
    assert new_error <= old_error + 1e-3


# --- the fast-path switches ------------------------------------------------------------------------


def test_fast_path_defaults_and_validation():
    assert fast_path() == fastpath.FastPath(channels_last=True, cudnn_benchmark=True, half_group_norm=True,
                                            compile_mode=None)
    with pytest.raises(ValueError, match="compile_mode"):
        set_fast_path(compile_mode="fastest")
    with pytest.raises(TypeError):
        set_fast_path(channels_last="yes")
    with pytest.raises(TypeError):
        set_fast_path(layout="nhwc")
    previous = set_fast_path(cudnn_benchmark=False)
    try:
        assert not fast_path().cudnn_benchmark and previous.cudnn_benchmark
    finally:
        set_fast_path(**dataclasses.asdict(previous))
    assert fast_path().cudnn_benchmark


@pytest.mark.parametrize("name", NETWORKS)
def test_gpu_switches_do_nothing_on_the_cpu(name):
    network = _build(name).eval()
    inputs = tiny_inputs(name, batch=1, dtype=torch.float32)
    with torch.no_grad():
        network(*inputs)
    assert all(p.is_contiguous() for p in network.parameters())
    assert not torch.backends.cudnn.benchmark


@pytest.mark.parametrize("name", NETWORKS)
def test_channels_last_and_benchmark_on_a_gpu_device(name, monkeypatch):
    """The CUDA path with the CPU standing in for CUDA: the weights turn channels-last once (as
    ordinary tensors, even from inside inference mode), the input goes in channels-last, the output
    comes out NCHW-contiguous and equal to the plain path, and cuDNN benchmark mode is on during the
    call only."""
    network = seeded_weights_(_build(name).eval(), seed=0)
    inputs = tiny_inputs(name, batch=2, dtype=torch.float32)
    with torch.no_grad():
        plain = network(*inputs)
    monkeypatch.setattr(fastpath, "GPU_DEVICE_TYPES", ("cpu",))
    seen = []
    first = next(m for m in network.modules() if isinstance(m, nn.Conv2d))
    first.register_forward_pre_hook(lambda module, args: seen.append(
        (args[0].is_contiguous(memory_format=torch.channels_last), torch.backends.cudnn.benchmark)))
    conversions = []
    original_to = nn.Module.to
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: conversions.append(k) or original_to(self, *a, **k))
    with torch.inference_mode():
        fast = network(*inputs)
        again = network(*inputs)
    assert conversions == [{"memory_format": torch.channels_last}]  # once
    assert seen == [(True, True), (True, True)]
    assert not torch.backends.cudnn.benchmark
    weights = [m.weight for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_inference() for w in weights)
    assert fast.is_contiguous() and torch.equal(fast, again)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    with fast_path_options(channels_last=False, cudnn_benchmark=False):
        network(*inputs)
    assert seen[-1] == (False, False)


# --- classifier guidance under inference mode ------------------------------------------------------


def _tiny_guided_setup():
    cfg = load_config("imagenet_256_cc", **TINY_OVERRIDES["imagenet_256_cc"])
    model = seeded_weights_(build_model(cfg), seed=0).eval().requires_grad_(False)
    classifier = seeded_weights_(build_classifier(cfg), seed=1).eval().requires_grad_(False)
    op = make_degradation("sr4", 64)
    y = op.H(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return model, classifier, op, y


def test_guidance_runs_inside_inference_mode():
    model, classifier, op, y = _tiny_guided_setup()

    def run():
        return ddrm_sample(model, y, op, 0.1, steps=2, classifier=classifier, classes=torch.tensor([3]),
                           classifier_scale=5.0, generator=torch.Generator().manual_seed(0), progress=False)

    expected = run()
    with torch.inference_mode():
        inside = run()
    assert torch.equal(inside, expected)
    unguided = ddrm_sample(model, y, op, 0.1, steps=2, classes=torch.tensor([3]),
                           generator=torch.Generator().manual_seed(0), progress=False)
    assert not torch.equal(unguided, expected)  # the gradient did enter


# --- the pretrained cache's device key ------------------------------------------------------------


def test_device_key_names_one_device_once():
    assert device_key("cuda") == device_key("cuda:0") == device_key(torch.device("cuda", 0)) == "cuda:0"
    assert device_key("cuda:1") == "cuda:1" != device_key("cuda")
    assert device_key("cpu") == device_key("cpu:0") == device_key(torch.device("cpu")) == "cpu"


def test_load_pretrained_cache_treats_one_device_as_one(tmp_path):
    config_name, role, file, _ = FILES["celeba_hq"]
    path = tmp_path / file
    path.write_bytes(tiny_checkpoint_bytes("celeba_hq"))
    config = load_config(config_name, **TINY_OVERRIDES[config_name])
    clear_pretrained_cache()
    try:
        first = load_pretrained(config, paths={role: path}, device="cpu")
        second = load_pretrained(config, paths={role: path}, device=torch.device("cpu", 0))
        assert second.model is first.model
    finally:
        clear_pretrained_cache()
    state = torch.load(io.BytesIO(tiny_checkpoint_bytes("celeba_hq")), weights_only=True)
    torch.testing.assert_close(first.model.state_dict(), state)


# --- the compile switch ---------------------------------------------------------------------------


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return 0.1 * self.conv(x)


def _sample(model, **kwargs):
    op = make_degradation("sr2", 8)
    y = op.H(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    return ddrm_sample(model, y, op, 0.1, steps=4, generator=torch.Generator().manual_seed(0), progress=False,
                       **kwargs)


def test_compile_switch_off_calls_the_model_itself(monkeypatch):
    monkeypatch.setattr(sampler, "_compile", lambda model, mode: pytest.fail("compiled with the switch off"))
    model = _TinyNet().requires_grad_(False)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(out))
    outputs = []
    _sample(model, callback=lambda info: outputs.append(info["eps"]))
    assert sampler._network_for_sampling(model) is model
    assert len(seen) == 4 and all(out is eps for out, eps in zip(seen, outputs))  # nothing in between


def test_compile_switch_compiles_once_and_copies_each_output(monkeypatch):
    compiled, calls, marks = [], [], []

    def fake_compile(model, mode):
        compiled.append(mode)

        def run(x, t):
            out = model(x, t)
            calls.append(out)
            return out

        return run

    monkeypatch.setattr(sampler, "_compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    model = _TinyNet().requires_grad_(False)
    eager = _sample(model)
    outputs = []
    with fast_path_options(compile_mode="reduce-overhead"):
        first = _sample(model, callback=lambda info: outputs.append(info["eps"]))
        second = _sample(model)
    assert compiled == ["reduce-overhead"]  # once for the model, kept across calls
    assert len(calls) == 8 and len(marks) == 8
    assert torch.equal(first, eager) and torch.equal(second, eager)
    assert not any(eps.data_ptr() == out.data_ptr() for eps, out in zip(outputs, calls))  # copies
    assert fast_path().compile_mode is None
    assert torch.equal(_sample(model), eager) and len(calls) == 8  # off again: eager
