"""Shared fixtures. Every test runs on the CPU, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

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
