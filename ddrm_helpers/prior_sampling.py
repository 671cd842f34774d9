"""The digits prior sampled otherwise than the self-test's verdict does: with nothing measured, and
with the network under float16 autocast.

:func:`sample_prior` draws unconditional samples (the tests check that a classifier fitted on the
training digits recognises them); :func:`compare_half_precision` replays one of the self-test's runs
with the network under autocast and says how far it lands from float32, which the self-test prints
on a GPU for information.
"""

from __future__ import annotations

import math

from .prior_checks import mean_psnr


def sample_prior(model, config, count: int, *, steps: int = 50, eta: float = 0.85, generator=None):
    """``count`` unconditional samples ``[count, C, H, W]`` in [-1, 1] from ``model`` with the
    schedule of ``config``: DDRM with nothing measured (every coordinate "missing"), i.e. DDIM in
    the variance-exploding form of :mod:`ddrm_helpers.sampler`, over ``timestep_sequence(steps, T)``."""
    import torch

    from .schedule import alphas_cumprod, betas_from_config, timestep_sequence

    abar = alphas_cumprod(betas_from_config(config)).tolist() + [1.0]  # abar[-1]: after the last step
    times = timestep_sequence(steps, len(abar) - 1)
    device = next(model.parameters()).device
    shape = (count, int(config.data.channels), int(config.data.image_size), int(config.data.image_size))

    def sigma(t: int) -> float:
        return math.sqrt((1 - abar[t]) / abar[t])

    with torch.no_grad():
        x = sigma(times[-1]) * torch.randn(shape, generator=generator, device=device)  # x_t / sqrt(abar_t)
        for t, t_next in zip(reversed(times), reversed([-1, *times[:-1]])):
            t_batch = torch.full((count,), float(t), device=device)
            eps = model(math.sqrt(abar[t]) * x, t_batch).float()
            x0 = x - sigma(t) * eps
            noise = torch.randn(shape, generator=generator, device=device)
            x = x0 + math.sqrt(1 - eta**2) * sigma(t_next) * eps + eta * sigma(t_next) * noise
    return x.clamp(-1, 1)


def half_precision(model, dtype=None):
    """``model`` run under autocast in ``dtype`` (float16 on a GPU) with a float32 output, for
    :func:`ddrm_sample`: only the network runs in half precision, the sampler's algebra stays float32."""
    import torch

    def predict(x, t, *rest):
        kind = x.device.type
        with torch.autocast(device_type=kind, dtype=dtype or (torch.float16 if kind == "cuda" else torch.bfloat16)):
            out = model(x, t, *rest)
        return out.float()

    return predict


def compare_half_precision(outcome, device, *, config, store, dtype=None) -> tuple[float, float]:
    """The same run as ``outcome`` (same seed, so the same measurement and sampler noise) with the
    network under autocast: (PSNR of its mean minus float32's, largest pixel difference in [0, 1] units)."""
    import torch

    from .degradations import make_degradation
    from .engine import resolve_settings, sample_measurements
    from .models import load_pretrained
    from .models.pretrained import Pretrained
    from .sampler import sigma_0_from_sigma_y
    from .schedule import betas_from_config

    r = outcome.result
    settings = resolve_settings(config, r.task, r.sigma_y, r.steps, r.eta, r.eta_b, r.seed, r.num_samples,
                                batch_size=int(config.sampling.batch_size), classifier_scale=1.0)
    device = torch.device(device)
    networks = load_pretrained(config, device=device, paths=store.paths(config, download=False, progress=False))
    x = r.original.to(device)
    degradation = make_degradation(r.task, x.shape[-1], channels=x.shape[1]).to(device)
    generator = torch.Generator(device=device).manual_seed(r.seed)
    sigma_0 = sigma_0_from_sigma_y(r.sigma_y)
    y = degradation.H(x) + sigma_0 * torch.randn(x.shape[0], degradation.measurement_dim, generator=generator,
                                                 device=device)
    samples = sample_measurements(Pretrained(half_precision(networks.model, dtype), None), y, degradation,
                                  settings, classes=None, generator=generator, progress=False,
                                  betas=betas_from_config(config), learned_sigma=False).cpu()
    gap = mean_psnr(samples.mean(dim=1), r.original) - outcome.mean
    return gap, float((samples - r.samples).abs().max()) / 2
