"""Linear degradations ``y = H x``, each given by its singular value decomposition, as DDRM needs.

Every operator here is exact: ``H`` is the degradation it names (the tests compare it with a dense
matrix built independently, from ``conv2d``, ``avg_pool2d``, the mask or an explicit formula), and

    H = U diag(s) V^T,   U (M x M) and V (N x N) orthonormal,   s >= 0 of length M.

Each operator says only what its transforms are (``V``, ``Vt``, ``U``, ``Ut`` and the singular
values); :class:`Degradation` derives ``H``, ``Ht`` and the pseudo-inverse ``H_pinv`` from them.
Operators are ``torch.nn.Module`` objects whose masks, permutations and small SVD factors are
buffers, so ``op.to(device)`` / ``op.to(torch.float64)`` move them.

Vectors and their order
-----------------------
* An image batch ``[B, C, H, W]`` is the flat vector ``x.reshape(B, N)``, N = C*H*W (NCHW order).
  Every method takes either form and returns flat vectors.
* A measurement ``y`` is ``[B, M]`` in the natural order of what is measured: the low-resolution
  or blurred image in NCHW order, the kept entries of an inpainting mask in increasing NCHW index,
  the grey image for colorization, the measured Walsh-Hadamard coefficients channel by channel.
* Spectral coordinates ``Vt(x)`` have length N. The first M are paired, in order, with
  ``singulars()`` and with the coordinates of ``Ut(y)``; the last N - M are directions that H does
  not see at all. ``add_zeros`` appends N - M zeros to a length-M spectral vector. A singular value
  can also be 0 inside the first M (a blur whose matrix is singular).

Names (see :func:`available_degradations` and ``docs/ddrm.md``): ``deno``, ``sr2`` ... ``sr16``,
``sr_bicubic4`` ... ``sr_bicubic16``, ``deblur_uni``, ``deblur_gauss``, ``deblur_aniso``,
``deblur``, ``inp``, ``inp_box``, ``inp_mask``, ``color``, ``cs2``, ``cs4``.

>>> op = make_degradation("sr4", 64)
>>> x = torch.rand(2, 3, 64, 64) * 2 - 1
>>> y = op.H(x)                                # [2, 3*16*16]: the 4x4 block means
>>> torch.allclose(y, torch.nn.functional.avg_pool2d(x, 4).reshape(2, -1), atol=1e-6)
True
>>> op.degraded_image(y).shape                 # what a person looks at
torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import DegradationError

__all__ = [
    "BlockAverage",
    "Colorization",
    "Degradation",
    "Denoising",
    "Inpainting",
    "Separable",
    "WalshHadamardCS",
    "available_degradations",
    "box_mask",
    "load_mask",
    "make_degradation",
    "scale_factor",
    "text_mask",
]

# Built in float64 on the CPU, then moved: the same operator on every device, and 1-D SVDs exact to
# about 1e-15 whatever dtype the operator is used in.
_BUILD = {"dtype": torch.float64, "device": "cpu"}


class Degradation(torch.nn.Module):
    """A linear degradation ``H = U diag(s) V^T`` given by its transforms.

    Subclasses implement ``_v``, ``_vt`` (and ``_u``, ``_ut`` when U is not the identity) on flat
    ``[B, N]`` / ``[B, M]`` tensors and pass the singular values to ``__init__``. From them:

    * ``H(x)      = U (s * (V^T x)[:M])``
    * ``Ht(y)     = V add_zeros(s * U^T y)``                 (the adjoint)
    * ``H_pinv(y) = V add_zeros(s^+ * U^T y)``,  s^+ = 1/s where s > 0, else 0  (Moore-Penrose)

    ``H_pinv`` is exact, hence ill-conditioned for blurs; :meth:`degraded_image` is what to show.
    ``op(x)`` is ``op.H(x)``.
    """

    name = "degradation"

    def __init__(self, image_shape: tuple[int, int, int], singulars: torch.Tensor):
        super().__init__()
        self.image_shape = tuple(int(d) for d in image_shape)
        self.input_dim = math.prod(self.image_shape)
        self.measurement_dim = int(singulars.numel())
        pinv = torch.zeros_like(singulars)
        positive = singulars > 0
        pinv[positive] = 1 / singulars[positive]
        self.register_buffer("_singulars", singulars, persistent=False)
        self.register_buffer("_pinv_singulars", pinv, persistent=False)

    # -- what each operator says -------------------------------------------------------------
    def _v(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _u(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def _ut(self, y: torch.Tensor) -> torch.Tensor:
        return y

    # -- the public transforms ----------------------------------------------------------------
    def V(self, z: torch.Tensor) -> torch.Tensor:
        """``V z``: spectral ``[B, N]`` -> image, flat ``[B, N]``."""
        return self._v(self._flat(z, self.input_dim, "V"))

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """``V^T x``: image ``[B, N]`` or ``[B, C, H, W]`` -> spectral ``[B, N]``."""
        return self._vt(self._flat(x, self.input_dim, "Vt"))

    def U(self, z: torch.Tensor) -> torch.Tensor:
        """``U z``: ``[B, M]`` -> measurement ``[B, M]``."""
        return self._u(self._flat(z, self.measurement_dim, "U"))

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """``U^T y``: measurement ``[B, M]`` -> ``[B, M]``."""
        return self._ut(self._flat(y, self.measurement_dim, "Ut"))

    def singulars(self) -> torch.Tensor:
        """The M singular values, paired with the first M spectral coordinates (not sorted)."""
        return self._singulars

    def add_zeros(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` -> ``[B, N]``: the spectral vector with N - M zeros appended."""
        return self._pad(self._flat(z, self.measurement_dim, "add_zeros"))

    def H(self, x: torch.Tensor) -> torch.Tensor:
        """The degradation: image ``[B, N]`` or ``[B, C, H, W]`` -> measurement ``[B, M]``."""
        spectral = self._vt(self._flat(x, self.input_dim, "H"))
        return self._u(self._singulars * spectral[:, : self.measurement_dim])

    def Ht(self, y: torch.Tensor) -> torch.Tensor:
        """The adjoint ``H^T``: measurement ``[B, M]`` -> image, flat ``[B, N]``."""
        return self._v(self._pad(self._singulars * self._ut(self._flat(y, self.measurement_dim, "Ht"))))

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:
        """The Moore-Penrose pseudo-inverse ``H^+``: measurement -> image, flat ``[B, N]``."""
        spectral = self._pinv_singulars * self._ut(self._flat(y, self.measurement_dim, "H_pinv"))
        return self._v(self._pad(spectral))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.H(x)

    def degraded_image(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement as a picture ``[B, C', H', W']`` in the image's range, for display.

        By default ``H_pinv(y)`` as an image; operators whose measurement is itself an image (blur,
        super-resolution, colorization) show it as it is, and inpainting shows missing pixels black.
        """
        return self.H_pinv(y).reshape(-1, *self.image_shape)

    @property
    def measured_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the picture a measurement is (what :meth:`degraded_image` shows): the
        image's own shape, but the low-resolution or blurred image's for the operators that measure one."""
        return self.image_shape

    def measurement_of(self, picture: torch.Tensor) -> torch.Tensor:
        """The measurement ``y`` ``[B, M]`` that ``picture`` ``[B, *measured_shape]`` shows: the
        inverse of :meth:`degraded_image` on its range (by default ``H(picture)``: inpainting keeps
        the pixels its mask keeps; a photo is its own measurement for denoising)."""
        return self.H(picture)

    # -- helpers -----------------------------------------------------------------------------
    def _pad(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z.new_zeros(z.shape[0], self.input_dim - self.measurement_dim)], dim=1)

    def _flat(self, v: torch.Tensor, size: int, where: str) -> torch.Tensor:
        if v.dim() < 2 or v[0].numel() != size:
            images = ", or images [B, {}, {}, {}]".format(*self.image_shape) if size == self.input_dim else ""
            raise DegradationError(
                f"{self.name}.{where} takes a batch of vectors of length {size} ([B, {size}]{images}); "
                f"got a tensor of shape {list(v.shape)}. Add the batch dimension (x[None]) if it is missing."
            )
        return v.reshape(v.shape[0], size)

    def extra_repr(self) -> str:
        c, h, w = self.image_shape
        return f"{self.name}, image {c}x{h}x{w}, measurements {self.measurement_dim}"


class Denoising(Degradation):
    """``H = I``: the measurement is the image plus noise."""

    name = "deno"

    def __init__(self, image_shape):
        super().__init__(image_shape, torch.ones(math.prod(image_shape), **_BUILD))

    def _v(self, z):
        return z

    def _vt(self, x):
        return x


class Separable(Degradation):
    """``Y_c = A_h X_c A_w^T`` for every channel c: a separable 2-D operator from two 1-D matrices.

    ``A_h`` is ``m_h x H`` and ``A_w`` is ``m_w x W`` (m <= size). Their SVDs ``A = U_a S_a V_a^T``
    give the one of the 2-D operator, ``A_h (x) A_w = (U_h (x) U_w)(S_h (x) S_w)(V_h (x) V_w)^T``,
    applied as small matmuls, never as an (HW x HW) matrix. Spectral order, per channel: the
    ``m_h x m_w`` coefficients ``(V_h^T X V_w)[:m_h, :m_w]`` row by row, whose singular value is
    ``s_h[i] * s_w[j]`` (these are the first M = C*m_h*m_w coordinates, channel-major), then the
    unseen ones: ``[:m_h, m_w:]`` and ``[m_h:, :]``, row by row, channel-major.

    1-D singular values below ``max(m, n) * eps * s_max`` (float64) are numerically zero and are
    set to 0, as ``numpy.linalg.matrix_rank`` decides rank; nothing else is truncated.

    Used for block-average super-resolution, bicubic super-resolution and the blurs.
    """

    def __init__(self, channels: int, matrix_h: torch.Tensor, matrix_w: torch.Tensor, name: str):
        u_h, s_h, v_h = _svd_with_numerical_zeros(matrix_h)
        same = matrix_h.shape == matrix_w.shape and torch.equal(matrix_h, matrix_w)  # a square image, one kernel
        u_w, s_w, v_w = (u_h, s_h, v_h) if same else _svd_with_numerical_zeros(matrix_w)
        super().__init__(
            (channels, matrix_h.shape[1], matrix_w.shape[1]),
            torch.outer(s_h, s_w).reshape(-1).repeat(channels),
        )
        self.name = name
        self._measured = (channels, matrix_h.shape[0], matrix_w.shape[0])
        for key, value in dict(u_h=u_h, v_h=v_h, u_w=u_w, v_w=v_w).items():
            self.register_buffer(key, value, persistent=False)

    def _vt(self, x):
        c, h, w = self.image_shape
        _, m_h, m_w = self.measured_shape
        z = self.v_h.T @ x.reshape(-1, c, h, w) @ self.v_w
        seen = z[..., :m_h, :m_w].reshape(x.shape[0], -1)
        unseen = torch.cat([z[..., :m_h, m_w:].flatten(2), z[..., m_h:, :].flatten(2)], dim=2)
        return torch.cat([seen, unseen.reshape(x.shape[0], -1)], dim=1)

    def _v(self, z):
        c, h, w = self.image_shape
        _, m_h, m_w = self.measured_shape
        batch = z.shape[0]
        seen = z[:, : self.measurement_dim].reshape(batch, c, m_h, m_w)
        unseen = z[:, self.measurement_dim :].reshape(batch, c, -1)
        right = unseen[..., : m_h * (w - m_w)].reshape(batch, c, m_h, w - m_w)
        below = unseen[..., m_h * (w - m_w) :].reshape(batch, c, h - m_h, w)
        coefficients = torch.cat([torch.cat([seen, right], dim=3), below], dim=2)
        return (self.v_h @ coefficients @ self.v_w.T).reshape(batch, -1)

    def _u(self, z):
        return (self.u_h @ z.reshape(-1, *self.measured_shape) @ self.u_w.T).reshape(z.shape[0], -1)

    def _ut(self, y):
        return (self.u_h.T @ y.reshape(-1, *self.measured_shape) @ self.u_w).reshape(y.shape[0], -1)

    @property
    def measured_shape(self):
        return self._measured

    def degraded_image(self, y):
        """The blurred or low-resolution image itself, ``[B, C, m_h, m_w]``."""
        return self._flat(y, self.measurement_dim, "degraded_image").reshape(-1, *self.measured_shape)

    def measurement_of(self, picture):
        """The blurred or low-resolution picture is the measurement, flattened in NCHW order."""
        return self._flat(picture, self.measurement_dim, "measurement_of")


class BlockAverage(Degradation):
    """``y`` = the mean of every ``f x f`` block of each channel: the low-resolution image ``[B, C, H/f, W/f]``.

    Per block, the averaging row ``(1/f^2, ..., 1/f^2)`` over its ``f^2`` pixels (row-major within
    the block) has the SVD ``(1/f) * q_0^T`` with ``q_0 = (1, ..., 1)/f``; V completes ``q_0`` to the
    Helmert basis of R^(f^2) in every block. So V is block-diagonal: the spectral coordinates of a
    block depend on its own pixels only, and the operator costs O(N f^2) at any image size (no
    side x side matrix). Spectral order: the ``C*h*w`` block means, in the NCHW order of the
    low-resolution image (singular value ``1/f`` each), then the ``f^2 - 1`` other directions of
    every block, block by block in that order.
    """

    def __init__(self, image_shape, factor: int):
        channels, height, width = image_shape
        rows, columns = height // factor, width // factor
        super().__init__(image_shape, torch.full((channels * rows * columns,), 1.0 / factor, **_BUILD))
        self.name = f"sr{factor}"
        self.factor = factor
        self._measured = (channels, rows, columns)
        self.register_buffer("basis", _helmert(factor * factor), persistent=False)

    @property
    def measured_shape(self):
        return self._measured

    def _vt(self, x):
        c, rows, columns = self._measured
        f = self.factor
        blocks = x.reshape(-1, c, rows, f, columns, f).permute(0, 1, 2, 4, 3, 5).reshape(-1, c, rows, columns, f * f)
        z = blocks @ self.basis
        return torch.cat([z[..., 0].reshape(x.shape[0], -1), z[..., 1:].reshape(x.shape[0], -1)], dim=1)

    def _v(self, z):
        c, rows, columns = self._measured
        f, batch = self.factor, z.shape[0]
        means = z[:, : self.measurement_dim].reshape(batch, c, rows, columns, 1)
        rest = z[:, self.measurement_dim :].reshape(batch, c, rows, columns, f * f - 1)
        blocks = torch.cat([means, rest], dim=-1) @ self.basis.T
        return blocks.reshape(batch, c, rows, columns, f, f).permute(0, 1, 2, 4, 3, 5).reshape(batch, -1)

    def degraded_image(self, y):
        """The low-resolution image itself, ``[B, C, H/f, W/f]``."""
        return self._flat(y, self.measurement_dim, "degraded_image").reshape(-1, *self.measured_shape)

    def measurement_of(self, picture):
        """The low-resolution picture is the measurement, flattened in NCHW order."""
        return self._flat(picture, self.measurement_dim, "measurement_of")


class Inpainting(Degradation):
    """``y = x[kept]``: the entries where ``mask`` is True, in increasing NCHW index.

    ``mask`` is a bool tensor ``[C, H, W]`` (True = observed). ``U = I``, ``s = 1``, and ``V^T`` is
    the permutation that puts the kept entries first (in increasing index), then the missing ones.
    """

    name = "inp"

    def __init__(self, mask: torch.Tensor, name: str = "inp"):
        flat = mask.reshape(-1)
        # the kept indices then the missing ones, each increasing: a stable sort, made in O(N)
        order = torch.cat([flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        super().__init__(tuple(mask.shape), torch.ones(order.numel() - int((~flat).sum()), **_BUILD))
        self.name = name
        self.register_buffer("mask", mask.clone(), persistent=False)
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_inverse", inverse, persistent=False)

    def _vt(self, x):
        return x[:, self._order]

    def _v(self, z):
        return z[:, self._inverse]

    def degraded_image(self, y):
        """The kept pixels in place, missing ones black (-1)."""
        image = self.H_pinv(y).reshape(-1, *self.image_shape)
        return torch.where(self.mask, image, torch.full_like(image, -1.0))


class Colorization(Degradation):
    """``y[p] = mean_c x[c, p]``: the grey image, ``[B, H*W]``.

    Per pixel, the row ``(1/C, ..., 1/C)`` has the SVD ``1 * (1/sqrt(C)) * q_0^T`` with
    ``q_0 = (1, ..., 1)/sqrt(C)``; V completes ``q_0`` to the orthonormal Helmert basis of R^C. The
    first H*W spectral coordinates are the ``q_0`` ones (pixel order), then channel-mixing
    directions 1..C-1, each over all pixels.
    """

    name = "color"

    def __init__(self, image_shape):
        channels, height, width = image_shape
        super().__init__(image_shape, torch.full((height * width,), channels**-0.5, **_BUILD))
        self.register_buffer("basis", _helmert(channels), persistent=False)

    def _vt(self, x):
        c = self.image_shape[0]
        return (self.basis.T @ x.reshape(x.shape[0], c, -1)).reshape(x.shape[0], -1)

    def _v(self, z):
        c = self.image_shape[0]
        return (self.basis @ z.reshape(z.shape[0], c, -1)).reshape(z.shape[0], -1)

    def degraded_image(self, y):
        """The grey image repeated on every channel, ``[B, C, H, W]``."""
        c, h, w = self.image_shape
        grey = self._flat(y, self.measurement_dim, "degraded_image").reshape(-1, 1, h, w)
        return grey.repeat(1, c, 1, 1)

    def measurement_of(self, picture):
        """The grey values: exactly the first channel where the channels are equal (a grey photo;
        ``H`` would average equal values and round), else their mean, what colorization measures."""
        picture = picture.reshape(-1, *self.image_shape)
        grey = (picture == picture[:, :1]).all()
        return picture[:, 0].reshape(picture.shape[0], -1) if grey else self.H(picture)


class WalshHadamardCS(Degradation):
    """Compressive sensing: per channel, ``H*W / ratio`` Walsh-Hadamard coefficients of the image.

    With ``W_n`` the orthonormal Sylvester-Hadamard matrix of size n = H*W (a power of two;
    ``W_n[i, j] = (-1)^popcount(i & j) / sqrt(n)``) over the pixels of a channel in row-major order,
    and ``perm`` a permutation of 0..n-1, channel c measures ``(W_n x_c)[perm[:n // ratio]]``. The
    rows are orthonormal, so ``U = I``, ``s = 1``; ``V^T x`` is ``(W_n x_c)[perm]``, the measured
    coefficients of every channel first (channel-major), then the others.
    """

    def __init__(self, image_shape, ratio: int, perm: torch.Tensor, name: str):
        channels, height, width = image_shape
        super().__init__(image_shape, torch.ones(channels * (height * width // ratio), **_BUILD))
        self.name = name
        self.per_channel = height * width // ratio
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("_inverse", torch.argsort(perm), persistent=False)

    def _vt(self, x):
        c = self.image_shape[0]
        coefficients = _fwht(x.reshape(x.shape[0], c, -1))[..., self.perm]
        measured = coefficients[..., : self.per_channel].reshape(x.shape[0], -1)
        return torch.cat([measured, coefficients[..., self.per_channel :].reshape(x.shape[0], -1)], dim=1)

    def _v(self, z):
        c = self.image_shape[0]
        measured = z[:, : self.measurement_dim].reshape(z.shape[0], c, -1)
        rest = z[:, self.measurement_dim :].reshape(z.shape[0], c, -1)
        return _fwht(torch.cat([measured, rest], dim=2)[..., self._inverse]).reshape(z.shape[0], -1)

    def measurement_of(self, picture):
        raise DegradationError(
            f"{self.name}: a compressive-sensing measurement is a list of Walsh-Hadamard coefficients, "
            "not a picture, so no photo can be it; use run_config to simulate one"
        )


# -- building blocks ---------------------------------------------------------------------------


def _svd_with_numerical_zeros(matrix: torch.Tensor):
    """``U, s, V`` of an ``m x n`` matrix with ``m <= n`` (U ``m x m``, V ``n x n``, both
    orthonormal, singular values in decreasing order), computed the cheapest exact way, so that
    an operator for a photo of thousands of pixels a side is made in seconds:

    * a symmetric matrix (a blur whose kernel is symmetric with an odd number of taps, as every
      named blur's) by its eigendecomposition ``Q diag(l) Q^T``: ``s = |l|``, ``V = Q``, ``U = Q``
      with the signs of ``l`` (LAPACK's symmetric solver, several times faster than an SVD);
    * any other by its thin SVD, and the ``n - m`` directions it does not see (a down-sampling's)
      completed by a QR factorisation, instead of the full SVD of an ``n x n`` problem.
    """
    rows, columns = matrix.shape
    if rows == columns and torch.equal(matrix, matrix.T):
        values, q = _symmetric_eigh(matrix)
        order = values.abs().argsort(descending=True)
        values, v = values[order], q[:, order]
        u, s = v * torch.where(values < 0, -1.0, 1.0), values.abs()
    elif rows <= columns:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        v = vh.T
        if rows < columns:
            complete, _ = torch.linalg.qr(v, mode="complete")
            v = torch.cat([v, complete[:, rows:]], dim=1)
    else:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        v = vh.T
    tolerance = max(matrix.shape) * torch.finfo(matrix.dtype).eps * s.max()
    return u, torch.where(s > tolerance, s, torch.zeros_like(s)), v


def _symmetric_eigh(matrix: torch.Tensor):
    """``eigh`` of a symmetric matrix; one that is also centrosymmetric (unchanged when both its rows
    and columns are reversed: a blur's, whose kernel is symmetric) splits exactly into two problems
    of half the size, four times cheaper: with ``J`` the reversal and ``m = n // 2``, the orthogonal
    ``Q = [[I, 0, I], [0, sqrt 2, 0], [J, 0, -J]] / sqrt 2`` (no middle row and column for even
    ``n``) makes ``Q^T A Q`` block-diagonal, its blocks acting on the even and the odd vectors."""
    n = matrix.shape[0]
    if n < 64 or not torch.equal(matrix, matrix.flip(0).flip(1)):
        return torch.linalg.eigh(matrix)
    m, odd = n // 2, n % 2
    top, corner = matrix[:m, :m], matrix[:m, n - m:].flip(1)  # A11 and A12 J
    even_block = top + corner
    if odd:  # the middle pixel belongs to the even vectors
        column = matrix[:m, m:m + 1] * 2**0.5
        even_block = torch.cat([torch.cat([even_block, column], dim=1),
                                torch.cat([column.T, matrix[m:m + 1, m:m + 1]], dim=1)])
    even_values, even_vectors = torch.linalg.eigh(even_block)
    odd_values, odd_vectors = torch.linalg.eigh(top - corner)
    half = 2**-0.5
    upper, middle = even_vectors[:m], even_vectors[m:]
    even = torch.cat([upper * half, middle, upper.flip(0) * half]) if odd else \
        torch.cat([upper * half, upper.flip(0) * half])
    zeros = odd_vectors.new_zeros(odd, m)
    odd_full = torch.cat([odd_vectors * half, zeros, -odd_vectors.flip(0) * half])
    return torch.cat([even_values, odd_values]), torch.cat([even, odd_full], dim=1)


def _helmert(n: int) -> torch.Tensor:
    """An orthonormal n x n basis whose first column is (1, ..., 1)/sqrt(n).

    Column k >= 1 is ``(1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1))`` with k ones (Helmert).
    """
    rows = torch.arange(n, **_BUILD)[:, None]
    k = torch.arange(n, **_BUILD)[None, :]
    basis = torch.where(rows < k, 1.0, torch.where(rows == k, -k, 0.0)) / torch.sqrt(k * (k + 1))
    basis[:, 0] = n**-0.5
    return basis


def _fwht(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform (Sylvester order) along the last axis; it is its
    own inverse. log2(n) butterfly passes, no n x n matrix."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        pairs = x.reshape(-1, n // (2 * h), 2, h)
        x = torch.stack([pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]], dim=2)
        h *= 2
    return x.reshape(*lead, n) * n**-0.5


def _keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel; a = -0.5 is the usual bicubic (MATLAB, PIL)."""
    x = x.abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """``(n/f) x n`` bicubic down-sampling with half-sample symmetric padding.

    Output r sits at the centre of its block, ``c_r = r f + (f - 1)/2``. It weighs the pixels
    ``j`` with ``|j - c_r| < 2f`` by ``keys((j - c_r) / f)`` (a = -0.5: the kernel stretched by f,
    as for anti-aliased resizing), normalised to sum 1. A pixel index outside 0..n-1 is reflected
    with the edge pixel repeated (..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...; numpy's "symmetric"),
    and repeatedly so when the kernel is wider than the image. For even f this is the matrix of the
    reference DDRM code (``SRConv``).
    """
    taps = 4 * factor if factor % 2 == 0 else 4 * factor - 1
    offsets = torch.arange(taps, **_BUILD) - (taps - 1) / 2
    weights = _keys_cubic(offsets / factor)
    weights = weights / weights.sum()
    rows = torch.arange(n // factor)[:, None]
    columns = rows * factor - (3 * factor) // 2 + torch.arange(taps)[None, :]
    folded = columns % (2 * n)
    folded = torch.where(folded < n, folded, 2 * n - 1 - folded)
    matrix = torch.zeros(n // factor, n, **_BUILD)
    matrix.index_put_((rows.expand_as(folded), folded), weights.expand(n // factor, taps), accumulate=True)
    return matrix


def _correlation_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """``n x n`` matrix of ``y[i] = sum_m k[m] x[i + m - K//2]`` with zeros outside 0..n-1.

    This is ``torch.nn.functional.conv1d`` (a cross-correlation) with K//2 zeros before and
    K - 1 - K//2 after: a Toeplitz matrix, every tap kept, also for odd K.
    """
    size = kernel.numel()
    rows = torch.arange(n)[:, None]
    columns = rows + torch.arange(size)[None, :] - size // 2
    inside = (columns >= 0) & (columns < n)
    matrix = torch.zeros(n, n, **_BUILD)
    matrix[rows.expand_as(columns)[inside], columns[inside]] = kernel.expand(n, size)[inside]
    return matrix


def _gaussian_kernel(sigma: float, taps: int) -> torch.Tensor:
    offsets = torch.arange(taps, **_BUILD) - (taps - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


# -- masks -------------------------------------------------------------------------------------


def text_mask(
    text: str,
    image_size: int | Sequence[int],
    *,
    font_size: int | None = None,
    stroke: int | None = None,
) -> torch.Tensor:
    """A bool ``[H, W]`` mask that is False (missing) under ``text``, centred, and True elsewhere.

    For inpainting under a text overlay, like the reference's "lolcat" and "lorem" masks:

    >>> mask = text_mask("lorem\\nipsum", 64)
    >>> op = make_degradation("inp_mask", 64, mask=mask)
    >>> bool(mask.all()), op.measurement_dim < 3 * 64 * 64
    (False, True)

    ``font_size`` defaults to a fifth of the height; ``stroke`` (extra thickness in pixels) to a
    tenth of the font size. Uses Pillow's built-in font, so no font file is needed.
    """
    height, width = _image_size(image_size)
    font_size = font_size if font_size is not None else max(height // 5, 1)
    stroke = stroke if stroke is not None else font_size // 10
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        font = ImageFont.load_default()
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    style = dict(font=font, align="center", stroke_width=stroke)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, **style)
    origin = ((width - right - left) / 2, (height - bottom - top) / 2)
    draw.multiline_text(origin, text, fill=0, stroke_fill=0, **style)
    return torch.from_numpy(np.asarray(canvas) >= 128)


def box_mask(image_size: int | Sequence[int], top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A bool ``[H, W]`` mask that is False (missing) in the box whose top-left pixel is
    ``(top, left)`` and True elsewhere; a box reaching past the edge is cut there.

    >>> mask = box_mask((4, 6), top=1, left=2, height=2, width=9)
    >>> mask.int().tolist()[1]
    [1, 1, 0, 0, 0, 0]
    """
    rows, columns = _image_size(image_size)
    top, left = int(top), int(left)
    height = _positive_int(height, "box_mask: height")
    width = _positive_int(width, "box_mask: width")
    if not (0 <= top < rows and 0 <= left < columns):
        raise DegradationError(
            f"box_mask: the box's top-left pixel ({top}, {left}) is outside the {rows}x{columns} image; "
            f"give 0 <= top < {rows} and 0 <= left < {columns}"
        )
    mask = torch.ones(rows, columns, dtype=torch.bool)
    mask[top : top + height, left : left + width] = False
    return mask


def load_mask(mask, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """A mask given as a path, a PIL image, an array or a tensor -> bool ``[C, H, W]``, True = kept.

    Images: grey level >= 128 is kept (white = observed, black = missing). Arrays and tensors:
    nonzero (or True) is kept, as in the reference's ``.npy`` masks.
    """
    if isinstance(mask, (str, os.PathLike)):
        from .images import open_image  # a regular file only, its size checked before decoding

        mask = np.asarray(open_image(mask).convert("L")) >= 128
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) >= 128
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    mask = mask.detach().to("cpu") != 0
    channels, height, width = shape
    given = list(mask.shape)
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or mask.shape[1:] != (height, width) or mask.shape[0] not in (1, channels):
        raise DegradationError(
            f"{name}: the mask has shape {given}, but images of {channels}x{height}x{width} "
            f"need a mask of shape [{height}, {width}] (all channels) or [{channels}, {height}, {width}]. "
            "Resize the mask to the image size first (nearest neighbour, so it stays binary)."
        )
    mask = mask.expand(channels, height, width).clone()
    if not mask.any():
        raise DegradationError(f"{name}: the mask keeps no pixel at all (everything is 0 / black)")
    return mask


# -- the registry ------------------------------------------------------------------------------


def _deno(shape):
    return Denoising(shape)


def _sr(shape, factor):
    return BlockAverage(shape, factor)


def _sr_bicubic(shape, factor):
    c, h, w = shape
    return Separable(c, _bicubic_matrix(h, factor), _bicubic_matrix(w, factor), f"sr_bicubic{factor}")


def _blur(shape, kernel_h, kernel_w, name):
    c, h, w = shape
    return Separable(c, _correlation_matrix(kernel_h, h), _correlation_matrix(kernel_w, w), name)


def _deblur_uni(shape, taps=9):
    kernel = torch.full((_positive_int(taps, "deblur_uni: taps"),), 1.0 / taps, **_BUILD)
    return _blur(shape, kernel, kernel, "deblur_uni")


def _deblur_gauss(shape, sigma=10.0, taps=5):
    taps = _positive_int(taps, "deblur_gauss: taps")
    kernel = _gaussian_kernel(_positive(sigma, "deblur_gauss: sigma"), taps)
    return _blur(shape, kernel, kernel, "deblur_gauss")


def _deblur_aniso(shape, sigma_h=1.0, sigma_w=20.0, taps=9):
    taps = _positive_int(taps, "deblur_aniso: taps")
    kernel_h = _gaussian_kernel(_positive(sigma_h, "deblur_aniso: sigma_h"), taps)
    kernel_w = _gaussian_kernel(_positive(sigma_w, "deblur_aniso: sigma_w"), taps)
    return _blur(shape, kernel_h, kernel_w, "deblur_aniso")


def _deblur(shape, kernel=None, kernel_h=None, kernel_w=None):
    one_for_both = kernel is not None and kernel_h is None and kernel_w is None
    one_per_axis = kernel is None and kernel_h is not None and kernel_w is not None
    if not (one_for_both or one_per_axis):
        raise DegradationError(
            "deblur needs either kernel=[...] (the same 1-D kernel on both axes) or both kernel_h=[...] "
            "(along the height) and kernel_w=[...] (along the width)"
        )
    kernel_h = _kernel(kernel if kernel is not None else kernel_h, "kernel_h")
    kernel_w = _kernel(kernel if kernel is not None else kernel_w, "kernel_w")
    return _blur(shape, kernel_h, kernel_w, "deblur")


def _inp(shape, missing=0.5, seed=0):
    c, h, w = shape
    if not 0 <= missing < 1:
        raise DegradationError(
            f"inp: missing={missing!r} is the fraction of pixels removed; give 0 <= missing < 1"
        )
    removed = torch.randperm(h * w, generator=_cpu_generator(seed))[: round(missing * h * w)]
    mask = torch.ones(h * w, dtype=torch.bool)
    mask[removed] = False
    return Inpainting(mask.reshape(1, h, w).expand(c, h, w).clone(), "inp")


def _inp_box(shape, box=None):
    c, h, w = shape
    box_h, box_w = (h // 2, w // 2) if box is None else _image_size(box, "inp_box: box")
    if box_h > h or box_w > w or (box_h, box_w) == (h, w):
        raise DegradationError(
            f"inp_box: a box of {box_h}x{box_w} does not fit in, or leaves no pixel of, a {h}x{w} image"
        )
    top, left = (h - box_h) // 2, (w - box_w) // 2
    mask = torch.ones(c, h, w, dtype=torch.bool)
    mask[:, top : top + box_h, left : left + box_w] = False
    return Inpainting(mask, "inp_box")


def _inp_mask(shape, mask):
    return Inpainting(load_mask(mask, shape, "inp_mask"), "inp_mask")


def _color(shape):
    if shape[0] < 2:
        raise DegradationError("color: colorization needs at least 2 channels; these images have 1")
    return Colorization(shape)


def _cs(shape, factor, seed=0):
    c, h, w = shape
    n = h * w
    if n & (n - 1):
        raise DegradationError(
            f"cs{factor}: the Walsh-Hadamard transform needs height*width to be a power of two; "
            f"{h}x{w} = {n} is not. Use sizes such as 64, 128, 256 or 512."
        )
    if factor > n:
        raise DegradationError(f"cs{factor}: cannot keep 1/{factor} of {n} coefficients per channel")
    return WalshHadamardCS(shape, factor, torch.randperm(n, generator=_cpu_generator(seed)), f"cs{factor}")


# The listed names, in the order a person reads them, with what each is.
_LISTED = {
    "deno": "denoising: H = I",
    "sr2": "super-resolution by averaging 2x2 blocks",
    "sr4": "super-resolution by averaging 4x4 blocks",
    "sr8": "super-resolution by averaging 8x8 blocks",
    "sr16": "super-resolution by averaging 16x16 blocks",
    "sr_bicubic4": "super-resolution by bicubic down-sampling (a=-0.5) by 4, symmetric padding",
    "sr_bicubic8": "super-resolution by bicubic down-sampling (a=-0.5) by 8, symmetric padding",
    "sr_bicubic16": "super-resolution by bicubic down-sampling (a=-0.5) by 16, symmetric padding",
    "deblur_uni": "uniform blur, 9 taps per axis (taps=9), zero padding",
    "deblur_gauss": "Gaussian blur, sigma=10, 5 taps per axis (sigma, taps), zero padding",
    "deblur_aniso": "anisotropic Gaussian blur, sigma_h=1 (height), sigma_w=20 (width), 9 taps, zero padding",
    "deblur": "your separable blur: kernel=[...], or kernel_h=[...] and kernel_w=[...]; zero padding",
    "inp": "inpainting of a random half of the pixels (missing=0.5, seed=0)",
    "inp_box": "inpainting of a centred box (box=(h, w), default half the height and half the width)",
    "inp_mask": "inpainting under your mask=... (path, PIL image, array; white / nonzero = kept)",
    "color": "colorization: the mean over channels",
    "cs2": "compressive sensing: 1/2 of the Walsh-Hadamard coefficients per channel (seed=0)",
    "cs4": "compressive sensing: 1/4 of the Walsh-Hadamard coefficients per channel (seed=0)",
}
_BUILDERS = {
    "deno": _deno,
    "deblur_uni": _deblur_uni,
    "deblur_gauss": _deblur_gauss,
    "deblur_aniso": _deblur_aniso,
    "deblur": _deblur,
    "inp": _inp,
    "inp_box": _inp_box,
    "inp_mask": _inp_mask,
    "color": _color,
}
# sr<f>, sr_bicubic<f> and cs<f> take their factor from the name, any integer f >= 2.
_FAMILIES = {"sr": _sr, "sr_bicubic": _sr_bicubic, "cs": _cs}
_FAMILY_NAME = re.compile(r"(sr_bicubic|sr|cs)(\d+)")


def scale_factor(name: str) -> int:
    """How many times larger the image is than its measurement, per side: ``f`` for ``sr<f>`` and
    ``sr_bicubic<f>``, 1 for every other degradation (the measurement is a picture of the image's size).

    >>> scale_factor("sr4"), scale_factor("sr_bicubic8"), scale_factor("deblur_gauss")
    (4, 8, 1)
    """
    match = _FAMILY_NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(2)) if match and match.group(1) != "cs" and int(match.group(2)) >= 2 else 1


def available_degradations() -> dict[str, str]:
    """The listed degradation names and what each is. ``sr<f>``, ``sr_bicubic<f>`` and ``cs<f>``
    also take factors not listed here (``sr3``, ``cs8``, ...)."""
    return dict(_LISTED)


def make_degradation(
    name: str,
    image_size: int | Sequence[int],
    channels: int = 3,
    device: torch.device | str | None = None,
    *,
    dtype: torch.dtype | None = None,
    **params,
) -> Degradation:
    """The degradation ``name`` for images of ``channels x image_size``, with its exact SVD.

    ``image_size`` is an int (square) or ``(height, width)``. ``device`` defaults to the CPU and
    ``dtype`` to float32; the operator is built in float64 on the CPU, then moved. ``params`` are
    the degradation's own (see :func:`available_degradations`; unknown ones are refused).

    >>> make_degradation("deblur_gauss", 32, sigma=3.0, taps=7).measurement_dim
    3072
    >>> make_degradation("sr3", 30, channels=1).degraded_image(torch.zeros(1, 100)).shape
    torch.Size([1, 1, 10, 10])
    """
    height, width = _image_size(image_size)
    shape = (_positive_int(channels, "channels"), height, width)
    build, given = _lookup(name, shape)
    accepted = [p for p in inspect.signature(build).parameters if p not in ("shape", "factor")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise DegradationError(
            f"{name} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(accepted) if accepted else 'no parameters'}"
        )
    required = [p for p, v in inspect.signature(build).parameters.items()
                if v.default is inspect.Parameter.empty and p not in ("shape", "factor") and p not in params]
    if required:
        raise DegradationError(f"{name} needs {', '.join(f'{p}=...' for p in required)}")
    operator = build(shape, **given, **params)
    return operator.to(device=device or "cpu", dtype=dtype or torch.float32)


def _lookup(name: str, shape):
    if name in _BUILDERS:
        return _BUILDERS[name], {}
    match = _FAMILY_NAME.fullmatch(name)
    if match:
        family, factor = match.group(1), int(match.group(2))
        if factor < 2:
            raise DegradationError(f"{name}: the factor must be at least 2")
        if family != "cs" and (shape[1] % factor or shape[2] % factor):
            # The image size is the model's, so the fix is another factor, not another size.
            height, width = shape[1], shape[2]
            factors = [f for f in range(2, min(height, width) // 2 + 1) if not height % f and not width % f]
            raise DegradationError(
                f"{name}: the factor {factor} does not divide the image size {height}x{width}; "
                + (f"factors that do: {', '.join(f'{family}{f}' for f in factors)}" if factors else
                   f"no factor of 2 or more divides both {height} and {width}")
            )
        return _FAMILIES[family], {"factor": factor}
    known = list(available_degradations())
    hint = difflib.get_close_matches(name, known, n=1)
    raise DegradationError(
        f"Unknown degradation '{name}'.{f' Did you mean {hint[0]!r}?' if hint else ''} "
        f"Known: {', '.join(known)} (sr<f>, sr_bicubic<f> and cs<f> take any integer factor)."
    )


def _cpu_generator(seed: int | None) -> torch.Generator:
    """Masks and permutations come from the CPU so that a seed means the same on every device;
    ``seed=None`` asks for fresh randomness."""
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def _image_size(size, what: str = "image_size") -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2:
        raise DegradationError(f"{what} is an int or (height, width); got {size!r}")
    return _positive_int(pair[0], what), _positive_int(pair[1], what)


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DegradationError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DegradationError(f"{what} must be a positive number; got {value!r}")
    return float(value)


def _kernel(values, what: str) -> torch.Tensor:
    kernel = torch.as_tensor(values if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float))
    kernel = kernel.detach().to(**_BUILD)
    if kernel.dim() != 1 or kernel.numel() == 0 or not torch.isfinite(kernel).all():
        raise DegradationError(
            f"deblur: {what} must be a non-empty 1-D list of finite numbers (a separable blur is two 1-D "
            f"kernels); got shape {list(kernel.shape)}"
        )
    return kernel
