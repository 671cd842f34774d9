"""Where things live: the project's folders and the checkpoint root.

The layout is the reference DDRM one (documented in exp/README.md)::

    configs/                      the three configs and the checkpoint registry
    exp/logs/celeba/              celeba_hq.ckpt
    exp/logs/imagenet/            256x256_diffusion_uncond.pt, 256x256_diffusion.pt, 256x256_classifier.pt
    exp/datasets/                 input images (the shipped demo images)
    exp/image_samples/<run>/      outputs of runs

Environment variables:

``DDRM_CHECKPOINT_DIR``
    The checkpoint root, used instead of ``exp/logs``; the per-file subfolders (``celeba/``,
    ``imagenet/``) are kept under it. A Colab user points it at a Google Drive folder so that the
    files survive the session.
``DDRM_EXP_DIR``
    The whole ``exp/`` folder (checkpoints, datasets, outputs), for an install outside a checkout.
``DDRM_REGISTRY``
    Another checkpoint registry file instead of ``configs/checkpoints.yml``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

CHECKPOINT_DIR_ENV = "DDRM_CHECKPOINT_DIR"
EXP_DIR_ENV = "DDRM_EXP_DIR"
REGISTRY_ENV = "DDRM_REGISTRY"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = PROJECT_ROOT / "configs"
MANIFESTS_DIR = CONFIGS_DIR / "manifests"
# The shipped demo images live in the checkout, wherever DDRM_EXP_DIR points.
DEMO_DIR = PROJECT_ROOT / "exp" / "datasets" / "demo"
# The shipped digits prior (config, registry, checkpoint, held-out digits) lives inside the package.
PRIOR_DIR = Path(__file__).resolve().parent / "prior"


def exp_dir() -> Path:
    """The ``exp/`` folder: ``$DDRM_EXP_DIR`` if set, else ``exp/`` of the checkout."""
    return Path(os.environ.get(EXP_DIR_ENV) or PROJECT_ROOT / "exp").expanduser()


def checkpoint_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder under which checkpoints are kept, by order of precedence.

    1. ``cache_dir`` when given,
    2. ``$DDRM_CHECKPOINT_DIR`` when set,
    3. ``exp/logs`` (the reference layout).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return exp_dir() / "logs"


def registry_path() -> Path:
    """The checkpoint registry: ``$DDRM_REGISTRY`` if set, else ``configs/checkpoints.yml``."""
    return Path(os.environ.get(REGISTRY_ENV) or CONFIGS_DIR / "checkpoints.yml").expanduser()


def put_back_command(path: Path) -> str | None:
    """The command that restores ``path``, a file or folder the project ships, as it was committed:
    ``git -C <checkout> checkout -- <path>`` where the package is a git checkout and git is
    installed; else None (a fresh copy of the project is then the way)."""
    checkout = next((folder for folder in Path(path).resolve().parents if (folder / ".git").exists()), None)
    if checkout is None or not shutil.which("git"):
        return None
    return f"git -C {shlex.quote(str(checkout))} checkout -- {Path(path).resolve().relative_to(checkout).as_posix()}"

