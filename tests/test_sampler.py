"""The DDRM sampler against an independent, coordinate-by-coordinate implementation of the paper's
equations, with a Gaussian prior whose noise predictor is exact, and the properties DDRM promises."""

import copy
import doctest
import math

import pytest
import torch

from ddrm_helpers import (
    Degradation,
    SamplingError,
    ddrm_sample,
    degradations,
    make_degradation,
    sampler,
    schedule,
    sigma_0_from_sigma_y,
    validate,
)
from ddrm_helpers.schedule import alphas_cumprod, linear_betas, timestep_sequence

F64 = torch.float64
ABAR = alphas_cumprod(linear_betas()).tolist()  # float64, from the schedule's definition


class Rotated(Degradation):
    """``H = diag(s) V^T`` with V a fixed random rotation of the 8 pixels of a 1x2x4 image: a
    diagonal problem in its SVD. M = 6 singular values (one of them 0), and 2 unseen directions."""

    name = "rotated"
    SINGULARS = [2.0, 1.0, 0.5, 0.2, 0.05, 0.0]

    def __init__(self):
        super().__init__((1, 2, 4), torch.tensor(self.SINGULARS, dtype=F64))
        q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(5), dtype=F64))
        self.register_buffer("q", q)

    def _v(self, z):
        return z @ self.q.T

    def _vt(self, x):
        return x @ self.q


class GaussianPrior:
    """x_0 ~ N(mu, diag(var)) per pixel: ``E[x_0 | x_t]`` and so the noise predictor are exact,
    ``eps(x_t, t) = (x_t - sqrt(abar_t) E[x_0 | x_t]) / sqrt(1 - abar_t)``."""

    def __init__(self, shape, dtype=F64, seed=1):
        generator = torch.Generator().manual_seed(seed)
        self.mu = (torch.rand(1, *shape, generator=generator, dtype=F64) - 0.5).to(dtype)
        self.var = (0.2 + torch.rand(1, *shape, generator=generator, dtype=F64)).to(dtype)
        self.abar = torch.tensor(ABAR, dtype=dtype)
        self.calls = []

    def __call__(self, x, t, classes=None):
        self.calls.append((t.clone(), classes))
        a = self.abar[t.long()].view(-1, 1, 1, 1)
        posterior_mean = self.mu + a.sqrt() * self.var / (a * self.var + 1 - a) * (x - a.sqrt() * self.mu)
        return (x - a.sqrt() * posterior_mean) / (1 - a).sqrt()


class LinearClassifier:
    """logits = x W: the gradient of log softmax(logits)[c] is ``W[:, c] - W softmax(logits)``."""

    def __init__(self, n, k=4, dtype=F64):
        self.w = torch.randn(n, k, generator=torch.Generator().manual_seed(2), dtype=F64).to(dtype)
        self.seen = []

    def __call__(self, x, t):
        self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.w

    def gradient(self, x, classes):  # for the independent implementation
        p = torch.softmax(x.flatten(1) @ self.w, dim=1)
        return (self.w[:, classes].T - p @ self.w.T).reshape(x.shape)


