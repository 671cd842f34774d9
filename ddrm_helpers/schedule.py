"""The diffusion's noise schedule and DDRM's timestep sequence: small pure functions.

The three configs use the DDPM linear schedule, ``beta_t`` from 1e-4 to 0.02 over 1000 steps, and
``alpha_bar_t = prod_{s <= t} (1 - beta_s)``. DDRM sees a step t as the variance-exploding noise
level ``sigma_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t)``.

A run takes its schedule from its config's ``diffusion`` section (:func:`betas_from_config`), so
that ``load_config(name, **{"diffusion.beta_end": 0.03})`` changes the schedule the sampler uses.

>>> abar = alphas_cumprod(linear_betas())
>>> round(float(abar[0]), 6), timestep_sequence(4)
(0.9999, [0, 250, 500, 750])
"""

from __future__ import annotations

import math

import torch

from .errors import ConfigError
from .validate import check_steps

# The names of the reference DDRM schema's ``diffusion.beta_schedule``; every config here is linear.
BETA_SCHEDULES = ("linear", "quad", "const", "sigmoid")


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
    steps = check_steps(steps, num_train_steps)
    return [i * num_train_steps // steps for i in range(steps)]


def betas_from_config(config, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The betas of a config's ``diffusion`` section (``beta_schedule``, ``beta_start``,
    ``beta_end``, ``num_diffusion_timesteps``), on the CPU.

    Schedules, T the number of timesteps: ``linear`` (evenly spaced from ``beta_start`` to
    ``beta_end``), ``quad`` (evenly spaced square roots, squared), ``const`` (``beta_end``
    throughout) and ``sigmoid`` (a sigmoid over [-6, 6] scaled to [``beta_start``, ``beta_end``]).
    Another name, or values that make no schedule (a beta outside (0, 1), T < 1), raise
    :class:`~ddrm_helpers.errors.ConfigError`.

    >>> from ddrm_helpers.config import load_config
    >>> betas = betas_from_config(load_config("celeba_hq"))
    >>> len(betas), float(betas[0]), float(betas[-1])
    (1000, 0.0001, 0.02)
    """
    name = getattr(config, "name", "config")
    diffusion = config["diffusion"]
    where = f"config {name}: diffusion"
    kind = diffusion.get("beta_schedule")
    if kind not in BETA_SCHEDULES:
        raise ConfigError(
            f"{where}.beta_schedule is {kind!r}; the schedules known are {', '.join(BETA_SCHEDULES)} "
            "(the configs use linear)"
        )
    count = diffusion.get("num_diffusion_timesteps")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}.num_diffusion_timesteps is {count!r}; give a whole number >= 1 (the configs: 1000)")
    start, end = diffusion.get("beta_start"), diffusion.get("beta_end")
    for key, value in (("beta_start", start), ("beta_end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{where}.{key} is {value!r}; a beta is a number in (0, 1) (the configs: 1e-4 to 0.02)")
    if kind == "linear":
        betas = linear_betas(count, start, end, dtype=dtype)
    elif kind == "quad":
        betas = torch.linspace(math.sqrt(start), math.sqrt(end), count, dtype=torch.float64) ** 2
    elif kind == "const":
        betas = torch.full((count,), float(end), dtype=torch.float64)
    else:  # sigmoid
        betas = torch.sigmoid(torch.linspace(-6, 6, count, dtype=torch.float64)) * (end - start) + start
    if not bool(((betas > 0) & (betas < 1)).all()):  # a rounding of start or end near 0 or 1
        raise ConfigError(f"{where}: the {kind} schedule from {start} to {end} has betas outside (0, 1)")
    return betas.to(dtype)
