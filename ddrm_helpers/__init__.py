"""ddrm-demo's helper package: everything the notebook and the CLI do is one call into it.

Modules, one idea each:

- ``config``     the three DDRM configs and ``load_config``
- ``registry``   the checkpoint registry (``configs/checkpoints.yml``)
- ``paths``      the reference folder layout and the environment variables that move it
- ``errors``     the exceptions
- ``models``     the three networks (``build_model``, ``build_classifier``)
"""

from .config import Config, available_configs, load_config
from .errors import CheckpointMismatchError, ChecksumError, ConfigError, DownloadError
from .models import build_classifier, build_model
from .registry import CheckpointSpec, load_registry

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSpec",
    "ChecksumError",
    "Config",
    "ConfigError",
    "DownloadError",
    "available_configs",
    "build_classifier",
    "build_model",
    "load_config",
    "load_registry",
]
__version__ = "0.1.0"
