"""Every degradation in the registry against a dense matrix of what it names, built here
independently (conv2d, avg_pool2d, the mask, explicit formulas), never from the operator's SVD."""

import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddrm_helpers import DegradationError, available_degradations, make_degradation, text_mask

F64 = torch.float64
NAMES = list(available_degradations())
# (image_size, channels): 8x8 in RGB (channel order matters: the reference got it wrong), 16x16
# with two channels, and a rectangle with one.
SHAPES = [(8, 3), (16, 2), ((8, 16), 1)]


def example_mask(height, width):
    generator = torch.Generator().manual_seed(123)
    return torch.rand(height, width, generator=generator) > 0.3


# Degradations that need a parameter get one here; a new one that needs one fails until added.
EXAMPLE_PARAMS = {
    # Asymmetric and of even length: checks the correlation convention and the centre tap K//2.
    "deblur": lambda h, w: {"kernel_h": [0.1, 0.7, 0.2], "kernel_w": [0.1, 0.2, 0.6, 0.1]},
    "inp_mask": lambda h, w: {"mask": example_mask(h, w)},
}


def size_pair(image_size):
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def build(name, image_size, channels):
    params = EXAMPLE_PARAMS.get(name, lambda h, w: {})(*size_pair(image_size))
    return make_degradation(name, image_size, channels, dtype=F64, **params)


def possible(name, image_size, channels):
    """sr16 does not fit 8x8 and color needs channels: such pairs are error tests, not cases."""
    try:
        build(name, image_size, channels)
    except DegradationError:
        return False
    return True


CASES = [(n, s) for n in NAMES for s in SHAPES if possible(n, *s)]


# -- the degradations as stated, from first principles -----------------------------------------


def gaussian(sigma, taps):
    k = torch.exp(-0.5 * (torch.arange(taps, dtype=F64) - (taps - 1) / 2) ** 2 / sigma**2)
    return k / k.sum()


def keys_bicubic(x, a=-0.5):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


STATED_KERNELS = {
    "deblur_uni": (torch.full((9,), 1 / 9, dtype=F64),) * 2,
    "deblur_gauss": (gaussian(10, 5),) * 2,
    "deblur_aniso": (gaussian(1, 9), gaussian(20, 9)),
    "deblur": (torch.tensor([0.1, 0.7, 0.2], dtype=F64), torch.tensor([0.1, 0.2, 0.6, 0.1], dtype=F64)),
}


