"""ddrm-demo's helper package: everything the notebook and the CLI do is one call into it.

Modules, one idea each:

- ``config``       the three DDRM configs and ``load_config``
- ``registry``     the checkpoint registry (``configs/checkpoints.yml``)
- ``paths``        the reference folder layout and the environment variables that move it
- ``errors``       the exceptions
- ``download``     ``fetch_checkpoint``: verified, resumable, retried downloads from mirrors
- ``verify``       is a file the right one (size, sha256, tensor manifest), and the record of it
- ``status``       ``checkpoint_status`` / ``ensure_checkpoints``: which configs can run
- ``degradations`` the linear degradations H of DDRM, each with its exact SVD (``make_degradation``)
- ``schedule``     the diffusion's noise schedule and DDRM's timestep sequence
- ``sampler``      the DDRM sampler (``ddrm_sample``)
- ``models``       the three networks (``build_model``, ``build_classifier``, ``load_pretrained``)
- ``images``       loading any photo as a tensor, saving tensors as pictures
- ``metrics``      PSNR and SSIM
- ``classes``      ImageNet class labels by index or name
- ``runner``       ``run_config``: one config end to end (images, degrade, restore, measure, save)
- ``restore``      ``restore_photo``: a user's degraded photo is the measurement; restore it
- ``noise``        ``estimate_noise``: a photo's noise level from the photo alone
- ``display``      ``show_results`` / ``show_grid``: the inline figures
- ``progress``     the restoration as it happens: ``collect_frames``, ``show_progress``, ``animate_progress``
- ``notebook``     the notebook's panel, uploads, side-by-side comparison and summary
- ``cli``          ``python -m ddrm_helpers ...``
"""

from .config import Config, available_configs, load_config
from .degradations import Degradation, available_degradations, box_mask, make_degradation, text_mask
from .display import show_grid, show_results
from .download import RetryPolicy, fetch_checkpoint
from .errors import (
    CheckpointMismatchError,
    ChecksumError,
    ClassLabelError,
    ConfigError,
    DegradationError,
    DownloadError,
    ImageError,
    ModelInputError,
    SamplingError,
)
from .models import build_classifier, build_model, load_pretrained
from .noise import estimate_noise
from .progress import animate_progress, collect_frames, show_progress
from .registry import CheckpointSpec, load_registry
from .restore import degraded_photo, restore_photo
from .runner import RunResult, Skipped, run_config
from .sampler import ddrm_sample, sigma_0_from_sigma_y
from .schedule import timestep_sequence
from .status import CheckpointStatus, checkpoint_status, ensure_checkpoints

__all__ = [
    "CheckpointMismatchError",
    "CheckpointSpec",
    "CheckpointStatus",
    "ChecksumError",
    "ClassLabelError",
    "Config",
    "ConfigError",
    "Degradation",
    "DegradationError",
    "DownloadError",
    "ImageError",
    "ModelInputError",
    "RetryPolicy",
    "RunResult",
    "SamplingError",
    "Skipped",
    "animate_progress",
    "available_configs",
    "available_degradations",
    "box_mask",
    "build_classifier",
    "build_model",
    "checkpoint_status",
    "collect_frames",
    "ddrm_sample",
    "degraded_photo",
    "ensure_checkpoints",
    "estimate_noise",
    "fetch_checkpoint",
    "load_config",
    "load_pretrained",
    "load_registry",
    "make_degradation",
    "restore_photo",
    "run_config",
    "show_grid",
    "show_progress",
    "show_results",
    "sigma_0_from_sigma_y",
    "text_mask",
    "timestep_sequence",
]
__version__ = "0.1.0"
