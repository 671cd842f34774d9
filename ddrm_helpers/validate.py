"""Checks of the arguments of ``run_config``, ``restore_photo``, the sampler and the command line.

Each check is a small function that returns the value (converted: an ``int``, a ``float``, a
``torch.device``) or raises a ``ValueError`` subclass from :mod:`ddrm_helpers.errors` that says
what is wrong and what to give instead. :func:`~ddrm_helpers.engine.resolve_settings` runs them
before any download or model load; the sampler and :func:`~ddrm_helpers.schedule.timestep_sequence`
run the same ones, so that each limit is written once, here.

``label`` is how the argument is named in the message: a Python name (``"sigma_y"``, written
``sigma_y=2.0``) or a command-line flag (``"--sigma-y"``, written ``--sigma-y 2.0``).

>>> check_sigma_y(0.05)
0.05
>>> check_steps(0, 1000, "--steps")
Traceback (most recent call last):
...
ddrm_helpers.errors.SamplingError: --steps is DDRM's number of steps ... between 1 and 1000 ...; got 0

This module imports PyTorch only inside :func:`check_device`.
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path

from .errors import ArgumentError, SamplingError

ETA_RANGE = (0.0, 1.0)  # eta and eta_b (docs/ddrm.md, "eta" and "eta_b")
SIGMA_Y_RANGE = (0.0, 1.0)  # pixel units: images in [0, 1]
# PyTorch's generators accept seeds up to 2**64 - 1, but the CPU one (Mersenne Twister) keeps only
# the low 32 bits: 5 and 2**32 + 5 draw the same noise. Seeds are therefore 0 .. 2**32 - 1, where
# distinct seeds are distinct draws on every device. (Negative seeds PyTorch maps to 2**64 + seed.)
SEED_MAX = 2**32 - 1
DEVICE_KINDS = ("cpu", "cuda", "mps")


def shown(label: str, value) -> str:
    """``--steps 0`` for a flag, ``steps=0`` for a Python argument, ``the output folder /x`` for
    a label of several words."""
    if label.startswith("--") or " " in label:
        return f"{label} {value}"
    return f"{label}={value!r}"


def _fail(error: type[ValueError], label: str, value, what: str) -> ValueError:
    got = value if label.startswith("--") else repr(value)
    return error(f"{label} is {what}; got {got}")


def real(value, label: str, what: str, error: type[ValueError] = SamplingError) -> float:
    """``value`` as a finite float (a number, a NumPy scalar or a 0-dim tensor); a bool, a string,
    NaN or an infinity raises ``error``."""
    if isinstance(value, (bool, str, bytes)):
        raise _fail(error, label, value, what)
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise _fail(error, label, value, what) from None
    if not math.isfinite(number):
        raise _fail(error, label, value, what)
    return number


def integer(value, label: str, what: str, error: type[ValueError] = SamplingError) -> int:
    """``value`` as an int: an int, a NumPy or PyTorch integer, or a float with an integer value
    (``20.0``); never a bool, ``20.5`` or a string."""
    if isinstance(value, bool):
        raise _fail(error, label, value, what)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise _fail(error, label, value, what) from None


def check_sigma_y(value, label: str = "sigma_y") -> float:
    """The measurement noise in [0, 1] pixel units (finite)."""
    low, high = SIGMA_Y_RANGE
    return _in_range(value, label, SIGMA_Y_RANGE,
                     f"a noise level in [{low:g}, {high:g}] pixel units (0.05 is 5% of the pixel range; 0 for none)")


def check_sigma_0(value, label: str = "sigma_0") -> float:
    """The sampler's noise std in the model's [-1, 1] range: finite and >= 0."""
    what = "a noise std: a number >= 0 (0 for no noise)"
    value_ = real(value, label, what)
    if value_ < 0:
        raise _fail(SamplingError, label, value_, what)
    return value_


def check_eta(value, label: str = "eta") -> float:
    """DDRM's ``eta`` or ``eta_b``: a number in [0, 1]."""
    low, high = ETA_RANGE
    return _in_range(value, label, ETA_RANGE, f"a number in [{low:g}, {high:g}] (the paper uses eta=0.85, eta_b=1)")


