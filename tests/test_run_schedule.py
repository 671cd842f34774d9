"""A run samples with its config's diffusion schedule and learned-sigma setting: an override of
``diffusion.*`` changes the timesteps and noise levels the network sees."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

from ddrm_helpers import engine
from ddrm_helpers.config import learns_sigma, load_config
from ddrm_helpers.degradations import make_degradation
from ddrm_helpers.demo import default_images
from ddrm_helpers.engine import resolve_settings, sample_measurements
from ddrm_helpers.errors import SamplingError
from ddrm_helpers.runner import run_config
from ddrm_helpers.schedule import alphas_cumprod, betas_from_config

from .tiny_models import install_tiny_checkpoints


class Recorder:
    """A noise predictor that predicts 0 (or ``channels`` zeros) and records its timesteps."""

    def __init__(self, channels=None):
        self.channels = channels
        self.timesteps = []

    def __call__(self, x, t, *classes):
        self.timesteps.append(t[0].item())
        shape = (x.shape[0], self.channels or x.shape[1], *x.shape[2:])
        return torch.zeros(shape, dtype=x.dtype)


def sample(config, model, steps=4):
    settings = resolve_settings(config, "sr2", 0.05, steps, None, None, 0, 1, batch_size=1, device="cpu")
    op = make_degradation("sr2", 8)
    y = op.H(torch.zeros(1, 3, 8, 8))
    levels = []
    sample_measurements(SimpleNamespace(model=model, classifier=None), y, op, settings, classes=None,
                        generator=torch.Generator().manual_seed(0),
                        callback=lambda info: levels.append(info["sigma"]), progress=False,
                        betas=betas_from_config(config), learned_sigma=learns_sigma(config))
    return levels


def expected_levels(config, timesteps):
    abar = alphas_cumprod(betas_from_config(config))
    return [math.sqrt((1 - abar[int(t)]) / abar[int(t)]) for t in timesteps]


def test_sample_measurements_uses_the_schedule_it_is_given():
    default, changed = load_config("celeba_hq"), load_config("celeba_hq", **{"diffusion.beta_end": 0.03})
    first, second = Recorder(), Recorder()
    levels, other = sample(default, first), sample(changed, second)
    assert first.timesteps == second.timesteps == [750, 500, 250, 0]
    assert levels == pytest.approx(expected_levels(default, first.timesteps))
    assert other == pytest.approx(expected_levels(changed, second.timesteps))
    assert other[0] > 1.3 * levels[0]  # noisier: a larger beta_end

    shorter = load_config("celeba_hq", **{"diffusion.num_diffusion_timesteps": 200})
    third = Recorder()
    sample(shorter, third)
    assert third.timesteps == [150, 100, 50, 0]


def test_sample_measurements_follows_the_configs_learned_sigma():
    uncond = load_config("imagenet_256")
    sample(uncond, Recorder(channels=6))  # learned sigma: 6 channels, the first 3 used
    with pytest.raises(SamplingError, match="learned_sigma=True"):
        sample(uncond, Recorder(channels=3))
    with pytest.raises(SamplingError, match=r"learned_sigma=False \(the config's model.learn_sigma is off\)"):
        sample(load_config("celeba_hq"), Recorder(channels=6))


@pytest.fixture
def tiny(server, tmp_path, monkeypatch):
    install_tiny_checkpoints(server, tmp_path, monkeypatch)
    calls = []
    real = engine.ddrm_sample

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "ddrm_sample", recording)
    return calls


def override(monkeypatch, name, **values):
    table = json.loads(os.environ["DDRM_CONFIG_OVERRIDES"])
    table[name] = {**table[name], **values}
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", json.dumps(table))


def run_levels(name, **kwargs):
    seen = []
    result = run_config(name, steps=2, save=False, progress=False, callback=lambda info: seen.append(
        (info["t"], info["sigma"])), **kwargs)
    assert not result.skipped
    return seen, result


@pytest.mark.server
def test_a_run_samples_with_its_configs_schedule(tiny, monkeypatch):
    default, _ = run_levels("celeba_hq")
    assert tiny[-1]["learned_sigma"] is False and torch.equal(tiny[-1]["betas"], betas_from_config(
        load_config("celeba_hq")))
    override(monkeypatch, "celeba_hq", **{"diffusion.beta_end": 0.03, "diffusion.num_diffusion_timesteps": 500})
    changed, result = run_levels("celeba_hq")
    config = load_config("celeba_hq")
    assert config.diffusion.beta_end == 0.03
    assert [t for t, _ in default] == [500, 0] and [t for t, _ in changed] == [250, 0]
    assert [s for _, s in changed] == pytest.approx(expected_levels(config, [250, 0]))
    assert [s for _, s in changed] != pytest.approx([s for _, s in default])
    assert len(tiny[-1]["betas"]) == 500 and torch.isfinite(result.restored).all()


@pytest.mark.server
def test_a_run_tells_the_sampler_whether_the_model_learns_sigma(tiny):
    run_levels("imagenet_256", images=[default_images(load_config("imagenet_256"))[0]])
    assert tiny[-1]["learned_sigma"] is True


@pytest.mark.server
def test_an_override_of_steps_past_the_configs_timesteps_is_refused_before_the_download(tiny, server, monkeypatch):
    override(monkeypatch, "celeba_hq", **{"diffusion.num_diffusion_timesteps": 10})
    with pytest.raises(SamplingError, match="between 1 and 10 "):
        run_config("celeba_hq", steps=20, progress=False)
    assert server.log == [] and tiny == []