def paper_ddrm(model, y, sigma_0, steps, eta, eta_b, generator, classifier=None, classes=None, scale=1.0):
    """DDRM as the paper writes it, one coordinate at a time, for the ``Rotated`` problem (U = I).

    Noise: one image-shaped [B, C, H, W] normal for x_T, then one per step, from ``generator``,
    carried to the spectral domain by V^T, as documented.
    Returns the output, the x_t the network saw, and how often each case of eq. 8 ran.
    """
    op = Rotated()
    batch, n, q = y.shape[0], 8, op.q
    s = Rotated.SINGULARS + [0.0, 0.0]
    ybar = [[float(y[b, i]) / s[i] if s[i] > 0 else 0.0 for i in range(n)] for b in range(batch)]
    times = [i * 1000 // steps for i in range(steps)]

    def sigma(t):
        return 0.0 if t < 0 else math.sqrt((1 - ABAR[t]) / ABAR[t])

    z = torch.randn(batch, 1, 2, 4, generator=generator, dtype=F64).reshape(batch, n) @ q
    big = sigma(times[-1])
    xbar = torch.zeros(batch, n, dtype=F64)
    for b in range(batch):
        for i in range(n):
            if s[i] > 0 and big >= sigma_0 / s[i]:
                xbar[b, i] = ybar[b][i] + math.sqrt(big**2 - sigma_0**2 / s[i] ** 2) * z[b, i]
            else:
                xbar[b, i] = big * z[b, i]
    seen, cases = [], {"missing": 0, "less noisy than y": 0, "noisier than y": 0}
    for k in reversed(range(steps)):
        t, t_next = times[k], times[k - 1] if k > 0 else -1
        a = ABAR[t]
        x_t = (math.sqrt(a) * xbar @ q.T).reshape(batch, 1, 2, 4)
        seen.append(x_t)
        t_batch = torch.full((batch,), float(t), dtype=F64)
        eps = model(x_t, t_batch) if classes is None else model(x_t, t_batch, classes)
        if classifier is not None:
            eps = eps - math.sqrt(1 - a) * scale * classifier.gradient(x_t, classes)
        x0 = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x0bar = x0.reshape(batch, n) @ q
        z = torch.randn(batch, 1, 2, 4, generator=generator, dtype=F64).reshape(batch, n) @ q
        now, nxt = sigma(t), sigma(t_next)
        new = torch.zeros(batch, n, dtype=F64)
        for b in range(batch):
            for i in range(n):
                x0_i, noise = float(x0bar[b, i]), float(z[b, i])
                if s[i] == 0:
                    cases["missing"] += 1
                    direction = (float(xbar[b, i]) - x0_i) / now
                    new[b, i] = x0_i + math.sqrt(1 - eta**2) * nxt * direction + eta * nxt * noise
                elif nxt < sigma_0 / s[i]:
                    cases["less noisy than y"] += 1
                    direction = (ybar[b][i] - x0_i) / (sigma_0 / s[i])
                    new[b, i] = x0_i + math.sqrt(1 - eta**2) * nxt * direction + eta * nxt * noise
                else:
                    cases["noisier than y"] += 1
                    spread = math.sqrt(nxt**2 - sigma_0**2 / s[i] ** 2 * eta_b**2)
                    new[b, i] = (1 - eta_b) * x0_i + eta_b * ybar[b][i] + spread * noise
        xbar = new
    return (xbar @ q.T).reshape(batch, 1, 2, 4), seen, cases


def rotated_measurement(sigma_0, seed=3):
    op = Rotated()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 2, 4, generator=generator, dtype=F64) * 2 - 1
    return op, op.H(x) + sigma_0 * torch.randn(2, 6, generator=generator, dtype=F64)


@pytest.mark.parametrize(
    "sigma_0, eta, eta_b, steps",
    [(0.1, 0.85, 1.0, 20), (0.0, 0.85, 1.0, 20), (0.3, 0.5, 0.7, 7), (0.05, 1.0, 0.0, 13),
     (0.2, 0.0, 1.0, 1)],
)
def test_sampler_follows_the_paper_coordinate_by_coordinate(sigma_0, eta, eta_b, steps):
    op, y = rotated_measurement(sigma_0)
    seen = []
    out = ddrm_sample(
        GaussianPrior((1, 2, 4)), y, op, sigma_0, steps=steps, eta=eta, eta_b=eta_b,
        generator=torch.Generator().manual_seed(11), callback=lambda d: seen.append(d["x_t"]), progress=False,
    )
    expected, expected_seen, cases = paper_ddrm(
        GaussianPrior((1, 2, 4)), y, sigma_0, steps, eta, eta_b, torch.Generator().manual_seed(11)
    )
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)
    assert len(seen) == steps and all(torch.allclose(a, b, atol=1e-12) for a, b in zip(seen, expected_seen))
    if steps > 1 and sigma_0 > 0:
        assert all(cases.values()), cases  # every case of eq. 8 was exercised


def test_classifier_guidance_follows_the_paper_with_the_gradient_at_x_t():
    op, y = rotated_measurement(0.1)
    classes = torch.tensor([1, 3])
    classifier, record = LinearClassifier(8), []
    model = GaussianPrior((1, 2, 4))
    out = ddrm_sample(
        model, y, op, 0.1, steps=10, classifier=classifier, classes=classes, classifier_scale=2.5,
        generator=torch.Generator().manual_seed(4), callback=lambda d: record.append(d["x_t"]),
        progress=False,
    )
    expected, _, _ = paper_ddrm(
        GaussianPrior((1, 2, 4)), y, 0.1, 10, 0.85, 1.0, torch.Generator().manual_seed(4),
        classifier=classifier, classes=classes, scale=2.5,
    )
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)
    # The reference evaluated the classifier at the initial noise every step; ours sees each x_t.
    seen = classifier.seen[:10]
    assert len(seen) == 10 and all(torch.equal(a, b) for a, b in zip(seen, record))
    assert not torch.equal(seen[0], seen[-1])
    assert all(torch.equal(c, classes) for _, c in model.calls)  # class-conditional model call


def test_noiseless_inpainting_keeps_the_observed_pixels():
    for dtype, tolerance in ((F64, 1e-12), (torch.float32, 1e-6)):
        op = make_degradation("inp", 8, dtype=dtype)
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2 - 1
        out = ddrm_sample(GaussianPrior((3, 8, 8), dtype), op.H(x), op, 0.0, steps=10, progress=False)
        kept = op.mask.expand(2, 3, 8, 8)
        assert (out[kept] - x[kept]).abs().max() < tolerance
        assert (out[~kept] - x[~kept]).abs().max() > 0.01  # the rest was generated, not copied


