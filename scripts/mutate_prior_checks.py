"""Break one convention at a time in a scratch copy of the package and see which prior checks catch it.

    python scripts/mutate_prior_checks.py                 # every mutation, a table at the end
    python scripts/mutate_prior_checks.py range schedule  # some of them
    python scripts/mutate_prior_checks.py --check         # only that every pattern is still found

Each mutation copies the checkout to a temporary folder, replaces exact pieces of text there (never
here), and runs tests/test_learned_prior.py and ``python -m ddrm_helpers.selftest`` with PYTHONPATH
pointing at the copy. A check "catches" a mutation when it fails. docs/ddrm.md ("Does it really
restore?") lists the outcome. A piece of text that is not found exactly once stops the script with
the mutation's name and the file: after the code changes, update the pattern here, never guess.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
SAMPLER = "ddrm_helpers/sampler.py"
ENGINE = "ddrm_helpers/engine.py"


@dataclass(frozen=True)
class Mutation:
    """What a mutation means, the file it edits, and the (exact text, replacement) pairs it makes there."""

    meaning: str
    file: str | None = None
    edits: tuple[tuple[str, str], ...] = ()


T_BATCH = "t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)"
MUTATIONS = {
    "none": Mutation("nothing changed: the reference figures"),
    "range": Mutation("images in [0, 1] instead of [-1, 1] (the loader)", "ddrm_helpers/images.py", (
        ("array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0",
         "array = np.asarray(image, dtype=np.float32) / 255.0"),)),
    "schedule": Mutation("the default 1000-step schedule instead of the config's (the engine)", ENGINE, (
        ("betas=betas_from_config(config), learned_sigma=learns_sigma(config),",
         "betas=None, learned_sigma=learns_sigma(config),"),)),
    "t-stride": Mutation("the network told the next (lower) timestep: one sampling stride off", SAMPLER, (
        (T_BATCH, "t_batch = torch.full((batch,), float(max(t_next, 0)), device=device, dtype=dtype)"),)),
    "t-unit": Mutation("the network given t / T (continuous time in [0, 1]) instead of the index", SAMPLER, (
        (T_BATCH, "t_batch = torch.full((batch,), float(t) / len(schedule), device=device, dtype=dtype)"),)),
    "t-plus-1": Mutation("the network given t + 1 (1-based timesteps)", SAMPLER, (
        (T_BATCH, "t_batch = torch.full((batch,), float(t + 1), device=device, dtype=dtype)"),)),
    "sigma-units": Mutation("sigma_y used as sigma_0 (noise in [0, 1] units on [-1, 1] images)", SAMPLER, (
        ("return 2.0 * float(sigma_y)", "return float(sigma_y)"),)),
    "sigma-double": Mutation("sigma_0 = 4 sigma_y (converted twice)", SAMPLER, (
        ("return 2.0 * float(sigma_y)", "return 4.0 * float(sigma_y)"),)),
    "eta-swap": Mutation("eta and eta_b swapped in the update (the sampler)", SAMPLER, (
        ("eta_b * ybar + (1 - eta_b) * x0bar,", "eta * ybar + (1 - eta) * x0bar,"),
        ("x0bar + math.sqrt(1 - eta**2) * sigma_next * direction,",
         "x0bar + math.sqrt(1 - eta_b**2) * sigma_next * direction,"),
        ("(sigma_next**2 - eta_b**2 * y_noise_sq).clamp_min(0).sqrt(),",
         "(sigma_next**2 - eta**2 * y_noise_sq).clamp_min(0).sqrt(),"),
        ("torch.full_like(s, eta * sigma_next),", "torch.full_like(s, eta_b * sigma_next),"),
    )),
    "noise-twice": Mutation("the measurement noise added twice (the engine)", ENGINE, (
        ("degradation.H(inputs.images.to(device)) + noise",
         "degradation.H(inputs.images.to(device)) + noise + noise"),)),
    "s-direction": Mutation("s_i dropped from the less-noisy-than-y direction: (ybar - x0bar) / sigma_0", SAMPLER, (
        ("(uty - s * x0bar) * inv_sigma_0", "(ybar - x0bar) * inv_sigma_0"),)),
    "s-variance": Mutation("the noise of ybar taken as sigma_0 instead of sigma_0 / s_i", SAMPLER, (
        ("y_noise_sq = (sigma_0 * s_inv) ** 2", "y_noise_sq = torch.full_like(s_inv, sigma_0**2)"),)),
    "s-case": Mutation("s_i dropped from the case test: sigma' < sigma_0 instead of s_i sigma' < sigma_0", SAMPLER, (
        ("below_y = observed & (s * sigma_next < sigma_0)", "below_y = observed & (sigma_next < sigma_0)"),)),
    "untrained": Mutation("the shipped checkpoint replaced by untrained weights (registry updated to match)"),
}


def copy_checkout(target: Path) -> None:
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv*", ".pytest_cache",
                                                                 ".ruff_cache", "exp"))
    shutil.copytree(REPO / "exp" / "datasets", target / "exp" / "datasets")


def mutated_text(name: str, text: str) -> str:
    """``text`` (the file of mutation ``name``) with its edits made; each piece must be there exactly once."""
    mutation = MUTATIONS[name]
    for old, new in mutation.edits:
        found = text.count(old)
        if found != 1:
            raise SystemExit(f"{name}: expected this text once in {mutation.file}, found it {found} times "
                             f"(update scripts/mutate_prior_checks.py): {old!r}")
        text = text.replace(old, new)
    return text


def mutate(root: Path, name: str) -> None:
    if name == "untrained":
        replace_checkpoint(root)
        return
    file = MUTATIONS[name].file
    if file is not None:
        path = root / file
        path.write_text(mutated_text(name, path.read_text()))


def replace_checkpoint(root: Path) -> None:
    code = (
        "import hashlib, io, re, sys, torch\n"
        "from pathlib import Path\n"
        "from ddrm_helpers.config import load_config\n"
        "from ddrm_helpers.models import build_model\n"
        "root = Path(sys.argv[1]) / 'ddrm_helpers' / 'prior'\n"
        "torch.manual_seed(0)\n"
        "buffer = io.BytesIO(); torch.save(build_model(load_config(root / 'digits.yml')).state_dict(), buffer)\n"
        "data = buffer.getvalue(); (root / 'digits' / 'digits_ddpm.pt').write_bytes(data)\n"
        "registry = (root / 'registry.yml').read_text()\n"
        "registry = re.sub(r'sha256: [0-9a-f]{64}', 'sha256: ' + hashlib.sha256(data).hexdigest(), registry)\n"
        "registry = re.sub(r'size: [0-9]+', f'size: {len(data)}', registry)\n"
        "(root / 'registry.yml').write_text(registry)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, env={**os.environ, "PYTHONPATH": str(root)})


def run_checks(root: Path) -> tuple[dict[str, str], int, str]:
    """Each test's outcome (passed, failed, error), the selftest's exit code and its failed checks;
    prints what the tests measured."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    report = root / "report.xml"
    tests = subprocess.run([sys.executable, "-m", "pytest", "tests/test_learned_prior.py", "-s", "-q", "-p",
                            "no:cacheprovider", "-o", "addopts=", f"--junitxml={report}"],
                           cwd=root, env=env, capture_output=True, text=True)
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[case.get("name")] = "failed" if failed else "passed"
    for line in tests.stdout.splitlines():
        if "measured " in line:
            print("   ", line[line.index("measured "):], flush=True)
    selftest = subprocess.run([sys.executable, "-m", "ddrm_helpers.selftest", "--device", "cpu"], cwd=root, env=env,
                              capture_output=True, text=True)
    print("   ", selftest.stdout.replace("\n", "\n    ").rstrip(), flush=True)
    verdict = selftest.stdout.strip().splitlines()[-1] if selftest.stdout.strip() else selftest.stderr.strip()
    return outcomes, selftest.returncode, verdict


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"mutations (default: all): {', '.join(MUTATIONS)}")
    parser.add_argument("--check", action="store_true", help="only check that every edit's text is found once")
    args = parser.parse_args(argv)
    names = args.names or list(MUTATIONS)
    unknown = [name for name in names if name not in MUTATIONS]
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(MUTATIONS)}")
    if args.check:
        for name in names:
            if MUTATIONS[name].file is not None:
                mutated_text(name, (REPO / MUTATIONS[name].file).read_text())
        print(f"every edit of {len(names)} mutation(s) is found exactly once")
        return 0
    for name in names:
        print(f"{name}: {MUTATIONS[name].meaning}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as folder:
            root = Path(folder) / "checkout"
            copy_checkout(root)
            mutate(root, name)
            outcomes, selftest_rc, verdict = run_checks(root)
        failed = sorted(test for test, state in outcomes.items() if state != "passed")
        print(f"  caught by {len(failed)} of {len(outcomes)} tests: {', '.join(failed) or 'none'}; "
              f"python -m ddrm_helpers.selftest exits {selftest_rc}: {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
