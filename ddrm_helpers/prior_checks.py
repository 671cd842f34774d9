"""What a restoration with the shipped digits prior must satisfy: the self-test's measurements.

Each function reads one run of :func:`~ddrm_helpers.runner.run_config` (a ``RunResult``) of
:mod:`ddrm_helpers.selftest`. Two need no margin at all:

* :func:`measurement_noise`: ``y - H x``, the noise the run drew, must have the std that ``sigma_y``
  claims: ``2 sigma_y`` in the model's [-1, 1] units (the factor written here, not taken from
  ``sigma_0_from_sigma_y``, so that a wrong conversion shows), zero mean, and none at all for
  ``sigma_y = 0``. The tolerance comes from the sample size: with N draws ``n = (y - H x) / (2
  sigma_y)``, ``sum n^2`` is chi-square with N degrees of freedom and ``sum n / sqrt(N)`` a standard
  normal; the first, made normal by the Wilson-Hilferty approximation (``((sum n^2 / N)^(1/3) - 1 +
  2 / (9 N)) / sqrt(2 / (9 N))``), and the second must each stay within ``NOISE_Z`` = 5 (by chance
  once in 1.7 million runs).
* :func:`kept_exactly` and :func:`reproduced`: a noiseless measurement is kept, bit for bit where
  inpainting keeps pixels, and ``H x_hat = y`` to float32 precision (``FLOAT32_TOLERANCE``) for the
  others.

Two have thresholds, set from the measured table in docs/ddrm.md: the gain of the samples' mean over
the baseline (``selftest.CHECKS``), and :func:`colour`: the digits are grey (R = G = B), and so is every
sample of their posterior; noise the sampler should have removed, or a network fed the wrong
timesteps, stays behind as colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NOISE_Z = 5.0
FLOAT32_TOLERANCE = 1e-5  # |H x_hat - y| in [-1, 1] units; measured 1.4e-6 at most (docs/ddrm.md)
GREY_LIMIT = 0.012  # mean |channel - mean of the channels|, [-1, 1] units; measured 0.0066 at most


def mean_psnr(images, reference) -> float:
    from .metrics import psnr

    return float(psnr(images, reference).mean())


def operator_and_measurement(result):
    """The run's operator (rebuilt from its task, as ``run_config`` builds it) and its measurement
    ``y`` [N, M], read back from the degraded images it shows."""
    from .degradations import make_degradation
    from .restore import measurement_from_photo

    op = make_degradation(result.task, result.original.shape[-1], channels=result.original.shape[1])
    return op, torch.cat([measurement_from_photo(op, degraded) for degraded in result.degraded])


def pseudo_inverse(result):
    """``H^+ y`` of a run's measurements, clipped to [-1, 1], leaving out the singular values that
    :func:`ddrm_sample` treats as 0 (the plain ``H_pinv`` divides float32 rounding by them)."""
    op, y = operator_and_measurement(result)
    s = op.singulars()
    kept = s > s.max() * torch.finfo(s.dtype).eps ** 0.5
    spectral = torch.where(kept, op.Ut(y) / torch.where(kept, s, 1.0), 0.0)
    return op.V(op.add_zeros(spectral)).reshape(result.original.shape).clamp(-1, 1)


def colour(samples: torch.Tensor) -> float:
    """How far ``samples`` [N, K, C, H, W] are from grey: the mean of ``|channel - mean of the channels|``."""
    return float((samples - samples.mean(dim=2, keepdim=True)).abs().mean())


@dataclass(frozen=True)
class Noise:
    """What the run's measurement noise was: its std in [0, 1] pixel units (``std``), and either the
    two z statistics of the module docstring (``sigma_y > 0``) or the largest ``|y - H x|``."""

    claimed: float  # sigma_y, [0, 1] pixel units
    std: float
    count: int
    z_spread: float = 0.0
    z_mean: float = 0.0
    largest: float = 0.0

    @property
    def passed(self) -> bool:
        if self.claimed == 0:
            return self.largest <= FLOAT32_TOLERANCE
        return abs(self.z_spread) <= NOISE_Z and abs(self.z_mean) <= NOISE_Z

    def problem(self) -> str:
        if self.claimed == 0:
            return f"a noiseless measurement holds noise (|y - H x| up to {self.largest:.2g})"
        return (f"the measurement noise has std {self.std:.4f}, not the {self.claimed:g} that sigma_y claims "
                f"(z = {self.z_spread:+.1f} for its spread, {self.z_mean:+.1f} for its mean, over {self.count} "
                f"draws; |z| <= {NOISE_Z:g} is chance)")


def measurement_noise(result) -> Noise:
    """The noise ``y - H x`` of a run of ``run_config`` against its ``sigma_y`` (module docstring)."""
    op, y = operator_and_measurement(result)
    return noise_statistics(y.double() - op.H(result.original.to(y.dtype)).double(), result.sigma_y)


def noise_statistics(noise: torch.Tensor, sigma_y: float) -> Noise:
    """``noise`` (any shape, [-1, 1] units) against the claim ``sigma_y`` ([0, 1] pixel units)."""
    noise = noise.double().reshape(-1)
    count = noise.numel()
    std = float(noise.pow(2).mean().sqrt()) / 2  # [-1, 1] units -> [0, 1] pixel units
    if sigma_y == 0:
        return Noise(0.0, std, count, largest=float(noise.abs().max()))
    draws = noise / (2 * sigma_y)
    spread = 2 / (9 * count)
    z_spread = (float(draws.pow(2).mean()) ** (1 / 3) - 1 + spread) / math.sqrt(spread)
    return Noise(sigma_y, std, count, z_spread=z_spread, z_mean=float(draws.sum() / math.sqrt(count)))


def kept_exactly(result) -> float:
    """Inpainting: the largest change, over every sample, of a pixel the mask keeps (0 when kept bit for bit)."""
    from .degradations import make_degradation

    op = make_degradation(result.task, result.original.shape[-1], channels=result.original.shape[1])
    kept = op.mask.expand_as(result.samples)
    original = result.original[:, None].expand_as(result.samples)
    return float((result.samples[kept] - original[kept]).abs().max())


def reproduced(networks, config, result, device, digits: int | None = None) -> float:
    """``max |H x_hat - y|`` for the run's noiseless measurements (the first ``digits`` of them),
    restored once more by :func:`ddrm_sample` itself with the run's settings: ``run_config`` clips
    its samples to [-1, 1], which moves ``H x_hat`` wherever a pixel overshoots, so the unclipped
    output is read here."""
    from .config import learns_sigma
    from .degradations import make_degradation
    from .sampler import ddrm_sample
    from .schedule import betas_from_config

    x = result.original[:digits].to(device)
    op = make_degradation(result.task, x.shape[-1], channels=x.shape[1]).to(device)
    y = op.H(x)
    x_hat = ddrm_sample(networks.model, y, op, 0.0, steps=result.steps, eta=result.eta, eta_b=result.eta_b,
                        generator=torch.Generator(device=device).manual_seed(result.seed), progress=False,
                        betas=betas_from_config(config), learned_sigma=learns_sigma(config))
    return float((op.H(x_hat) - y).abs().max())