def test_noiseless_super_resolution_reproduces_y():
    for name in ("sr4", "sr_bicubic4", "color", "cs4"):
        op = make_degradation(name, 16, dtype=F64)
        x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
        y = op.H(x)
        out = ddrm_sample(GaussianPrior((3, 16, 16)), y, op, 0.0, steps=8, progress=False)
        assert (op.H(out) - y).abs().max() < 1e-12, name


def test_noiseless_blur_in_float32_does_not_trust_tiny_singular_values():
    """deblur_aniso at 16x16 has singular values near 1e-9: dividing float32 rounding by them would
    give values in the thousands. The sampler treats those below sqrt(eps) * max(s) as unseen."""
    op = make_degradation("deblur_aniso", 16)
    assert float(op.singulars().min()) < 1e-6
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.H(x)
    out = ddrm_sample(GaussianPrior((3, 16, 16), torch.float32), y, op, 0.0, steps=10, progress=False)
    assert out.abs().max() < 5
    assert (op.H(out) - y).abs().max() < 1e-3


def test_same_generator_same_output_and_another_seed_differs():
    op = make_degradation("sr2", 8)
    y = op.H(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    model = GaussianPrior((3, 8, 8), torch.float32)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return ddrm_sample(model, y, op, 0.1, steps=5, generator=generator, progress=False)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 333, 999, 1000])
def test_the_step_count_is_exact(steps):
    op = make_degradation("inp", 4, channels=1, dtype=F64)
    model = GaussianPrior((1, 4, 4))
    ddrm_sample(model, op.H(torch.zeros(1, 1, 4, 4, dtype=F64)), op, 0.0, steps=steps, progress=False)
    times = [int(t[0]) for t, _ in model.calls]
    assert len(times) == steps
    assert times == sorted(set(times), reverse=True) == timestep_sequence(steps)[::-1]
    assert times[-1] == 0 and times[0] <= 999