def stated_mask(name, shape):
    c, h, w = shape
    if name == "inp":  # documented: the first half of randperm(H*W) with a CPU generator seeded 0
        removed = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))[: round(0.5 * h * w)]
        mask = torch.ones(h * w, dtype=torch.bool)
        mask[removed] = False
        return mask.reshape(1, h, w).expand(c, h, w)
    if name == "inp_box":
        mask = torch.ones(c, h, w, dtype=torch.bool)
        top, left = (h - h // 2) // 2, (w - w // 2) // 2
        mask[:, top : top + h // 2, left : left + w // 2] = False
        return mask
    return example_mask(h, w).expand(c, h, w)


def hadamard(n):
    i = torch.arange(n)
    bits = torch.bitwise_and(i[:, None], i[None, :])
    parity = torch.zeros_like(bits)
    while bits.any():
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).to(F64) / n**0.5


def stated_matrix(name, shape):
    """The dense M x N matrix of ``name`` acting on NCHW-flattened images."""
    c, h, w = shape
    n = c * h * w
    basis = torch.eye(n, dtype=F64).reshape(n, c, h, w)

    def as_matrix(images):
        return images.reshape(n, -1).T

    if name == "deno":
        return torch.eye(n, dtype=F64)
    if match := re.fullmatch(r"sr(\d+)", name):
        return as_matrix(F.avg_pool2d(basis, int(match.group(1))))
    if match := re.fullmatch(r"sr_bicubic(\d+)", name):
        f = int(match.group(1))
        taps = 4 * f if f % 2 == 0 else 4 * f - 1
        k = torch.tensor([keys_bicubic((m - (taps - 1) / 2) / f) for m in range(taps)], dtype=F64)
        k = k / k.sum()
        pad = 3 * f // 2  # the first tap of output r is pixel r*f - pad
        padded = np.pad(basis.numpy(), ((0, 0), (0, 0), (pad, pad + f), (pad, pad + f)), mode="symmetric")
        weight = torch.outer(k, k).expand(c, 1, taps, taps)
        out = F.conv2d(torch.from_numpy(padded), weight, stride=f, groups=c)
        return as_matrix(out[:, :, : h // f, : w // f])
    if name in STATED_KERNELS:
        k_h, k_w = STATED_KERNELS[name]
        before_h, before_w = len(k_h) // 2, len(k_w) // 2  # zeros before; the rest after
        padded = F.pad(basis, (before_w, len(k_w) - 1 - before_w, before_h, len(k_h) - 1 - before_h))
        return as_matrix(F.conv2d(padded, torch.outer(k_h, k_w).expand(c, 1, len(k_h), len(k_w)), groups=c))
    if name.startswith("inp"):
        return torch.eye(n, dtype=F64)[stated_mask(name, shape).reshape(-1)]
    if name == "color":
        return as_matrix(basis.mean(dim=1))
    if match := re.fullmatch(r"cs(\d+)", name):
        kept = h * w // int(match.group(1))
        perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
        return torch.block_diag(*[hadamard(h * w)[perm[:kept]]] * c)
    raise AssertionError(f"no stated matrix for {name}: add one to this test")


def dense(op, method, size):
    return getattr(op, method)(torch.eye(size, dtype=F64)).T


def relative(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# -- the identities, for every operator in the registry ----------------------------------------


class Case:
    """One operator at one shape, with its dense matrices computed once."""

    def __init__(self, name, image_size, channels):
        self.name = name
        self.op = build(name, image_size, channels)
        self.shape = (channels, *size_pair(image_size))
        op = self.op
        self.stated = stated_matrix(name, self.shape)
        self.h, self.ht = dense(op, "H", op.input_dim), dense(op, "Ht", op.measurement_dim)
        self.pinv = dense(op, "H_pinv", op.measurement_dim)
        self.u, self.ut = dense(op, "U", op.measurement_dim), dense(op, "Ut", op.measurement_dim)
        self.v, self.vt = dense(op, "V", op.input_dim), dense(op, "Vt", op.input_dim)


@pytest.fixture(
    scope="module",
    params=CASES,
    ids=lambda p: f"{p[0]}-{p[1][0]}-c{p[1][1]}",
)
def case(request):
    name, (image_size, channels) = request.param
    return Case(name, image_size, channels)


def test_every_listed_degradation_is_tested():
    assert {name for name, _ in CASES} == set(NAMES)
    assert len(CASES) == len(NAMES) * len(SHAPES) - 5  # sr16 and sr_bicubic16 at 8, color in grey


def test_H_is_the_degradation_it_names(case):
    assert case.op.image_shape == case.shape
    assert (case.op.measurement_dim, case.op.input_dim) == case.stated.shape
    assert relative(case.h, case.stated) < 1e-12


def test_U_and_V_are_orthonormal_and_reconstruct_H(case):
    op, u, v, s = case.op, case.u, case.v, case.op.singulars()
    assert torch.allclose(u.T @ u, torch.eye(op.measurement_dim, dtype=F64), atol=1e-12)
    assert torch.allclose(v.T @ v, torch.eye(op.input_dim, dtype=F64), atol=1e-12)
    assert torch.allclose(case.ut, u.T, atol=1e-12) and torch.allclose(case.vt, v.T, atol=1e-12)
    assert s.shape == (op.measurement_dim,) and bool((s >= 0).all())
    assert relative(u @ torch.diag(s) @ v[:, : op.measurement_dim].T, case.stated) < 1e-12


def test_Ht_is_the_adjoint_and_add_zeros_pads_at_the_end(case):
    op = case.op
    assert torch.allclose(case.ht, case.h.T, atol=1e-12)
    z = torch.randn(2, op.measurement_dim, dtype=F64)
    padded = op.add_zeros(z)
    assert padded.shape == (2, op.input_dim)
    assert torch.equal(padded[:, : op.measurement_dim], z) and not padded[:, op.measurement_dim :].any()


def test_H_pinv_is_the_moore_penrose_inverse(case):
    h, pinv = case.h, case.pinv
    assert torch.isfinite(pinv).all()
    # Blurs have singular values down to 1e-11 here: H^+ is large and products lose digits.
    assert relative(h @ pinv @ h, h) < 1e-6
    assert relative(pinv @ h @ pinv, pinv) < 1e-6
    assert relative(h @ pinv, (h @ pinv).T) < 1e-6
    assert relative(pinv @ h, (pinv @ h).T) < 1e-6


def test_every_method_is_finite_and_takes_images_or_vectors(case):
    op = case.op
    x = torch.rand(2, *case.shape, dtype=F64) * 2 - 1
    y = op.H(x)
    assert torch.equal(y, op.H(x.reshape(2, -1))) and torch.equal(y, op(x))
    outputs = [y, op.Ht(y), op.H_pinv(y), op.U(y), op.Ut(y), op.V(op.Vt(x)), op.add_zeros(y)]
    outputs.append(op.degraded_image(y))
    assert all(torch.isfinite(t).all() for t in outputs)
    assert torch.allclose(op.V(op.Vt(x)), x.reshape(2, -1), atol=1e-12)
    assert op.degraded_image(y).dim() == 4


# -- what the reference got wrong, and other specific facts ------------------------------------


def test_uniform_blur_uses_all_nine_taps_with_zero_padding():
    """The reference built its Toeplitz rows over range(i - 4, i + 4): 8 of the 9 taps."""
    op = make_degradation("deblur_uni", 32, channels=1, dtype=F64)
    delta = torch.zeros(1, 1, 32, 32, dtype=F64)
    delta[..., 16, 16] = 1.0
    blurred = op.H(delta).reshape(32, 32)
    expected = torch.zeros(32, 32, dtype=F64)
    expected[12:21, 12:21] = 1 / 81
    assert torch.allclose(blurred, expected, atol=1e-14)
    corner = torch.zeros(1, 1, 32, 32, dtype=F64)
    corner[..., 0, 0] = 1.0  # zero padding: what leaves the image is lost, nothing is reflected
    assert torch.isclose(op.H(corner).sum(), torch.tensor(25 / 81, dtype=F64))


@pytest.mark.parametrize("name", ["deblur_uni", "deblur_gauss", "deblur_aniso"])
def test_blur_is_exact_at_256_in_float32(name):
    """The reference paired channel-major singular values with pixel-major coordinates: its H was
    about 90% off the blur it named. Ours, in float32 at full size, is the blur."""
    op = make_degradation(name, 256)
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    k_h, k_w = STATED_KERNELS[name]
    kernel = torch.outer(k_h, k_w).float().expand(3, 1, len(k_h), len(k_w))
    expected = F.conv2d(x, kernel, padding=(len(k_h) // 2, len(k_w) // 2), groups=3)
    assert relative(op.H(x), expected.reshape(2, -1)) < 1e-5


def test_pinv_of_a_singular_blur_has_no_infinity():
    """The 9-tap uniform blur on 16 pixels is singular; the reference divided by its zeros."""
    op = make_degradation("deblur_uni", 16, dtype=F64)
    assert (op.singulars() == 0).any()
    y = op.H(torch.rand(1, 3, 16, 16, dtype=F64))
    assert torch.isfinite(op.H_pinv(y)).all()
    assert torch.allclose(op.H(op.H_pinv(y)), y, atol=1e-10)


def test_bicubic_rows_sum_to_one_and_keep_constants():
    for factor in (2, 3, 4, 8):
        op = make_degradation(f"sr_bicubic{factor}", 48, channels=1, dtype=F64)
        assert torch.allclose(op.H(torch.full((1, 48 * 48), 0.3, dtype=F64)), torch.tensor(0.3, dtype=F64))


def test_families_take_factors_beyond_the_listed_ones():
    for name, size, measured in [("sr3", 12, 16), ("sr_bicubic3", 12, 16), ("cs8", 16, 32)]:
        op = make_degradation(name, size, channels=1, dtype=F64)
        assert op.measurement_dim == measured
        assert relative(dense(op, "H", op.input_dim), stated_matrix(name, (1, size, size))) < 1e-12


def test_cs_names_say_which_fraction_is_measured():
    assert make_degradation("cs2", 16).measurement_dim == 3 * 256 // 2
    assert make_degradation("cs4", 16).measurement_dim == 3 * 256 // 4


def test_random_inpainting_is_seeded_and_removes_the_asked_fraction():
    a, b = make_degradation("inp", 16), make_degradation("inp", 16, seed=0)
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, make_degradation("inp", 16, seed=1).mask)
    assert make_degradation("inp", 16, seed=None).measurement_dim == 3 * 128
    assert make_degradation("inp", 16, missing=0.25).measurement_dim == 3 * 192
    assert torch.equal(a.mask[0], a.mask[2])  # a pixel is missing in every channel


def test_masks_from_images_arrays_and_paths(tmp_path):
    keep = example_mask(16, 16).numpy()
    picture = Image.fromarray(np.where(keep, 255, 0).astype(np.uint8))
    picture.save(tmp_path / "mask.png")
    from_array = make_degradation("inp_mask", 16, mask=keep)
    for given in (picture, tmp_path / "mask.png", str(tmp_path / "mask.png"), torch.from_numpy(keep).float()):
        assert torch.equal(make_degradation("inp_mask", 16, mask=given).mask, from_array.mask)
    per_channel = np.stack([keep, ~keep, keep])
    assert torch.equal(make_degradation("inp_mask", 16, mask=per_channel).mask, torch.from_numpy(per_channel))


def test_inpainting_shows_missing_pixels_black():
    op = make_degradation("inp_box", 8, channels=1)
    shown = op.degraded_image(op.H(torch.full((1, 1, 8, 8), 0.5)))
    assert torch.equal(shown[0, 0, 2:6, 2:6], torch.full((4, 4), -1.0))
    assert torch.equal(shown[0, 0, 0], torch.full((8,), 0.5))


def test_text_mask_hides_the_text():
    mask = text_mask("lorem", 64)
    assert mask.shape == (64, 64) and mask.dtype == torch.bool
    assert 0 < (~mask).sum() < 64 * 64 // 2
    op = make_degradation("inp_mask", 64, mask=mask)
    assert op.measurement_dim == 3 * int(mask.sum())


def test_super_resolution_shows_the_low_resolution_image():
    op = make_degradation("sr4", 16)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(op.degraded_image(op.H(x)), F.avg_pool2d(x, 4), atol=1e-6)
    color = make_degradation("color", 8)
    shown = color.degraded_image(color.H(torch.rand(1, 3, 8, 8)))
    assert shown.shape == (1, 3, 8, 8) and torch.equal(shown[:, 0], shown[:, 2])


def test_operator_moves_with_to_and_defaults_to_float32_on_cpu():
    op = make_degradation("deblur_aniso", 8)
    assert op.singulars().dtype == torch.float32 and op.v_h.device.type == "cpu"
    op64 = op.to(F64)
    assert op64.v_h.dtype == F64 and op64.singulars().dtype == F64
    inp = make_degradation("inp", 8).to(F64)
    assert inp.mask.dtype == torch.bool and inp._order.dtype == torch.long


def python_lines(work) -> int:
    """How many lines of Python run while ``work()`` runs (counted with ``sys.settrace``)."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += event == "line"
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(previous)
    return count


def test_construction_is_vectorised_at_256():
    """The reference built its inpainting index list in a Python loop over every entry, 196,608 at
    256x256x3 (tens of seconds). A counted budget, not a timed one: building any operator at 256 runs
    at most 5,000 lines of Python (measured: 440 to 841), where such a loop runs one per entry."""
    for name in NAMES:
        params = EXAMPLE_PARAMS.get(name, lambda h, w: {})(256, 256)
        make_degradation(name, 256, **params)  # imports and caches out of the count
        lines = python_lines(lambda: make_degradation(name, 256, **params))  # noqa: B023 (called at once)
        assert lines < 5_000, (name, lines)


# -- errors that say what to do -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size, params, message",
    [
        ("sr4", 30, {}, r"factor 4 does not divide the image size 30x30; factors that do: sr2, sr3, sr5, sr6, "
                        r"sr10, sr15$"),
        ("sr5", 256, {}, r"factor 5 does not divide the image size 256x256; factors that do: sr2, sr4, sr8, "
                         r"sr16, sr32, sr64, sr128$"),
        ("sr_bicubic16", 8, {}, "does not divide the image size 8x8; factors that do: sr_bicubic2, sr_bicubic4$"),
        ("sr2", 7, {}, "does not divide the image size 7x7; no factor of 2 or more divides both 7 and 7"),
        ("sr_4", 32, {}, r"Unknown degradation 'sr_4'.*Did you mean 'sr4'.*Known: deno, sr2"),
        ("blur", 32, {}, r"Known: .*deblur_uni"),
        ("sr1", 32, {}, "at least 2"),
        ("inp_mask", 16, {"mask": np.ones((8, 8))}, r"shape \[8, 8\].*\[16, 16\].*Resize"),
        ("inp_mask", 16, {"mask": np.zeros((16, 16))}, "keeps no pixel"),
        ("inp_mask", 16, {}, r"needs mask=\.\.\."),
        ("deblur", 16, {}, "kernel_h"),
        ("deblur", 16, {"kernel": [[0.5, 0.5]]}, "1-D"),
        ("deblur_uni", 16, {"sigma": 3}, "does not take sigma; it takes taps"),
        ("cs2", 12, {}, "power of two"),
        ("inp", 16, {"missing": 1.0}, "fraction"),
        ("inp_box", 16, {"box": 16}, "leaves no pixel"),
    ],
)
def test_impossible_requests_raise_degradation_errors(name, size, params, message):
    with pytest.raises(DegradationError, match=message):
        make_degradation(name, size, **params)
    assert issubclass(DegradationError, ValueError)


def test_color_needs_channels_and_inputs_need_their_size():
    with pytest.raises(DegradationError, match="at least 2 channels"):
        make_degradation("color", 8, channels=1)
    op = make_degradation("sr2", 8)
    with pytest.raises(DegradationError, match=r"sr2.H takes .*length 192.*\[B, 3, 8, 8\].*\[3, 8, 8\]"):
        op.H(torch.zeros(3, 8, 8))
    with pytest.raises(DegradationError, match="Ut takes a batch of vectors of length 48"):
        op.Ut(torch.zeros(1, 47))


@pytest.mark.parametrize("n", [64, 65, 128, 301])
@pytest.mark.parametrize("kernel", ["gauss", "uniform", "asymmetric"])
def test_the_1d_factors_of_large_blurs_are_exact_whichever_way_they_are_computed(n, kernel):
    """Sides of 64 and more take the cheap paths: a symmetric, centrosymmetric blur split into two
    half-size eigenproblems, an asymmetric one by its SVD; both give the exact decomposition."""
    from ddrm_helpers.factors import correlation_matrix as _correlation_matrix
    from ddrm_helpers.factors import svd_with_numerical_zeros as _svd_with_numerical_zeros

    taps = {"gauss": gaussian(3.0, 7), "uniform": torch.full((9,), 1 / 9, dtype=F64),
            "asymmetric": torch.tensor([0.1, 0.5, 0.3, 0.1], dtype=F64)}[kernel]
    a = _correlation_matrix(taps, n)
    u, s, v = _svd_with_numerical_zeros(a)
    eye = torch.eye(n, dtype=F64)
    assert torch.allclose(u.T @ u, eye, atol=1e-12) and torch.allclose(v.T @ v, eye, atol=1e-12)
    assert relative(u @ torch.diag(s) @ v.T, a) < 1e-12
    assert bool((s[:-1] >= s[1:]).all())  # decreasing, as an SVD gives them
    assert torch.allclose(s, torch.linalg.svdvals(a), atol=1e-12)
