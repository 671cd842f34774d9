"""Break one convention at a time in a scratch copy of the package and see which prior checks catch it.

    python scripts/mutate_prior_checks.py                 # every mutation, a table at the end
    python scripts/mutate_prior_checks.py range schedule  # some of them

Each mutation copies the checkout to a temporary folder, edits one line there (never here), and runs
tests/test_learned_prior.py and ``python -m ddrm_helpers.selftest`` with PYTHONPATH pointing at
the copy. A check "catches" a mutation when it fails. docs/ddrm.md ("Does it really restore?")
lists the outcome.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent

# name: (what it means, file, the line's text, what it becomes)
MUTATIONS = {
    "none": ("nothing changed: the reference figures", None, None, None),
    "range": ("images in [0, 1] instead of [-1, 1] (the loader)", "ddrm_helpers/images.py",
              "array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0",
              "array = np.asarray(image, dtype=np.float32) / 255.0"),
    "schedule": ("the default 1000-step schedule instead of the config's (the engine)", "ddrm_helpers/engine.py",
                 "betas=betas_from_config(config), learned_sigma=learns_sigma(config),",
                 "betas=None, learned_sigma=learns_sigma(config),"),
    "t-stride": ("the network told the next (lower) timestep: one sampling stride off", "ddrm_helpers/sampler.py",
                 "t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)",
                 "t_batch = torch.full((batch,), float(max(t_next, 0)), device=device, dtype=dtype)"),
    "t-unit": ("the network given t / T (continuous time in [0, 1]) instead of the index", "ddrm_helpers/sampler.py",
               "t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)",
               "t_batch = torch.full((batch,), float(t) / len(schedule), device=device, dtype=dtype)"),
    "t-plus-1": ("the network given t + 1 (1-based timesteps)", "ddrm_helpers/sampler.py",
                 "t_batch = torch.full((batch,), float(t), device=device, dtype=dtype)",
                 "t_batch = torch.full((batch,), float(t + 1), device=device, dtype=dtype)"),
    "sigma-units": ("sigma_y used as sigma_0 (noise in [0, 1] units on [-1, 1] images)", "ddrm_helpers/sampler.py",
                    "return 2.0 * float(sigma_y)", "return float(sigma_y)"),
    "sigma-double": ("sigma_0 = 4 sigma_y (converted twice)", "ddrm_helpers/sampler.py",
                     "return 2.0 * float(sigma_y)", "return 4.0 * float(sigma_y)"),
    "untrained": ("the shipped checkpoint replaced by untrained weights (registry updated to match)", None, None, None),
}


def copy_checkout(target: Path) -> None:
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv*", ".pytest_cache",
                                                                 ".ruff_cache", "exp"))
    shutil.copytree(REPO / "exp" / "datasets", target / "exp" / "datasets")


def mutate(root: Path, name: str) -> None:
    _, file, old, new = MUTATIONS[name]
    if name == "none":
        return
    if name == "untrained":
        replace_checkpoint(root)
        return
    path = root / file
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: expected the line once in {file}, found it {text.count(old)} times")
    path.write_text(text.replace(old, new))


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


def run_checks(root: Path) -> tuple[dict[str, str], int]:
    """Each test's outcome (passed, failed, error) and the selftest's exit code; prints what the tests measured."""
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
    return outcomes, selftest.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"mutations (default: all): {', '.join(MUTATIONS)}")
    names = parser.parse_args(argv).names or list(MUTATIONS)
    unknown = [name for name in names if name not in MUTATIONS]
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(MUTATIONS)}")
    for name in names:
        print(f"{name}: {MUTATIONS[name][0]}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as folder:
            root = Path(folder) / "checkout"
            copy_checkout(root)
            mutate(root, name)
            outcomes, selftest_rc = run_checks(root)
        failed = sorted(test for test, state in outcomes.items() if state != "passed")
        print(f"  caught by {len(failed)} of {len(outcomes)} tests: {', '.join(failed) or 'none'}; "
              f"python -m ddrm_helpers.selftest exits {selftest_rc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