def _in_range(value, label: str, bounds: tuple[float, float], what: str) -> float:
    """A finite number within ``bounds`` (inclusive), else a :class:`SamplingError` saying ``what`` it is."""
    value_ = real(value, label, what)
    if not bounds[0] <= value_ <= bounds[1]:
        raise _fail(SamplingError, label, value, what)
    return value_


def check_steps(value, num_timesteps: int, label: str = "steps") -> int:
    """DDRM's step count: an integer from 1 to the diffusion's number of timesteps."""
    what = (f"DDRM's number of steps (one network evaluation each), between 1 and {num_timesteps} "
            "(the diffusion's timesteps; the paper uses 20)")
    steps = integer(value, label, what)
    if not 1 <= steps <= num_timesteps:
        raise _fail(SamplingError, label, value, what)
    return steps


def check_seed(value, label: str = "seed") -> int:
    """A seed: an integer from 0 to ``SEED_MAX`` (see the note at ``SEED_MAX``)."""
    what = f"an integer from 0 to {SEED_MAX} (2**32 - 1: PyTorch's CPU generator keeps 32 bits)"
    seed = integer(value, label, what, ArgumentError)
    if not 0 <= seed <= SEED_MAX:
        raise _fail(ArgumentError, label, value, what)
    return seed


def check_count(value, label: str, what: str) -> int:
    """A count of 1 or more (``num_samples``, ``batch_size``); ``what`` says what it counts."""
    count = integer(value, label, what, ArgumentError)
    if count < 1:
        raise _fail(ArgumentError, label, value, what)
    return count


def check_classifier_scale(value, label: str = "classifier_scale") -> float:
    """The classifier guidance scale: finite and >= 0 (0 turns the guidance off)."""
    what = "the classifier guidance scale, a number >= 0 (the config's is 1; 0 turns guidance off)"
    scale = real(value, label, what, ArgumentError)
    if scale < 0:
        raise _fail(ArgumentError, label, value, what)
    return scale


def check_device(device, label: str = "device"):
    """``device`` as a ``torch.device`` PyTorch can use here; ``None`` stays ``None`` (the default:
    cuda when a GPU is visible, else cpu)."""
    if device is None:
        return None
    import torch

    flag = label.startswith("--")
    omit = f"omit {label}" if flag else f"{label}=None"
    use_cpu = f"use {label} cpu or {omit}" if flag else f"use {label}='cpu' or {omit}"
    name = str(device)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_KINDS:
        raise ArgumentError(
            f"{shown(label, name)}: not a device this demo runs on; give one of cpu, cuda, cuda:N (the N-th GPU), "
            f"mps (Apple GPUs), or {omit} (cuda when a GPU is visible, else cpu)"
        )
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ArgumentError(
                f"{shown(label, name)}: no CUDA GPU is visible to PyTorch (torch {torch.__version__}, built for "
                f"{_torch_build()}); {use_cpu}"
            )
        if parsed.index is not None and parsed.index >= count:
            raise ArgumentError(
                f"{shown(label, name)}: PyTorch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ArgumentError(
            f"{shown(label, name)}: no Apple GPU (MPS) is available to PyTorch (torch {torch.__version__}); "
            f"{use_cpu}"
        )
    return parsed


def _torch_build() -> str:
    import torch

    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    return "CPU"


def check_out_dir(path, label: str = "out_dir") -> Path:
    """A folder that run folders can be made in: an existing writable folder, or one that can be
    made (its nearest existing parent is a writable folder). Nothing is created here."""
    try:
        folder = Path(os.fspath(path)).expanduser()
    except TypeError:
        raise ArgumentError(f"{shown(label, path)}: give the path of a folder") from None
    said = shown(label, os.fspath(path))
    if folder.exists() and not folder.is_dir():
        raise ArgumentError(f"{said}: {folder} is a file, not a folder; give a folder for the run folders")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ArgumentError(f"{said}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == folder else f"{existing}, where it would be made,"
        raise ArgumentError(f"{said}: {where} is not writable; give a folder you can write to")
    return folder


def check_folder(path, label: str = "cache_dir") -> Path:
    """A folder that may not exist yet but is not a file."""
    folder = Path(os.fspath(path)).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ArgumentError(f"{shown(label, os.fspath(path))}: {folder} is a file, not a folder")
    return folder
