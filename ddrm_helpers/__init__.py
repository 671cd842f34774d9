"""ddrm-demo's helper package: everything the notebook and the CLI do is one call into it.

Modules, one idea each:

- ``config``     the three DDRM configs and ``load_config``
- ``registry``   the checkpoint registry (``configs/checkpoints.yml``)
- ``paths``      the reference folder layout and the environment variables that move it
- ``errors``     the exceptions
- ``degradations`` the linear degradations H of DDRM, each with its exact SVD (``make_degradation``)
- ``schedule``   the diffusion's noise schedule and DDRM's timestep sequence
- ``sampler``    the DDRM sampler (``ddrm_sample``)
"""

from .config import Config, available_configs, load_config
from .degradations import Degradation, available_degradations, make_degradation, text_mask
from .errors import (
    CheckpointMismatchError,
    ChecksumError,
    ConfigError,
    DegradationError,
    DownloadError,
    SamplingError,
)
from .registry import CheckpointSpec, load_registry
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .schedule import timestep_sequence

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSpec",
    "ChecksumError",
    "Config",
    "ConfigError",
    "Degradation",
    "DegradationError",
    "DownloadError",
    "SamplingError",
    "available_configs",
    "available_degradations",
    "ddrm_sample",
    "load_config",
    "load_registry",
    "make_degradation",
    "sigma_0_from_sigma_y",
    "text_mask",
    "timestep_sequence",
]
__version__ = "0.1.0"
