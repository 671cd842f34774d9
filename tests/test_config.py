import math

import pytest
import torch
import yaml

from ddrm_helpers import ConfigError, available_configs, load_config
from ddrm_helpers.config import learns_sigma
from ddrm_helpers.paths import CONFIGS_DIR
from ddrm_helpers.registry import load_registry
from ddrm_helpers.schedule import betas_from_config, linear_betas

# The reference DDRM configs' values that the architectures and the sampler depend on.
REFERENCE = {
    "celeba_hq": {
        "model.type": "simple", "model.ch": 128, "model.ch_mult": [1, 1, 2, 2, 4, 4],
        "model.attn_resolutions": [16], "model.num_res_blocks": 2, "model.var_type": "fixedsmall",
        "data.image_size": 256, "data.dataset": "CelebA_HQ",
    },
    "imagenet_256": {
        "model.type": "openai", "model.num_channels": 256, "model.num_head_channels": 64,
        "model.attention_resolutions": "32,16,8", "model.learn_sigma": True, "model.class_cond": False,
        "model.use_fp16": True, "model.resblock_updown": True, "model.use_scale_shift_norm": True,
    },
    "imagenet_256_cc": {
        "model.class_cond": True, "classifier.classifier_width": 128, "classifier.classifier_depth": 2,
        "classifier.classifier_pool": "attention", "classifier.classifier_scale": 1.0,
        "classifier.classifier_attention_resolutions": "32,16,8",
    },
}


def get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("name", available_configs())
def test_configs_keep_reference_values_and_diffusion_schedule(name):
    cfg = load_config(name)
    assert cfg.name == name
    for dotted, value in REFERENCE[name].items():
        assert get(cfg, dotted) == value, dotted
    assert cfg.diffusion.beta_schedule == "linear"
    assert (cfg.diffusion.beta_start, cfg.diffusion.beta_end) == (0.0001, 0.02)
    assert cfg.diffusion.num_diffusion_timesteps == 1000
    assert (cfg.ddrm.steps, cfg.ddrm.eta, cfg.ddrm.eta_b) == (20, 0.85, 1.0)


def test_demo_defaults_follow_the_design():
    celeba, uncond = load_config("celeba_hq").ddrm, load_config("imagenet_256").ddrm
    assert (celeba.task, celeba.sigma_y) == ("sr4", 0.05)
    assert (uncond.task, uncond.sigma_y) == ("deblur_uni", 0.0)
    cc = load_config("imagenet_256_cc")
    assert (cc.ddrm.task, cc.ddrm.sigma_y, cc.classifier.classifier_scale) == ("sr4", 0.05, 1.0)


@pytest.mark.parametrize("name", available_configs())
def test_every_checkpoint_key_is_in_the_registry(name):
    registry = load_registry()
    keys = list(load_config(name).checkpoints.values())
    assert keys and all(k in registry for k in keys)


def test_overrides_by_dotted_key_and_from_strings():
    cfg = load_config("imagenet_256", **{"model.num_channels": 32, "ddrm.steps": "7", "ddrm.sigma_y": 0})
    assert cfg.model.num_channels == 32
    assert cfg.ddrm.steps == 7
    assert cfg.ddrm.sigma_y == 0.0 and isinstance(cfg.ddrm.sigma_y, float)
    assert load_config("imagenet_256").model.num_channels == 256  # nothing cached was changed


def test_config_is_read_only_and_replace_returns_a_copy():
    cfg = load_config("celeba_hq")
    with pytest.raises(AttributeError, match="read-only"):
        cfg.model.ch = 3
    ch_mult = cfg.model.ch_mult
    ch_mult.append(8)
    assert cfg.model.ch_mult == [1, 1, 2, 2, 4, 4]
    small = cfg.replace(**{"model.ch": 16})
    assert (small.model.ch, cfg.model.ch) == (16, 128)
    assert small != cfg and hash(small) == hash(load_config("celeba_hq", **{"model.ch": 16}))


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Did you mean 'celeba_hq'.*imagenet_256_cc"):
        load_config("celeba")


