"""What the store's tests share: a user's file outside the checkpoint folder (the fixture ``outside``
is conftest's) and a quiet fetch."""

from __future__ import annotations

from ddrm_helpers.download import fetch_checkpoint

OUTSIDE = b"a file of the user's, outside the checkpoint folder\n" * 100


def fetch(spec, root, policy, **kwargs):
    return fetch_checkpoint(spec, root, retry=policy, progress=False, quiet=True, **kwargs)
