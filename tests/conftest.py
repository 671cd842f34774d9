"""Shared fixtures. Every test runs on the CPU, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The networks of the tests are tiny: threads buy little, and on cores shared with other jobs the
# waiting threads of OpenMP make each step many times slower (the notebook's smoke run took 30 s on
# one thread, 150 s on two threads of a busy 2-core machine). So one thread, here and in the
# processes the tests start (the notebook's kernel, the CLI), unless OMP_NUM_THREADS says otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
# The workplace's shared folder, beside the checkout. A user's clone has nothing beside it: tests
# read the copies shipped in configs/, and only a test comparing those copies with it may need it.
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the user's checkpoint folders or registry, nor writes under exp/."""
    for var in ("DDRM_CHECKPOINT_DIR", "DDRM_REGISTRY", "DDRM_CONFIG_OVERRIDES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DDRM_EXP_DIR", str(tmp_path / "exp"))


@pytest.fixture
def server():
    """A local HTTP server that misbehaves on request (see tests/faulty_server.py)."""
    from .faulty_server import FaultyServer

    with FaultyServer() as s:
        yield s


@pytest.fixture
def tiny(server, tmp_path, monkeypatch):
    """Tiny CelebA-HQ checkpoints (tests/tiny_models.py) from the local server, for this process;
    returns the environment for the processes a test starts (the evaluation tests)."""
    from .tiny_models import install_tiny_checkpoints

    env = install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    return {**os.environ, **env, "PYTHONPATH": str(REPO)}


@pytest.fixture
def root(tmp_path):
    """A checkpoint folder, not made yet."""
    return tmp_path / "checkpoints"


@pytest.fixture
def outside(tmp_path):
    """A user's file outside the checkpoint folder, on the same file system (so that a link, soft or
    hard, may point at it): what the store must never write through."""
    from .store_helpers import OUTSIDE

    path = tmp_path / "elsewhere" / "precious.bin"
    path.parent.mkdir()
    path.write_bytes(OUTSIDE)
    return path

