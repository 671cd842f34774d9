"""The self-test's checks (ddrm_helpers/prior_checks.py) and its messages, each against a run, a
prior folder or an engine that is wrong in one way.

The checks that need no margin: the measurement noise of the std sigma_y claims (a tolerance from
the number of draws), noiseless measurements kept. The ones with a threshold: the restorations
of grey digits stay grey. Then the same checks through run_config with the engine broken the way
scripts/mutate_prior_checks.py breaks it (sigma_y used as sigma_0, the default schedule, eta and
eta_b swapped), and the one line the self-test says when its prior is missing or altered, with a
command that works.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddrm_helpers import engine, prior_checks
from ddrm_helpers import selftest as selftest_module
from ddrm_helpers.degradations import make_degradation
from ddrm_helpers.images import load_images
from ddrm_helpers.models import load_pretrained
from ddrm_helpers.prior_checks import FLOAT32_TOLERANCE, GREY_LIMIT, NOISE_Z, colour, noise_statistics
from ddrm_helpers.sampler import ddrm_sample
from ddrm_helpers.schedule import linear_betas
from ddrm_helpers.selftest import CHECKS, PRIOR_DIR, heldout_digits, prior_config, prior_problem, prior_store, run_check


@pytest.fixture(scope="module")
def digits():
    return load_images(heldout_digits(16)[0], 8)


def check(task: str, sigma_y: float):
    return next(c for c in CHECKS if (c.task, c.sigma_y) == (task, sigma_y))


# -- the measurement noise ------------------------------------------------------------------------


@pytest.mark.parametrize("factor, passes", [(1.0, True), (2.0, False), (np.sqrt(2), False), (0.5, False),
                                            (1.1, False), (0.9, False)])
def test_the_noise_check_passes_only_noise_of_the_std_sigma_y_claims(digits, factor, passes):
    """Denoising at sigma_y 0.1: 3072 draws. Noise added twice (x2 or x sqrt 2), sigma_y taken as
    sigma_0 (x0.5), or 10% off either way: refused."""
    noise = 2 * 0.1 * factor * torch.randn(digits.shape, generator=torch.Generator().manual_seed(0))
    run = SimpleNamespace(task="deno", original=digits, degraded=digits + noise, sigma_y=0.1)
    found = prior_checks.measurement_noise(run)
    assert found.passed is passes, found
    assert found.std == pytest.approx(0.1 * factor, rel=0.03) and found.count == digits.numel()
    if not passes:
        assert f"std {found.std:.4f}, not the 0.1 that sigma_y claims" in found.problem()


def test_the_noise_check_reads_super_resolutions_low_resolution_measurement(digits):
    op = make_degradation("sr4", 8, channels=3)
    y = op.H(digits) + 2 * 0.05 * torch.randn(16, op.measurement_dim, generator=torch.Generator().manual_seed(1))
    run = SimpleNamespace(task="sr4", original=digits, degraded=op.degraded_image(y), sigma_y=0.05)
    assert prior_checks.measurement_noise(run).passed and prior_checks.measurement_noise(run).count == 16 * 12
    run.degraded = op.degraded_image(op.H(digits) + 2 * (y - op.H(digits)))
    assert not prior_checks.measurement_noise(run).passed


def test_the_noise_tolerance_comes_from_the_number_of_draws():
    """Over 1000 runs of the fewest draws the self-test takes (96: 8 digits of sr4), both statistics
    are standard normals (so |z| <= 5 fails by chance once in millions), and none fails; a mean off
    by a fifth of the std, or a std 20% off, fails at 3072 draws."""
    generator = torch.Generator().manual_seed(0)
    found = [noise_statistics(0.1 * torch.randn(96, generator=generator, dtype=torch.float64), 0.05)
             for _ in range(1000)]
    for z in ([f.z_spread for f in found], [f.z_mean for f in found]):
        assert abs(np.mean(z)) < 0.1 and 0.9 < np.std(z) < 1.1
    assert all(f.passed for f in found) and max(abs(f.z_spread) for f in found) < NOISE_Z
    noise = 0.2 * torch.randn(3072, generator=generator, dtype=torch.float64)
    assert noise_statistics(noise, 0.1).passed
    assert not noise_statistics(noise + 0.04, 0.1).passed
    assert not noise_statistics(noise * 1.2, 0.1).passed


def test_a_noiseless_measurement_must_hold_no_noise(digits):
    run = SimpleNamespace(task="deno", original=digits, degraded=digits.clone(), sigma_y=0.0)
    assert prior_checks.measurement_noise(run).passed
    run.degraded = digits + 1e-4
    found = prior_checks.measurement_noise(run)
    assert not found.passed and "a noiseless measurement holds noise" in found.problem()


# -- colour, and the measurements kept --------------------------------------------------------------


def test_colour_is_zero_for_grey_samples_and_grows_with_any_tint(digits):
    grey = digits[:, None].expand(-1, 3, -1, -1, -1).clone()
    assert colour(grey) < 1e-8  # the rounding of a mean of three equal numbers
    tinted = grey.clone()
    tinted[:, :, 0] += 0.03  # a red cast of 1.5% of the range: |0.02|, |-0.01| and |-0.01| from the grey
    assert colour(tinted) == pytest.approx(0.04 / 3, rel=1e-4) and colour(tinted) > GREY_LIMIT


def test_kept_pixels_must_stay_bit_for_bit(digits):
    samples = digits[:, None].repeat(1, 3, 1, 1, 1)
    run = SimpleNamespace(task="inp", original=digits, samples=samples)
    assert prior_checks.kept_exactly(run) == 0
    kept = make_degradation("inp", 8, channels=3).mask
    where = kept.nonzero()[0]
    samples[3, 1, where[0], where[1], where[2]] += 1e-6
    assert prior_checks.kept_exactly(run) == pytest.approx(1e-6, rel=0.2)


def test_reproduced_reads_the_samplers_unclipped_output_and_sees_x0_mixed_into_kept_coordinates(digits):
    """eta_b < 1 in a noiseless run (what eta and eta_b swapped give) mixes the network's x0 into
    coordinates that must be y: H x_hat = y no longer holds."""
    config = prior_config()
    networks = load_pretrained(config, device="cpu", paths=prior_store().paths(config, download=False, progress=False))
    for task in ("sr2", "deblur_gauss"):
        run = SimpleNamespace(task=task, original=digits, steps=20, eta=0.85, eta_b=1.0, seed=0)
        assert prior_checks.reproduced(networks, config, run, "cpu", digits=4) <= FLOAT32_TOLERANCE
        run.eta_b = 0.85
        assert prior_checks.reproduced(networks, config, run, "cpu", digits=4) > 100 * FLOAT32_TOLERANCE


# -- the checks through run_config, with the engine broken in one way --------------------------------


def test_sigma_y_used_as_sigma_0_shows_in_the_noise_though_the_run_is_consistent_with_itself(monkeypatch):
    monkeypatch.setattr(engine, "sigma_0_from_sigma_y", float)  # both the noise added and the sampler's
    outcome = run_check(check("deno", 0.1), heldout_digits(16)[0], device="cpu")
    assert outcome.gain >= outcome.check.margin  # its margin alone would pass it
    assert not outcome.passed and "the measurement noise has std 0.05" in "; ".join(outcome.problems)


def test_the_default_schedule_instead_of_the_configs_shows_as_colour(monkeypatch):
    monkeypatch.setattr(engine, "betas_from_config", lambda config: linear_betas())
    outcome = run_check(check("sr4", 0.05), heldout_digits(16)[0], device="cpu")
    assert outcome.gain >= outcome.check.margin and outcome.noise.passed
    assert not outcome.passed and outcome.colour > GREY_LIMIT and "came back coloured" in outcome.problems[0]


def test_eta_and_eta_b_swapped_change_the_kept_pixels(monkeypatch):
    def swapped(*args, eta, eta_b, **kwargs):
        return ddrm_sample(*args, eta=eta_b, eta_b=eta, **kwargs)

    monkeypatch.setattr(engine, "ddrm_sample", swapped)
    outcome = run_check(check("inp", 0.0), heldout_digits(16)[0], device="cpu")
    assert outcome.gain >= outcome.check.margin and outcome.colour <= GREY_LIMIT
    assert not outcome.passed and outcome.problems == [f"the kept pixels changed (by up to {outcome.consistency:.2g})"]


# -- a missing or altered prior: one line, what is wrong, a command that works -------------------------


@pytest.fixture
def prior_copy(tmp_path, monkeypatch):
    """A copy of the shipped prior, outside any git checkout, that the self-test uses."""
    root = tmp_path / "copy" / "ddrm_helpers" / "prior"
    shutil.copytree(PRIOR_DIR, root, ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setattr(selftest_module, "PRIOR_DIR", root)
    monkeypatch.setattr(selftest_module, "PRIOR_REGISTRY", root / "registry.yml")
    return root


def altered(file, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how == "one byte":
        data[len(data) // 2] ^= 1
        file.write_bytes(bytes(data))
    elif how == "truncated":
        file.write_bytes(bytes(data[:100_000]))
    else:
        file.unlink()


@pytest.mark.parametrize("how, said", [
    ("one byte", "is not the file that ships with the package: sha256 mismatch: expected cea75a5197a2f870"),
    ("truncated", "is not the file that ships with the package: incomplete: 100,000 bytes, expected 2,643,899 bytes"),
    ("missing", "is missing"),
])
def test_an_altered_or_missing_prior_is_one_line_saying_what_and_what_to_do(prior_copy, capsys, how, said):
    file = prior_copy / "digits" / "digits_ddpm.pt"
    altered(file, how)
    assert selftest_module.main(["--device", "cpu"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("DDRM self-test on cpu")
    assert out[1] == f"FAIL: the prior could not run: {file} {said}" + out[1].split(said, 1)[1]
    assert out[1].endswith("Reinstall the package from a fresh copy of the project (the prior's files, "
                           "ddrm_helpers/prior/, are part of it), then run the self-test again")
    assert "download" not in out[1] and "table" not in out[1]  # only what works here, nothing it did not print


def test_in_a_git_checkout_the_command_it_names_puts_the_prior_back(prior_copy, tmp_path):
    checkout = tmp_path / "copy"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for command in (["init", "-q"], ["add", "ddrm_helpers"], ["commit", "-q", "-m", "prior"]):
        subprocess.run([*git, *command], cwd=checkout, check=True, capture_output=True)
    altered(prior_copy / "digits" / "digits_ddpm.pt", "one byte")
    problem = prior_problem()
    command = problem.split("Put the shipped files back with `")[1].split("`")[0]
    assert command == f"git -C {shlex.quote(str(checkout))} checkout -- ddrm_helpers/prior"
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    assert prior_problem() is None
