"""The building blocks of the operators: 1-D matrices and kernels, their exact decompositions, and
the checks of the sizes and numbers the degradations take (one line, :class:`DegradationError`).

Everything is built in float64 on the CPU (``BUILD``), then moved: the same operator on every
device, and 1-D decompositions exact to about 1e-15 whatever dtype the operator is used in.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import DegradationError

BUILD = {"dtype": torch.float64, "device": "cpu"}


def svd_with_numerical_zeros(matrix: torch.Tensor):
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
        values, q = symmetric_eigh(matrix)
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


def symmetric_eigh(matrix: torch.Tensor):
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


def helmert(n: int) -> torch.Tensor:
    """An orthonormal n x n basis whose first column is (1, ..., 1)/sqrt(n).

    Column k >= 1 is ``(1, ..., 1, -k, 0, ..., 0) / sqrt(k (k + 1))`` with k ones (Helmert).
    """
    rows = torch.arange(n, **BUILD)[:, None]
    k = torch.arange(n, **BUILD)[None, :]
    basis = torch.where(rows < k, 1.0, torch.where(rows == k, -k, 0.0)) / torch.sqrt(k * (k + 1))
    basis[:, 0] = n**-0.5
    return basis


def fwht(x: torch.Tensor) -> torch.Tensor:
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


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel; a = -0.5 is the usual bicubic (MATLAB, PIL)."""
    x = x.abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """``(n/f) x n`` bicubic down-sampling with half-sample symmetric padding.

    Output r sits at the centre of its block, ``c_r = r f + (f - 1)/2``. It weighs the pixels
    ``j`` with ``|j - c_r| < 2f`` by ``keys((j - c_r) / f)`` (a = -0.5: the kernel stretched by f,
    as for anti-aliased resizing), normalised to sum 1. A pixel index outside 0..n-1 is reflected
    with the edge pixel repeated (..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...; numpy's "symmetric"),
    and repeatedly so when the kernel is wider than the image. For even f this is the matrix of the
    reference DDRM code (``SRConv``).
    """
    taps = 4 * factor if factor % 2 == 0 else 4 * factor - 1
    offsets = torch.arange(taps, **BUILD) - (taps - 1) / 2
    weights = keys_cubic(offsets / factor)
    weights = weights / weights.sum()
    rows = torch.arange(n // factor)[:, None]
    columns = rows * factor - (3 * factor) // 2 + torch.arange(taps)[None, :]
    folded = columns % (2 * n)
    folded = torch.where(folded < n, folded, 2 * n - 1 - folded)
    matrix = torch.zeros(n // factor, n, **BUILD)
    matrix.index_put_((rows.expand_as(folded), folded), weights.expand(n // factor, taps), accumulate=True)
    return matrix


def correlation_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """``n x n`` matrix of ``y[i] = sum_m k[m] x[i + m - K//2]`` with zeros outside 0..n-1.

    This is ``torch.nn.functional.conv1d`` (a cross-correlation) with K//2 zeros before and
    K - 1 - K//2 after: a Toeplitz matrix, every tap kept, also for odd K.
    """
    size = kernel.numel()
    rows = torch.arange(n)[:, None]
    columns = rows + torch.arange(size)[None, :] - size // 2
    inside = (columns >= 0) & (columns < n)
    matrix = torch.zeros(n, n, **BUILD)
    matrix[rows.expand_as(columns)[inside], columns[inside]] = kernel.expand(n, size)[inside]
    return matrix


def gaussian_kernel(sigma: float, taps: int) -> torch.Tensor:
    offsets = torch.arange(taps, **BUILD) - (taps - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def cpu_generator(seed: int | None) -> torch.Generator:
    """Masks and permutations come from the CPU so that a seed means the same on every device;
    ``seed=None`` asks for fresh randomness."""
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def image_size_pair(size, what: str = "image_size") -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2:
        raise DegradationError(f"{what} is an int or (height, width); got {size!r}")
    return positive_int(pair[0], what), positive_int(pair[1], what)


def positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DegradationError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def positive_number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise DegradationError(f"{what} must be a positive number; got {value!r}")
    return float(value)


def kernel_1d(values, what: str) -> torch.Tensor:
    kernel = torch.as_tensor(values if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float))
    kernel = kernel.detach().to(**BUILD)
    if kernel.dim() != 1 or kernel.numel() == 0 or not torch.isfinite(kernel).all():
        raise DegradationError(
            f"deblur: {what} must be a non-empty 1-D list of finite numbers (a separable blur is two 1-D "
            f"kernels); got shape {list(kernel.shape)}"
        )
    return kernel
