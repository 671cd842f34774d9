"""The diffusion's noise schedule and DDRM's timestep sequence: small pure functions.

The three configs use the DDPM linear schedule, ``beta_t`` from 1e-4 to 0.02 over 1000 steps, and
``alpha_bar_t = prod_{s <= t} (1 - beta_s)``. DDRM sees a step t as the variance-exploding noise
level ``sigma_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t)``.

>>> abar = alphas_cumprod(linear_betas())
>>> round(float(abar[0]), 6), timestep_sequence(4)
(0.9999, [0, 250, 500, 750])
"""

from __future__ import annotations

import torch

from .errors import SamplingError


def linear_betas(
    num_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``num_steps`` betas evenly spaced from ``beta_start`` to ``beta_end`` (both included)."""
    return torch.linspace(beta_start, beta_end, num_steps, device=device, dtype=dtype)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``alpha_bar_t = prod_{s <= t} (1 - beta_s)``, on the device and in the dtype of ``betas``."""
    return torch.cumprod(1 - betas, dim=0)


def timestep_sequence(steps: int, num_train_steps: int = 1000) -> list[int]:
    """The ``steps`` timesteps DDRM visits, ascending: ``t_i = floor(i * T / steps)``, i < steps.

    The sampler runs them from the last to the first, then to "t = -1" (alpha_bar = 1, no noise).
    When ``steps`` divides T this is the reference's ``range(0, T, T // steps)``
    (20 steps: 0, 50, ..., 950); otherwise it still has exactly ``steps`` distinct entries,
    where the reference's ``range`` has more (7 steps: 8 of them, 0, 142, ..., 994).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_train_steps:
        raise SamplingError(
            f"steps={steps!r}: DDRM takes between 1 and {num_train_steps} steps (one network "
            "evaluation each); the paper uses 20"
        )
    return [i * num_train_steps // steps for i in range(steps)]
