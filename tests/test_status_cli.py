"""checkpoint_status, ensure_checkpoints and the download/status CLI, on a registry of small files."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from ddrm_helpers import cli
from ddrm_helpers.part_writer import PartFile
from ddrm_helpers.registry import load_registry
from ddrm_helpers.store import checkpoint_status, ensure_checkpoints

from .conftest import REPO
from .tiny_files import pinned_entry, random_bytes, state_dict_bytes, unpinned_entry, write_manifest, write_registry

pytestmark = pytest.mark.server

FILES = {
    "celeba_hq": ("celeba_hq.ckpt", "celeba"),
    "imagenet_256_uncond": ("256x256_diffusion_uncond.pt", "imagenet"),
    "imagenet_256_cond": ("256x256_diffusion.pt", "imagenet"),
}


@pytest.fixture
def small(server, tmp_path, monkeypatch):
    """The real registry's keys, with small files served locally; DDRM_REGISTRY points at it."""
    payloads = {key: random_bytes(200_000 + i, seed=i) for i, key in enumerate(FILES)}
    payloads["imagenet_256_classifier"] = state_dict_bytes()
    entries = {key: pinned_entry(file, subdir, payloads[key], [server.add(f"/{file}", payloads[key])])
               for key, (file, subdir) in FILES.items()}
    entries["imagenet_256_classifier"] = unpinned_entry(
        "256x256_classifier.pt", "imagenet", payloads["imagenet_256_classifier"],
        [server.add("/classifier", payloads["imagenet_256_classifier"])], write_manifest(tmp_path / "cls.json"))
    path = write_registry(tmp_path / "registry.yml", entries)
    monkeypatch.setenv("DDRM_REGISTRY", str(path))
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    return payloads, tmp_path / "ckpts"


def states(status):
    return {(row.config, row.key): row.state for row in status.rows}


def test_status_of_an_empty_folder_is_all_missing_with_reasons(small):
    status = checkpoint_status()
    # The digits prior is a config too; its file ships with the package, so it is always there.
    assert status.configs() == ["celeba_hq", "imagenet_256", "imagenet_256_cc", "digits"]
    product = [row for row in status.rows if row.config != "digits"]
    assert {row.state for row in product} == {"missing"} and len(product) == 4
    assert all("not downloaded yet" in row.detail for row in product)
    assert not any(status.ready(c) for c in status.configs()[:3])
    assert states(status)[("digits", "digits_ddpm")] == "verified" and status.ready("digits")
    text = str(status)
    assert "imagenet_256_cc  imagenet/256x256_classifier.pt" in text and "Ready to run: digits." in text


def test_ensure_checkpoints_fetches_everything_and_reports_each_state(small):
    payloads, root = small
    status = ensure_checkpoints(progress=False, quiet=True)
    assert status.all_ready
    assert states(status)[("imagenet_256_cc", "imagenet_256_classifier")] == "unpinned"
    assert states(status)[("celeba_hq", "celeba_hq")] == "verified"
    for key, payload in payloads.items():
        path = load_registry()[key].path()
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(payload).digest()
    html = status._repr_html_()
    assert html.count("<tr>") == 6 and "unpinned" in html and "Config 3: ImageNet conditional" in html


def test_a_failed_download_skips_that_config_only_and_never_raises(small, server, capsys):
    server.routes.pop("/256x256_diffusion.pt")  # the class-conditional model is gone: 404
    status = ensure_checkpoints(progress=False, quiet=True)
    assert status.ready("celeba_hq") and status.ready("imagenet_256") and not status.ready("imagenet_256_cc")
    [problem] = status.problems("imagenet_256_cc")
    assert problem.key == "imagenet_256_cond" and problem.state == "missing"
    assert problem.detail.startswith("download failed: HTTP 404 Not Found")
    assert "Could not download 256x256_diffusion.pt" in problem.error
    assert "Could not download 256x256_diffusion.pt" in capsys.readouterr().out


def test_corrupt_and_partial_files_are_told_apart(small):
    payloads, root = small
    ensure_checkpoints("celeba_hq", progress=False, quiet=True)
    path = root / "celeba" / "celeba_hq.ckpt"
    path.write_bytes(b"\0" * len(payloads["celeba_hq"]))
    (root / "imagenet").mkdir(parents=True, exist_ok=True)
    (root / "imagenet" / "256x256_diffusion_uncond.pt.part").write_bytes(b"x" * 1000)
    # A partial download this store made (its .part and record written by the writer itself)
    cond_spec = load_registry()["imagenet_256_cond"]
    with PartFile(cond_spec, root / "imagenet" / "256x256_diffusion.pt", print).open(0) as out:
        out.write(b"x" * 2000)
    status = checkpoint_status(["celeba_hq", "imagenet_256", "imagenet_256_cc"])
    celeba, uncond, cond, _ = status.rows
    assert celeba.state == "corrupt" and celeba.detail.startswith("sha256 mismatch: expected")
    assert uncond.state == "missing" and "was not left by this downloader" in uncond.detail
    assert cond.state == "missing" and cond.detail.startswith("partial download, 2 KB of 200 KB")


def test_cli_status_exit_codes(small, capsys):
    assert cli.main(["status"]) == 0  # an overview of everything: nothing was asked for
    assert cli.main(["status", "--config", "celeba_hq"]) == 1
    assert "celeba/celeba_hq.ckpt  missing" in capsys.readouterr().out
    assert cli.main(["download", "--config", "celeba_hq", "--quiet"]) == 0
    assert cli.main(["status", "--config", "celeba_hq"]) == 0


def test_cli_download_all_and_dir(small, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    assert cli.main(["download", "--all", "--dir", str(other), "--quiet"]) == 0
    assert (other / "imagenet" / "256x256_classifier.pt").is_file()
    out = capsys.readouterr().out
    assert f"Checkpoints under {other}" in out
    assert "Ready to run: celeba_hq, imagenet_256, imagenet_256_cc, digits." in out


def test_cli_download_fails_with_exit_1_when_a_file_stays_missing(small, server, capsys):
    server.routes.pop("/celeba_hq.ckpt")
    assert cli.main(["download", "--config", "celeba_hq", "--config", "imagenet_256", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "Ready to run: imagenet_256." in out and "Not ready: celeba_hq." in out


def test_cli_refuses_unknown_configs_and_contradictions(small, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["status", "--config", "celeba"])
    assert info.value.code == 2 and "invalid choice: 'celeba'" in capsys.readouterr().err
    assert cli.main(["download", "--all", "--config", "celeba_hq"]) == 2


@pytest.mark.subprocess
def test_python_dash_m_status_runs_offline_and_exits_cleanly(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DDRM_CHECKPOINT_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ddrm_helpers", "status"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(" missing ") == 4 and "Traceback" not in done.stderr