def test_timestep_sequence_matches_the_reference_where_steps_divide_1000():
    for steps in range(1, 1001):
        sequence = timestep_sequence(steps)
        assert len(sequence) == steps and sequence == sorted(set(sequence)) and 0 == sequence[0] < 1000
        reference = list(range(0, 1000, 1000 // steps))
        assert (sequence == reference) == (1000 % steps == 0)
    assert len(range(0, 1000, 1000 // 7)) == 8  # the reference's 7 "steps"
    with pytest.raises(SamplingError, match="between 1 and 1000"):
        timestep_sequence(0)


def test_learned_sigma_channels_are_dropped():
    op = make_degradation("sr2", 8, dtype=F64)
    y = op.H(torch.rand(1, 3, 8, 8, dtype=F64))
    three = GaussianPrior((3, 8, 8))

    def six(x, t):
        return torch.cat([three(x, t), torch.full_like(x, 123.0)], dim=1)

    def run(model):
        generator = torch.Generator().manual_seed(0)
        return ddrm_sample(model, y, op, 0.1, steps=5, generator=generator, progress=False)

    assert torch.equal(run(three), run(six))


def test_learned_sigma_when_told_is_checked_against_the_output():
    op = make_degradation("sr2", 8, dtype=F64)
    y = op.H(torch.rand(1, 3, 8, 8, dtype=F64))
    three = GaussianPrior((3, 8, 8))

    def six(x, t):
        return torch.cat([three(x, t), torch.full_like(x, 123.0)], dim=1)

    def run(model, learned_sigma):
        generator = torch.Generator().manual_seed(0)
        return ddrm_sample(model, y, op, 0.1, steps=3, generator=generator, progress=False,
                           learned_sigma=learned_sigma)

    assert torch.equal(run(six, True), run(three, False)) and torch.equal(run(six, True), run(six, None))
    with pytest.raises(SamplingError, match="returned 6 channels for x_t with 3.*but learned_sigma=False"):
        run(six, False)
    with pytest.raises(SamplingError, match=r"shape \[1, 3, 8, 8\].*but learned_sigma=True.*6 channels"):
        run(three, True)
    with pytest.raises(SamplingError, match="learned_sigma='yes'"):
        run(three, "yes")


def test_the_schedule_given_is_the_one_used():
    """A schedule of 500 steps up to 0.03: the timesteps and noise levels are its own."""
    op = make_degradation("sr2", 8, dtype=F64)
    y = op.H(torch.rand(1, 3, 8, 8, dtype=F64))
    betas = linear_betas(500, 1e-4, 0.03)
    abar = alphas_cumprod(betas)
    seen = []
    ddrm_sample(lambda x, t: torch.zeros_like(x), y, op, 0.1, steps=4, betas=betas, progress=False,
                callback=lambda info: seen.append((info["t"], info["sigma"])))
    assert [t for t, _ in seen] == [375, 250, 125, 0]
    assert [sigma for _, sigma in seen] == pytest.approx([math.sqrt((1 - abar[t]) / abar[t]) for t, _ in seen])
    with pytest.raises(SamplingError, match="between 1 and 500"):
        ddrm_sample(lambda x, t: torch.zeros_like(x), y, op, 0.1, steps=501, betas=betas, progress=False)


def test_nothing_is_mutated():
    op = make_degradation("deblur_gauss", 8)
    before = copy.deepcopy(dict(op.named_buffers()))
    y = op.H(torch.rand(1, 3, 8, 8))
    y_before, sigma_0 = y.clone(), torch.tensor(0.05)
    ddrm_sample(GaussianPrior((3, 8, 8), torch.float32), y, op, sigma_0, steps=4, progress=False)
    assert torch.equal(y, y_before) and torch.equal(sigma_0, torch.tensor(0.05))
    assert all(torch.equal(b, before[k]) for k, b in op.named_buffers())


def test_callback_reports_each_step():
    op = make_degradation("sr2", 8, dtype=F64)
    y = op.H(torch.rand(1, 3, 8, 8, dtype=F64))
    reports = []
    ddrm_sample(GaussianPrior((3, 8, 8)), y, op, 0.1, steps=4, callback=reports.append, progress=False)
    assert [r["i"] for r in reports] == [0, 1, 2, 3] and [r["t"] for r in reports] == [750, 500, 250, 0]
    for r in reports:
        a = ABAR[r["t"]]
        assert torch.allclose(r["x0"], (r["x_t"] - math.sqrt(1 - a) * r["eps"]) / math.sqrt(a))
        assert r["sigma"] == pytest.approx(math.sqrt((1 - a) / a))


def test_no_tensor_value_is_read_inside_the_loop():
    """On the meta device tensors have no values: .item(), .cpu() or an `if` on a tensor would
    fail. So the loop does no host copy or synchronisation on a GPU either."""
    op = make_degradation("deblur_uni", 8).to("meta")
    y = torch.empty(2, op.measurement_dim, device="meta")
    classifier = LinearClassifier(192, dtype=torch.float32)
    classifier.w = classifier.w.to("meta")
    out = ddrm_sample(
        lambda x, t, c: torch.zeros_like(x), y, op, 0.1, steps=3, classifier=classifier,
        classes=torch.zeros(2, dtype=torch.long, device="meta"), progress=False,
    )
    assert out.device.type == "meta" and out.shape == (2, 3, 8, 8)


def test_sigma_y_is_converted_to_the_model_range():
    assert sigma_0_from_sigma_y(0.05) == pytest.approx(0.1)
    assert sigma_0_from_sigma_y(0) == 0.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"steps": 0}, "between 1 and 1000"),
        ({"steps": 1001}, "between 1 and 1000"),
        ({"eta": 1.5}, r"eta is a number in \[0, 1\] \(the paper uses eta=0\.85, eta_b=1\); got 1\.5"),
        ({"eta": math.nan}, r"eta is a number in \[0, 1\].*got nan"),
        ({"eta_b": 1.01}, r"eta_b is a number in \[0, 1\].*got 1\.01"),
        ({"sigma_0": math.inf}, "sigma_0 is a noise std.*got inf"),
        ({"sigma_0": -0.1}, ">= 0"),
        ({"classifier": lambda x, t: x.flatten(1)}, "needs classes"),
        ({"classes": torch.zeros(3, dtype=torch.long)}, r"\[1\] tensor"),
        ({"y": torch.zeros(1, 5)}, "5 entries per image, but sr2 measures 48"),
        ({"y": torch.zeros(1, 48, dtype=F64)}, r"degradation.to\(y.device, y.dtype\)"),
        ({"model": lambda x, t: x[:, :1]}, "noise prediction"),
    ],
)
def test_bad_arguments_raise_sampling_errors(change, message):
    op = make_degradation("sr2", 8)
    args = {"model": lambda x, t, *c: torch.zeros_like(x), "y": torch.zeros(1, 48), "sigma_0": 0.0}
    args.update(change)
    model, y, sigma_0 = args.pop("model"), args.pop("y"), args.pop("sigma_0")
    with pytest.raises(SamplingError, match=message):
        ddrm_sample(model, y, op, sigma_0, progress=False, **args)


@pytest.mark.parametrize("module", [degradations, sampler, schedule, validate])
def test_docstring_examples_run(module):
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
