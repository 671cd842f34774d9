"""estimate_noise: the noise level of a photo from the photo alone, checked on synthetic noise of
known level added to the demo photos."""

from __future__ import annotations

import doctest

import pytest
import torch

from ddrm_helpers import noise
from ddrm_helpers.degradations import box_mask
from ddrm_helpers.errors import ImageError
from ddrm_helpers.images import load_image
from ddrm_helpers.noise import estimate_noise
from ddrm_helpers.paths import DEMO_DIR


def test_the_noise_estimate_is_within_15_percent_on_synthetic_noise():
    g = torch.Generator().manual_seed(0)
    for name in ("face_eileen_collins.png", "cat_chelsea.png", "coffee.jpg", "rocket.jpg"):
        x = load_image(DEMO_DIR / name, 256)
        for sigma_y in (0.02, 0.05, 0.1, 0.2):
            noisy = x + 2 * sigma_y * torch.randn(x.shape, generator=g)  # 2 sigma_y in the [-1, 1] range
            assert estimate_noise(noisy) == pytest.approx(sigma_y, rel=0.15), (name, sigma_y)
        assert estimate_noise(x) < 0.01  # a clean photo reads low: its texture and 8-bit rounding


def test_the_noise_estimate_leaves_out_what_the_mask_removes():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(3, 64, 64)
    noisy = x + 2 * 0.05 * torch.randn(x.shape, generator=g)
    noisy[:, 20:50, 10:60] = torch.rand(3, 30, 50, generator=g) * 2 - 1  # damage, far noisier
    kept = box_mask(64, top=20, left=10, height=30, width=50)
    assert estimate_noise(noisy, kept) == pytest.approx(0.05, rel=0.1)
    assert estimate_noise(noisy) > 0.075  # without the mask, the damage reads as noise
    with pytest.raises(ImageError, match="at least 3x3"):
        estimate_noise(torch.zeros(3, 2, 8))


def test_docstring_example_runs():
    assert doctest.testmod(noise).failed == 0