def test_unknown_key_names_the_section_and_suggests():
    with pytest.raises(ConfigError, match=r"'model\.chh'.*Did you mean 'model\.ch'"):
        load_config("celeba_hq", **{"model.chh": 64})
    with pytest.raises(ConfigError, match=r"Unknown key 'nope'"):
        load_config("celeba_hq", nope=1)
    with pytest.raises(AttributeError, match=r"'model\.foo'"):
        _ = load_config("celeba_hq").model.foo


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="int"):
        load_config("celeba_hq", **{"model.ch": "wide"})
    with pytest.raises(ConfigError, match="section"):
        load_config("celeba_hq", model=3)


def test_load_from_path_and_missing_sections(tmp_path):
    data = yaml.safe_load((CONFIGS_DIR / "celeba_hq.yml").read_text())
    data["name"] = "mine"
    good = tmp_path / "mine.yml"
    good.write_text(yaml.safe_dump(data))
    assert load_config(good).name == "mine"
    del data["diffusion"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="lacks the section.*diffusion"):
        load_config(bad)
    with pytest.raises(ConfigError, match="No config file"):
        load_config(tmp_path / "absent.yml")


def test_overrides_from_the_environment_apply_by_name(monkeypatch):
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", '{"*": {"ddrm.steps": 5}, "celeba_hq": {"model.ch": 32}}')
    assert (load_config("celeba_hq").model.ch, load_config("celeba_hq").ddrm.steps) == (32, 5)
    assert load_config("imagenet_256").ddrm.steps == 5
    assert load_config("celeba_hq", **{"ddrm.steps": 9}).ddrm.steps == 9  # explicit wins
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", "{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("celeba_hq")


@pytest.mark.parametrize("name", available_configs())
def test_the_schedule_comes_from_the_config(name):
    assert torch.equal(betas_from_config(load_config(name)), linear_betas())
    later = betas_from_config(load_config(name, **{"diffusion.beta_end": 0.03}))
    assert later[-1].item() == pytest.approx(0.03) and later[0].item() == pytest.approx(1e-4)
    assert (later > linear_betas()).sum() == 999  # every beta but the first is larger
    shorter = betas_from_config(load_config(name, **{"diffusion.num_diffusion_timesteps": 500}))
    assert torch.equal(shorter, linear_betas(500))


def test_the_other_schedules_of_the_reference_schema():
    def betas(kind):
        return betas_from_config(load_config("celeba_hq", **{"diffusion.beta_schedule": kind}))

    quad, const, sigmoid = betas("quad"), betas("const"), betas("sigmoid")
    assert quad[0].item() == pytest.approx(1e-4) and quad[-1].item() == pytest.approx(0.02)
    assert quad[500].item() == pytest.approx(((math.sqrt(1e-4) + math.sqrt(0.02)) / 2) ** 2, rel=1e-2)
    assert torch.equal(const, torch.full((1000,), 0.02, dtype=torch.float64))
    assert sigmoid[0].item() == pytest.approx(1e-4 + 0.0199 / (1 + math.exp(6)))
    assert bool((sigmoid.diff() > 0).all()) and bool((quad.diff() > 0).all())


@pytest.mark.parametrize(
    "override, message",
    [
        ({"diffusion.beta_schedule": "cosine"}, "diffusion.beta_schedule is 'cosine'; the schedules known are linear"),
        ({"diffusion.beta_start": 0}, r"diffusion.beta_start is 0.0; a beta is a number in \(0, 1\)"),
        ({"diffusion.beta_end": 1.5}, "diffusion.beta_end is 1.5"),
        ({"diffusion.beta_end": float("nan")}, "diffusion.beta_end is nan"),
        ({"diffusion.num_diffusion_timesteps": 0}, "diffusion.num_diffusion_timesteps is 0; give a whole number >= 1"),
    ],
)
def test_a_schedule_that_cannot_be_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=f"config celeba_hq: {message}"):
        betas_from_config(load_config("celeba_hq", **override))


def test_learned_sigma_is_read_from_the_config():
    assert [learns_sigma(load_config(name)) for name in available_configs()] == [False, True, True]
    assert not learns_sigma(load_config("imagenet_256", **{"model.learn_sigma": False}))
    assert learns_sigma(load_config("celeba_hq", **{"model.var_type": "learned_range"}))
