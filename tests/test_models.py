"""The architectures: the official checkpoints' tensors, and each forward pinned at a tiny width."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddrm_helpers import ConfigError, load_config
from ddrm_helpers.errors import ModelInputError
from ddrm_helpers.models import ADMClassifier, ADMUNet, DDPMUNet, build_classifier, build_model
from ddrm_helpers.models.adm_blocks import qkv_attention
from ddrm_helpers.models.ddpm import AttnBlock
from ddrm_helpers.models.layers import SinusoidalTimesteps
from ddrm_helpers.paths import MANIFESTS_DIR

from .model_utils import TINY, seeded_weights_, tiny_config, tiny_inputs

OFFICIAL = [
    ("celeba_hq", build_model, "celeba_hq.ckpt", DDPMUNet),
    ("imagenet_256", build_model, "256x256_diffusion_uncond.pt", ADMUNet),
    ("imagenet_256_cc", build_model, "256x256_diffusion.pt", ADMUNet),
    ("imagenet_256_cc", build_classifier, "256x256_classifier.pt", ADMClassifier),
]


def build_tiny(name: str) -> torch.nn.Module:
    cfg = tiny_config(name)
    return build_classifier(cfg) if name == "classifier" else build_model(cfg)


@pytest.mark.parametrize("config, builder, file, cls", OFFICIAL, ids=[o[2] for o in OFFICIAL])
def test_full_size_state_dict_equals_the_official_manifest(config, builder, file, cls):
    manifest = json.loads((MANIFESTS_DIR / f"{file}.json").read_text())
    with torch.device("meta"):
        network = builder(load_config(config))
    assert isinstance(network, cls)
    ours = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    theirs = {name: tuple(t["shape"]) for name, t in manifest["tensors"].items()}
    extra, missing = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    assert not extra and not missing, (extra[:5], missing[:5])
    assert ours == theirs
    assert len(ours) == manifest["num_tensors"]
    assert sum(math.prod(shape) for shape in ours.values()) == manifest["num_params"]
    assert sum(p.numel() for p in network.parameters()) == manifest["num_params"]


def test_learned_sigma_and_class_embedding_follow_the_config():
    with torch.device("meta"):
        uncond = build_model(load_config("imagenet_256"))
        cond = build_model(load_config("imagenet_256_cc"))
        fixed = build_model(load_config("imagenet_256", **{"model.learn_sigma": False}))
    assert uncond.out[2].out_channels == 6 and fixed.out[2].out_channels == 3
    assert uncond.label_emb is None and cond.label_emb.weight.shape == (1000, 1024)
    heads = {m.num_heads for m in cond.modules() if hasattr(m, "qkv")}
    assert heads == {8, 16}  # 512 and 1024 channels in heads of 64


# Float64 forwards of the tiny networks with seeded_weights_(seed 0) on tiny_inputs(): the mean,
# the standard deviation and six evenly spaced elements of the output. When written, guided-diffusion's
# and the reference DDRM's own forwards on the same weights gave the same values to all 12 digits
# stored; a change to the maths moves them far more than the tolerance.
PINNED = {
    "celeba_hq": [0.0860788277293, 0.581164673429, -0.26294452114, -0.733148230362, 1.37118947044,
                  0.971229370895, -0.145870027767, 0.108260823754],
    "imagenet_256": [-0.0872121671834, 0.606696832561, 0.176572356495, 0.103181440226, 1.15999115153,
                     0.514385326899, -0.954327441331, 0.108910529649],
    "imagenet_256_cc": [0.0419471607174, 0.632877749601, 0.309510617296, 0.103199653791, 0.967341512647,
                        0.200026422456, -0.535626286832, 0.353341274971],
    "classifier": [0.0151550860751, 0.539364684473, -0.931471319173, 0.113915968487, 0.274678202268,
                   -0.113437778381, 0.245828005269, 0.20144081096],
}


def _summary(out: torch.Tensor) -> list[float]:
    flat = out.flatten()
    picks = torch.linspace(0, flat.numel() - 1, 6).long()
    return [flat.mean().item(), flat.std().item(), *flat[picks].tolist()]


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_is_pinned_and_computed_image_by_image(name):
    network = seeded_weights_(build_tiny(name).double().eval(), seed=0)
    inputs = tiny_inputs(name)
    with torch.no_grad():
        out = network(*inputs)
        second_alone = network(*(a[1:] for a in inputs))
    assert out.dtype == torch.float64
    assert _summary(out) == pytest.approx(PINNED[name], rel=1e-7, abs=1e-9)
    # no mixing across the batch (a wrong reshape in attention would mix images)
    torch.testing.assert_close(out[1:], second_alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_forward_shapes_dtype_and_determinism(name):
    network = seeded_weights_(build_tiny(name).eval(), seed=3)
    inputs = tiny_inputs(name, batch=2, dtype=torch.float32)
    with torch.no_grad():
        first, second = network(*inputs), network(*inputs)
    expected = {
        "celeba_hq": (2, 3, 64, 64),
        "imagenet_256": (2, 6, 64, 64),
        "imagenet_256_cc": (2, 6, 64, 64),
        "classifier": (2, 1000),
    }[name]
    assert first.shape == expected and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


def test_timestep_and_class_label_change_the_output():
    network = seeded_weights_(build_tiny("imagenet_256_cc").eval(), seed=0)
    x, t, y = tiny_inputs("imagenet_256_cc", batch=1, dtype=torch.float32)
    x = x[..., :32, :32]
    with torch.no_grad():
        base = network(x, t, y)
        assert not torch.allclose(base, network(x, t + 1, y))
        assert not torch.allclose(base, network(x, t, (y + 1) % 1000))


def test_class_labels_are_required_exactly_when_class_conditional():
    cond, uncond = build_tiny("imagenet_256_cc"), build_tiny("imagenet_256")
    x, t, y = tiny_inputs("imagenet_256_cc", batch=1, dtype=torch.float32)
    with pytest.raises(ModelInputError, match="class-conditional.*model\\(x, t, y\\)"):
        cond(x, t)
    with pytest.raises(ModelInputError, match="unconditional"):
        uncond(x, t, y)
    with pytest.raises(ModelInputError, match="shape \\[1\\]"):
        cond(x, t, y[None])


@pytest.mark.parametrize("name", sorted(TINY))
def test_bad_inputs_get_a_clear_message(name):
    network = build_tiny(name)
    x, t, *rest = tiny_inputs(name, batch=1, dtype=torch.float32)
    with pytest.raises(ModelInputError, match="one timestep per image"):
        network(x, t[:0], *rest)
    with pytest.raises(ModelInputError, match="multiples of 32|image_size"):
        network(x[..., :-8, :-8], t, *rest)
    with pytest.raises(ModelInputError, match="\\[batch, 3, height, width\\]"):
        network(x[:, :1], t, *rest)


def test_classifier_pooling_needs_its_training_size():
    classifier = build_tiny("classifier")
    x, t = tiny_inputs("classifier", batch=1, dtype=torch.float32)
    with pytest.raises(ModelInputError, match="256x256.*got 128x128"):
        classifier(x[..., :128, :128], t)


# Float16 convolutions are slow on a CPU: small inputs, and a classifier attending at one level only.
HALF_CASES = {
    "unet": (build_model, {"model.num_channels": 32}, 32),
    "classifier": (build_classifier, {"classifier.classifier_width": 32, "classifier.image_size": 64,
                                      "classifier.classifier_attention_resolutions": "8"}, 64),
}


@pytest.mark.parametrize("case", sorted(HALF_CASES))
def test_half_precision_torso_keeps_norms_and_head_in_float32(case):
    build, overrides, size = HALF_CASES[case]
    network = seeded_weights_(build(load_config("imagenet_256_cc", **overrides)).eval(), seed=0)
    generator = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 3, size, size, generator=generator), torch.tensor([500]))
    if case == "unet":
        inputs += (torch.tensor([7]),)
    with torch.no_grad():
        reference = network(*inputs)
        half = network.convert_torso(torch.float16)
        out = half(*inputs)
    assert half is network
    first_block = network.input_blocks[1][0]
    assert first_block.in_layers[2].weight.dtype == torch.float16
    assert network.middle_block[1].qkv.weight.dtype == torch.float16
    assert first_block.in_layers[0].weight.dtype == torch.float32
    assert first_block.emb_layers[1].weight.dtype == torch.float32
    assert network.time_embed[0].weight.dtype == torch.float32
    assert network.out[0].weight.dtype == torch.float32
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-2 * reference.abs().max().item())


def test_timestep_features_are_a_buffer_outside_the_state_dict():
    with torch.device("meta"):
        network = build_model(load_config("celeba_hq"))
    assert network.temb.features.freqs.device.type == "cpu"  # usable after weights are assigned
    assert not any("freqs" in name for name in network.state_dict())


def test_timestep_features_of_both_families():
    t = torch.tensor([0.0, 7.0, 999.0])
    ddpm = SinusoidalTimesteps(8, shift=1, cos_first=False)(t).double()
    adm = SinusoidalTimesteps(8, shift=0, cos_first=True)(t).double()
    i = torch.arange(4, dtype=torch.float64)
    angles = t.double()[:, None] * (10000 ** (-i / 3))[None]
    torch.testing.assert_close(ddpm, torch.cat([angles.sin(), angles.cos()], 1), rtol=0, atol=2e-4)
    angles = t.double()[:, None] * (10000 ** (-i / 4))[None]
    torch.testing.assert_close(adm, torch.cat([angles.cos(), angles.sin()], 1), rtol=0, atol=2e-4)


def _explicit_attention(q, k, v):
    """softmax(q^T k / sqrt(d)) for [N, d, T] per-head tensors, then the weighted v: [N, d, T]."""
    weights = torch.softmax(torch.einsum("nct,ncs->nts", q, k) / math.sqrt(q.shape[1]), dim=-1)
    return torch.einsum("nts,ncs->nct", weights, v)


@pytest.mark.parametrize("legacy_order", [True, False])
def test_qkv_attention_layouts(legacy_order):
    b, heads, ch, tokens = 2, 3, 4, 5
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(b, 3 * heads * ch, tokens, dtype=torch.float64, generator=generator)
    if legacy_order:  # [head, (q|k|v), channel]
        q, k, v = qkv.reshape(b * heads, 3 * ch, tokens).split(ch, dim=1)
    else:  # [(q|k|v), head, channel]
        q, k, v = (part.reshape(b * heads, ch, tokens) for part in qkv.chunk(3, dim=1))
    expected = _explicit_attention(q, k, v).reshape(b, heads * ch, tokens)
    torch.testing.assert_close(qkv_attention(qkv, heads, legacy_order=legacy_order), expected)
    first = qkv_attention(qkv, heads, legacy_order=legacy_order, queries=1)
    torch.testing.assert_close(first, expected[..., :1])


def test_ddpm_attention_is_single_head_over_all_positions():
    block = seeded_weights_(AttnBlock(32).double(), seed=0)
    x = torch.randn(2, 32, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = block.norm(x)
    q, k, v = (conv(h).flatten(2) for conv in (block.q, block.k, block.v))
    expected = x + block.proj_out(_explicit_attention(q, k, v).reshape(x.shape))
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(
    "build, config, overrides, message",
    [
        (build_model, "celeba_hq", {"model.type": "bayesian"}, "'simple'.*'openai'"),
        (build_classifier, "imagenet_256", {}, "no classifier section"),
        (build_model, "imagenet_256", {"model.num_head_channels": 48}, "heads of 48 channels"),
        (build_model, "imagenet_256", {"model.num_channels": 48}, "num_channels = 48 .*32 groups"),
        (build_model, "celeba_hq", {"model.ch": 16}, "model.ch = 16 gives levels of 16 channels"),
        (build_classifier, "imagenet_256_cc", {"classifier.classifier_pool": "adaptive"}, "only 'attention'"),
        (build_model, "imagenet_256", {"model.image_size": 100}, "image_size 100"),
        (build_model, "imagenet_256", {"model.attention_resolutions": "16,x"}, "sides in pixels"),
    ],
)
def test_config_errors_say_what_to_change(build, config, overrides, message):
    with pytest.raises(ConfigError, match=message), torch.device("meta"):
        build(load_config(config, **overrides))
