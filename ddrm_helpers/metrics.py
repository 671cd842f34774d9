"""Image quality against the original: PSNR and SSIM, on images in [-1, 1].

Both are computed as the DDRM paper and most restoration papers do: on the [0, 1] range, over all
three channels. SSIM is Wang et al. (2004) with an 11x11 Gaussian window of sigma 1.5,
K1 = 0.01, K2 = 0.03, computed per channel over the valid region and averaged (the same numbers as
``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).
On an image smaller than the window (the 8x8 digits of the self-test prior) the window shrinks to
the largest odd size that fits, 7 at 8x8, with the same sigma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image of a batch (inputs in [-1, 1], clipped)."""
    x, reference = _unit(x), _unit(reference)
    mse = (x - reference).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, reference: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity, per image of a batch (inputs in [-1, 1], clipped); the window shrinks
    to the largest odd size that fits an image smaller than it."""
    x, reference = _unit(x).double(), _unit(reference).double()
    side = min(x.shape[-2:])
    if side < window:
        window = side if side % 2 else side - 1
    channels = x.shape[1]
    offsets = torch.arange(window, dtype=torch.float64, device=x.device) - (window - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window).contiguous()

    def blur(t):
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_r = blur(x), blur(reference)
    var_x = blur(x * x) - mu_x**2
    var_r = blur(reference * reference) - mu_r**2
    cov = blur(x * reference) - mu_x * mu_r
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))
    return index.flatten(1).mean(1).float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    return ((x.detach().float() + 1) / 2).clamp(0, 1)
