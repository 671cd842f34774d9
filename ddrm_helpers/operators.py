"""The operators: linear degradations ``y = H x``, each given by its singular value decomposition.

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

The operators are made by name with :func:`~ddrm_helpers.degradations.make_degradation`; their
1-D factors and the checks of sizes and numbers are :mod:`ddrm_helpers.factors`'.
"""

from __future__ import annotations

import math

import torch

from .errors import DegradationError
from .factors import BUILD, fwht, helmert, svd_with_numerical_zeros

__all__ = ["BlockAverage", "Colorization", "Degradation", "Denoising", "Inpainting", "Separable", "WalshHadamardCS"]


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
        super().__init__(image_shape, torch.ones(math.prod(image_shape), **BUILD))

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
        u_h, s_h, v_h = svd_with_numerical_zeros(matrix_h)
        same = matrix_h.shape == matrix_w.shape and torch.equal(matrix_h, matrix_w)  # a square image, one kernel
        u_w, s_w, v_w = (u_h, s_h, v_h) if same else svd_with_numerical_zeros(matrix_w)
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
        super().__init__(image_shape, torch.full((channels * rows * columns,), 1.0 / factor, **BUILD))
        self.name = f"sr{factor}"
        self.factor = factor
        self._measured = (channels, rows, columns)
        self.register_buffer("basis", helmert(factor * factor), persistent=False)

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
        super().__init__(tuple(mask.shape), torch.ones(order.numel() - int((~flat).sum()), **BUILD))
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
        super().__init__(image_shape, torch.full((height * width,), channels**-0.5, **BUILD))
        self.register_buffer("basis", helmert(channels), persistent=False)

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
        super().__init__(image_shape, torch.ones(channels * (height * width // ratio), **BUILD))
        self.name = name
        self.per_channel = height * width // ratio
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("_inverse", torch.argsort(perm), persistent=False)

    def _vt(self, x):
        c = self.image_shape[0]
        coefficients = fwht(x.reshape(x.shape[0], c, -1))[..., self.perm]
        measured = coefficients[..., : self.per_channel].reshape(x.shape[0], -1)
        return torch.cat([measured, coefficients[..., self.per_channel :].reshape(x.shape[0], -1)], dim=1)

    def _v(self, z):
        c = self.image_shape[0]
        measured = z[:, : self.measurement_dim].reshape(z.shape[0], c, -1)
        rest = z[:, self.measurement_dim :].reshape(z.shape[0], c, -1)
        return fwht(torch.cat([measured, rest], dim=2)[..., self._inverse]).reshape(z.shape[0], -1)

    def measurement_of(self, picture):
        raise DegradationError(
            f"{self.name}: a compressive-sensing measurement is a list of Walsh-Hadamard coefficients, "
            "not a picture, so no photo can be it; use run_config to simulate one"
        )
