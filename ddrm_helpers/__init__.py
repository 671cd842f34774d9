"""ddrm-demo's helper package: everything the notebook and the CLI do is one call into it.

Modules, one idea each:

- ``config``     the three DDRM configs and ``load_config``
- ``registry``   the checkpoint registry (``configs/checkpoints.yml``)
- ``paths``      the reference folder layout and the environment variables that move it
- ``errors``     the exceptions
- ``download``   ``fetch_checkpoint``: verified, resumable, retried downloads from mirrors
- ``verify``     is a file the right one (size, sha256, tensor manifest), and the record of it
- ``status``     ``checkpoint_status`` / ``ensure_checkpoints``: which configs can run
- ``models``     the three networks (``build_model``, ``build_classifier``, ``load_pretrained``)
- ``cli``        ``python -m ddrm_helpers ...``
"""

from .config import Config, available_configs, load_config
from .download import RetryPolicy, fetch_checkpoint
from .errors import CheckpointMismatchError, ChecksumError, ConfigError, DownloadError
from .models import build_classifier, build_model, load_pretrained
from .registry import CheckpointSpec, load_registry
from .status import CheckpointStatus, checkpoint_status, ensure_checkpoints

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSpec",
    "CheckpointStatus",
    "ChecksumError",
    "Config",
    "ConfigError",
    "DownloadError",
    "RetryPolicy",
    "available_configs",
    "build_classifier",
    "build_model",
    "checkpoint_status",
    "ensure_checkpoints",
    "fetch_checkpoint",
    "load_config",
    "load_pretrained",
    "load_registry",
]
__version__ = "0.1.0"
