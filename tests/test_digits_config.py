"""The shipped digits prior is a config like the others: ``digits``, offline, from the package's files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ddrm_helpers import CheckpointStore, available_configs, cli, load_config, run_config
from ddrm_helpers import store as store_module
from ddrm_helpers.config import DIGITS_CONFIG, known_configs
from ddrm_helpers.paths import PRIOR_DIR
from ddrm_helpers.selftest import heldout_digits

from .tiny_files import pinned_entry, random_bytes, write_registry


def test_digits_is_a_known_config_but_not_one_the_demo_runs():
    config = load_config("digits")
    assert config.name == DIGITS_CONFIG == "digits" and config.checkpoints.model == "digits_ddpm"
    assert int(config.data.image_size) == 8 and int(config.diffusion.num_diffusion_timesteps) == 500
    assert "digits" in known_configs() and "digits" not in available_configs()


def test_status_lists_digits_as_verified_from_any_checkpoint_folder(tmp_path, capsys):
    assert cli.main(["status", "--dir", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("digits "))
    assert "digits/digits_ddpm.pt" in row and "verified" in row
    assert "Ready to run: digits." in out
    assert cli.main(["status", "--config", "digits", "--dir", str(tmp_path / "empty")]) == 0


def test_run_config_digits_restores_its_own_default_digits_with_a_store_that_does_not_know_it(tmp_path):
    # A store of another folder, with a registry of its own that has no digits entry: the shipped
    # file is still found in the package, verified, and nothing is written under that folder.
    payload = random_bytes(1000, seed=0)
    registry = write_registry(tmp_path / "registry.yml",
                              {"other": pinned_entry("other.pt", "x", payload, ["http://127.0.0.1:9/other.pt"])})
    store = CheckpointStore(tmp_path / "ckpts", registry)
    result = run_config("digits", task="inp", steps=5, store=store, save=False, progress=False, device="cpu",
                        download=False)
    assert not result.skipped and result.finite
    assert result.restored.shape == (4, 3, 8, 8)
    truth = np.stack(heldout_digits(4)[0])
    assert np.allclose((result.original[:, 0].numpy() + 1) / 2, truth, atol=1 / 255)
    assert not (tmp_path / "ckpts").exists()


def test_a_missing_shipped_prior_is_skipped_with_how_to_restore_it_and_never_downloaded(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "prior"
    shutil.copytree(PRIOR_DIR, copy)
    (copy / "digits" / "digits_ddpm.pt").unlink()
    monkeypatch.setattr(store_module, "PRIOR_DIR", copy)
    monkeypatch.setattr(store_module, "BUNDLED_REGISTRY", copy / "registry.yml")
    result = run_config("digits", steps=2, save=False, progress=False, device="cpu")
    assert result.skipped
    line = str(result)
    # the copy is no git checkout: the remedy is a fresh copy of the project, not a command that fails
    assert "digits_ddpm.pt is missing" in line and "reinstall the package from a fresh copy" in line
    assert "git -C" not in line
    out = capsys.readouterr().out
    assert "downloading" not in out and out.count("skipped") == 1
    assert not (copy / "digits" / "digits_ddpm.pt").exists()


@pytest.mark.subprocess
def test_the_command_line_runs_digits_offline(tmp_path, capsys):
    photos = []
    for i, digit in enumerate(heldout_digits(2)[0]):
        photos.append(tmp_path / f"digit{i}.png")
        Image.fromarray((digit * 255).round().astype(np.uint8)).save(photos[-1])
    code = cli.main(["run", "--config", "digits", "--task", "deblur_gauss", "--steps", "5",
                     "--images", *map(str, photos), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "digit0: restored PSNR" in out and "digit1: restored PSNR" in out
    assert len(list((tmp_path / "out").glob("digits_deblur_gauss_*/*_restored.png"))) == 2


def test_evaluate_runs_the_digits_prior_on_a_folder_of_digits(tmp_path):
    from ddrm_helpers.evaluation import evaluate

    data = tmp_path / "digits"
    data.mkdir()
    for i, digit in enumerate(heldout_digits(4)[0]):
        Image.fromarray((digit * 255).round().astype(np.uint8)).save(data / f"{i}.png")
    result = evaluate("digits", data, task="inp", steps=5, out_dir=tmp_path / "eval", features=None, device="cpu",
                      progress=False)
    assert not getattr(result, "skipped", False)
    records = [line for line in (tmp_path / "eval" / "records.jsonl").read_text().splitlines() if line.strip()]
    assert len(records) == 4


def test_in_a_checkout_the_remedy_is_the_git_command_that_puts_the_file_back(tmp_path):
    import subprocess

    from ddrm_helpers.paths import put_back_command

    shutil.copytree(PRIOR_DIR, tmp_path / "project" / "ddrm_helpers" / "prior")
    target = tmp_path / "project" / "ddrm_helpers" / "prior" / "digits" / "digits_ddpm.pt"
    assert put_back_command(target) is None  # not a checkout yet
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the remedy is then a fresh copy, checked above")
    project = tmp_path / "project"
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(project), *args], check=True)
    original = target.read_bytes()
    target.write_bytes(b"damaged")
    command = put_back_command(target)
    assert command == f"git -C {project.resolve()} checkout -- ddrm_helpers/prior/digits/digits_ddpm.pt"
    subprocess.run(command, shell=True, check=True)  # the command works as given
    assert target.read_bytes() == original

