"""Bad arguments are refused before anything is downloaded or loaded: by the CLI with exit status 2
and one line ``error: ...`` (no traceback), by run_config and restore_photo with a ValueError.

Every test here points the package at a registry of small files served by a local server that
logs its requests, and makes loading a checkpoint fail loudly: a check that came after the
download or the load would show as a request in the log or as that failure."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from ddrm_helpers import cli, validate
from ddrm_helpers.errors import ArgumentError, ConfigError, DegradationError, SamplingError
from ddrm_helpers.images import load_image
from ddrm_helpers.paths import DEMO_DIR
from ddrm_helpers.restore import restore_photo
from ddrm_helpers.runner import run_config

from .conftest import REPO
from .tiny_files import pinned_entry, random_bytes, write_registry

pytestmark = pytest.mark.server

FACE = DEMO_DIR / "face_eileen_collins.png"
FILES = {  # the real registry's keys
    "celeba_hq": ("celeba_hq.ckpt", "celeba"),
    "imagenet_256_uncond": ("256x256_diffusion_uncond.pt", "imagenet"),
    "imagenet_256_cond": ("256x256_diffusion.pt", "imagenet"),
    "imagenet_256_classifier": ("256x256_classifier.pt", "imagenet"),
}


@pytest.fixture
def guarded(server, tmp_path, monkeypatch):
    """Every checkpoint downloadable from the local server; loading one raises. Returns the server."""
    entries = {}
    for i, (key, (file, subdir)) in enumerate(FILES.items()):
        payload = random_bytes(10_000 + i, seed=i)
        entries[key] = pinned_entry(file, subdir, payload, [server.add(f"/{file}", payload)])
    monkeypatch.setenv("DDRM_REGISTRY", str(write_registry(tmp_path / "registry.yml", entries)))
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))

    def no_load(*args, **kwargs):
        raise AssertionError("a checkpoint was loaded")

    monkeypatch.setattr("ddrm_helpers.models.load_pretrained", no_load)
    monkeypatch.setattr("ddrm_helpers.models.pretrained.load_pretrained", no_load)
    return server


def refused(argv, capsys) -> str:
    """Run the CLI; it must exit 2 with one line ``error: ...`` on stderr. Returns that line."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def untouched(server, tmp_path):
    assert server.log == []  # nothing was asked of the network
    assert not (tmp_path / "checkpoints").exists()  # nothing was downloaded
    assert not (tmp_path / "exp" / "image_samples").exists()  # nothing was saved


# -- the command line -------------------------------------------------------------------------------


def test_device_cuda_without_a_gpu_says_which_torch_and_what_to_do(guarded, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    for command in (["run", "--config", "celeba_hq"], ["demo"],
                    ["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(FACE)]):
        line = refused([*command, "--device", "cuda"], capsys)
        assert line == (f"error: --device cuda: no CUDA GPU is visible to PyTorch (torch {torch.__version__}, "
                        f"built for {build}); use --device cpu or omit --device")
    assert "no CUDA GPU" in refused(["run", "--config", "celeba_hq", "--device", "cuda:1"], capsys)
    untouched(guarded, tmp_path)


def test_an_unknown_device_lists_the_valid_kinds(guarded, tmp_path, capsys):
    for device in ("foo", "gpu", "cuda:x", "meta"):
        line = refused(["run", "--config", "celeba_hq", "--device", device], capsys)
        assert line.startswith(f"error: --device {device}: not a device this demo runs on; give one of cpu, cuda, "
                               "cuda:N (the N-th GPU), mps")
    untouched(guarded, tmp_path)


@pytest.mark.parametrize("command", ["run", "demo", "restore"])
def test_steps_out_of_range(guarded, tmp_path, capsys, command):
    argv = {"run": ["run", "--config", "celeba_hq"], "demo": ["demo"],
            "restore": ["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(FACE)]}[command]
    for steps in ("0", "-3", "1001", "5000"):
        line = refused([*argv, "--steps", steps], capsys)
        assert line == ("error: --steps is DDRM's number of steps (one network evaluation each), between 1 and 1000 "
                        f"(the diffusion's timesteps; the paper uses 20); got {steps}")
    untouched(guarded, tmp_path)


def test_the_step_limit_is_the_configs_number_of_timesteps(guarded, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", '{"celeba_hq": {"diffusion.num_diffusion_timesteps": 100}}')
    assert "between 1 and 100 " in refused(["run", "--config", "celeba_hq", "--steps", "101"], capsys)
    untouched(guarded, tmp_path)


def test_sigma_y_must_be_a_finite_level_in_0_1(guarded, tmp_path, capsys):
    for sigma_y in ("nan", "inf", "-inf", "2", "-0.1", "1.01"):
        for argv in (["run", "--config", "celeba_hq"],
                     ["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(FACE)]):
            line = refused([*argv, f"--sigma-y={sigma_y}"], capsys)
            assert line == (f"error: --sigma-y is a noise level in [0, 1] pixel units (0.05 is 5% of the pixel "
                            f"range; 0 for none); got {float(sigma_y)}")
    untouched(guarded, tmp_path)


def test_seeds_are_0_to_2_to_the_32_minus_1(guarded, tmp_path, capsys):
    for seed in (-1, 2**32, 2**63, 2**64):
        line = refused(["run", "--config", "celeba_hq", f"--seed={seed}"], capsys)
        assert line == (f"error: --seed is an integer from 0 to 4294967295 (2**32 - 1: PyTorch's CPU generator "
                        f"keeps 32 bits); got {seed}")
    untouched(guarded, tmp_path)


def test_why_seeds_stop_at_2_to_the_32():
    """The CPU generator keeps the low 32 bits of a seed: larger seeds would repeat smaller ones."""
    def draw(seed):
        return torch.randn(4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(5), draw(2**32 + 5)) and not torch.equal(draw(5), draw(6))
    assert validate.check_seed(validate.SEED_MAX) == 2**32 - 1


def test_samples_must_be_1_or_more(guarded, tmp_path, capsys):
    line = refused(["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(FACE), "--samples", "0"],
                   capsys)
    assert line == "error: --samples is how many restorations to draw, 1 or more; got 0"
    untouched(guarded, tmp_path)


def test_out_that_is_a_file_or_under_one(guarded, tmp_path, capsys):
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    for command in (["run", "--config", "celeba_hq"], ["demo"],
                    ["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(FACE)]):
        line = refused([*command, "--out", str(file)], capsys)
        assert line == f"error: --out {file}: {file} is a file, not a folder; give a folder for the run folders"
        line = refused([*command, "--out", str(file / "runs")], capsys)
        assert line == f"error: --out {file / 'runs'}: {file} is a file, so no folder can be made under it"
    untouched(guarded, tmp_path)


def test_out_that_cannot_be_written(guarded, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # The tests may run as root, for whom permission bits do not stop a write: say what a user sees.
    monkeypatch.setattr(validate.os, "access", lambda path, mode: False if str(path) == str(locked)
                        else real_access(path, mode))
    line = refused(["run", "--config", "celeba_hq", "--out", str(locked)], capsys)
    assert line == f"error: --out {locked}: it is not writable; give a folder you can write to"
    line = refused(["run", "--config", "celeba_hq", "--out", str(locked / "a" / "b")], capsys)
    assert line == (f"error: --out {locked / 'a' / 'b'}: {locked}, where it would be made, is not writable; "
                    "give a folder you can write to")
    assert list(locked.iterdir()) == []
    untouched(guarded, tmp_path)


def test_the_default_output_folder_is_checked_too(guarded, tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "image_samples").write_text("a file where the runs go")
    line = refused(["demo"], capsys)
    assert line.startswith("error: the default output folder ") and line.endswith("is a file, not a folder; give a "
                                                                                  "folder for the run folders")
    assert guarded.log == []


def test_dir_that_is_a_file(guarded, tmp_path, capsys):
    file = tmp_path / "ckpts"
    file.write_text("")
    for command in (["status"], ["download"], ["demo"], ["run", "--config", "celeba_hq"]):
        assert refused([*command, "--dir", str(file)], capsys) == f"error: --dir {file}: {file} is a file, not a folder"
    assert guarded.log == []


def test_a_factor_that_does_not_divide_the_size_suggests_the_ones_that_do(guarded, tmp_path, capsys):
    line = refused(["run", "--config", "celeba_hq", "--task", "sr5"], capsys)
    assert line == ("error: sr5: the factor 5 does not divide the image size 256x256; factors that do: sr2, sr4, "
                    "sr8, sr16, sr32, sr64, sr128")
    assert "255" not in line
    line = refused(["restore", "--config", "celeba_hq", "--task", "sr_bicubic3", "--photo", str(FACE)], capsys)
    assert "factors that do: sr_bicubic2, sr_bicubic4," in line
    untouched(guarded, tmp_path)


def test_several_configs_are_all_checked_before_the_first_runs(guarded, tmp_path, capsys):
    line = refused(["run", "--config", "celeba_hq", "--config", "imagenet_256_cc", "--classes", "kitty"], capsys)
    assert "'kitty' is not an ImageNet class name" in line
    line = refused(["run", "--config", "celeba_hq", "--config", "imagenet_256", "--task", "inp_mask"], capsys)
    assert line.startswith("error: --task inp_mask needs --mask FILE: ")
    untouched(guarded, tmp_path)


def test_an_unknown_beta_schedule_is_refused_before_the_demo_downloads(guarded, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", '{"imagenet_256": {"diffusion.beta_schedule": "cosine"}}')
    line = refused(["demo"], capsys)
    assert line == ("error: config imagenet_256: diffusion.beta_schedule is 'cosine'; the schedules known are linear, "
                    "quad, const, sigmoid (the configs use linear)")
    untouched(guarded, tmp_path)


def test_demo_with_nothing_to_run_says_each_missing_file_once_then_that_selftest_works_offline(
        server, tmp_path, monkeypatch, capsys):
    entries = {key: pinned_entry(file, subdir, b"x", [server.url(f"/missing/{file}"), server.url(f"/gone/{file}")])
               for key, (file, subdir) in FILES.items()}
    monkeypatch.setenv("DDRM_REGISTRY", str(write_registry(tmp_path / "registry.yml", entries)))
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    assert cli.main(["demo", "--steps", "1"]) == 1
    captured = capsys.readouterr()
    said = captured.out.strip().splitlines()
    # One line per file, naming both sources' answer once and where the file goes by hand; nothing else.
    assert [line.split(" could not be downloaded from its 2 sources: ")[0] for line in said] == [
        file for file, _ in FILES.values()]
    for line, (file, subdir) in zip(said, FILES.values()):
        assert "(2 sources)" in line and f"Put it at {tmp_path / 'checkpoints' / subdir / file} by hand" in line
    assert captured.err.strip().splitlines() == [
        "Nothing can run: no config has its checkpoints (why above). `python -m ddrm_helpers selftest` works offline: "
        "it checks that DDRM restores on this machine with the small prior that ships with it."]
    assert len(server.log) == 8  # each source asked once: a 404 is not retried


@pytest.mark.subprocess
def test_python_dash_m_refuses_cuda_without_a_gpu_in_one_line(guarded, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "",
           **{k: os.environ[k] for k in ("DDRM_REGISTRY", "DDRM_CHECKPOINT_DIR", "DDRM_EXP_DIR")}}
    done = subprocess.run([sys.executable, "-m", "ddrm_helpers", "run", "--config", "celeba_hq", "--device", "cuda"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --device cuda: no CUDA GPU is visible to PyTorch (torch ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and done.stdout == ""
    untouched(guarded, tmp_path)


# -- the library: run_config and restore_photo -----------------------------------------------------------


BAD_RUN_ARGUMENTS = [
    ({"steps": 0}, SamplingError, r"steps is DDRM's number of steps .* between 1 and 1000 .*; got 0$"),
    ({"steps": 5000}, SamplingError, "got 5000$"),
    ({"steps": 2.5}, SamplingError, "got 2.5$"),
    ({"steps": True}, SamplingError, "got True$"),
    ({"sigma_y": math.nan}, SamplingError, r"sigma_y is a noise level in \[0, 1\] pixel units .*; got nan$"),
    ({"sigma_y": math.inf}, SamplingError, "got inf$"),
    ({"sigma_y": 2.0}, SamplingError, "got 2.0$"),
    ({"sigma_y": "0.1"}, SamplingError, "got '0.1'$"),
    ({"eta": 1.5}, SamplingError, r"eta is a number in \[0, 1\] .*; got 1.5$"),
    ({"eta": math.nan}, SamplingError, "eta is a number .*; got nan$"),
    ({"eta_b": -0.1}, SamplingError, r"eta_b is a number in \[0, 1\] .*; got -0.1$"),
    ({"seed": -1}, ArgumentError, "seed is an integer from 0 to 4294967295 .*; got -1$"),
    ({"seed": 2**63}, ArgumentError, f"got {2**63}$"),
    ({"seed": "7"}, ArgumentError, "got '7'$"),
    ({"num_samples": 0}, ArgumentError, "num_samples is how many restorations to draw per image, 1 or more; got 0$"),
    ({"batch_size": -1}, ArgumentError, "batch_size is how many images go through the network at once, 1 or more; "
                                        "got -1$"),
    ({"batch_size": 0}, ArgumentError, "got 0$"),
    ({"classifier_scale": math.inf}, ArgumentError, "classifier_scale is the classifier guidance scale.*; got inf$"),
    ({"classifier_scale": -1}, ArgumentError, "got -1$"),
    ({"device": "foo"}, ArgumentError, r"device='foo': not a device this demo runs on; .* or device=None"),
    ({"device": 3.5}, ArgumentError, "device='3.5': not a device"),
    ({"task": 4}, DegradationError, "task is the name of a degradation .*; got 4$"),
    ({"degradation_params": [3]}, DegradationError, "degradation_params is a dict .*; got list$"),
    ({"callback": 5}, ArgumentError, "callback is a function called after every step; got 5$"),
]


def test_run_config_refuses_before_any_download(guarded, tmp_path):
    for change, error, message in BAD_RUN_ARGUMENTS:
        with pytest.raises(error, match=message):
            run_config("celeba_hq", **{"steps": 2, "progress": False, **change})
    untouched(guarded, tmp_path)


def test_restore_photo_refuses_before_any_download(guarded, tmp_path):
    photo = load_image(FACE, 64)
    for change, error, message in BAD_RUN_ARGUMENTS:
        change = dict(change)
        with pytest.raises(error, match=message):
            restore_photo("celeba_hq", photo, change.pop("task", "sr4"), **{"steps": 2, "progress": False, **change})
    untouched(guarded, tmp_path)


def test_the_library_refuses_cuda_without_a_gpu_and_a_file_for_out_dir(guarded, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match=r"^device='cuda': no CUDA GPU is visible to PyTorch \(torch .*\); "
                                            r"use device='cpu' or device=None$"):
        run_config("celeba_hq", device="cuda")
    with pytest.raises(ArgumentError, match=r"^device='cuda:0': no CUDA GPU"):
        restore_photo("celeba_hq", load_image(FACE, 64), "sr4", device=torch.device("cuda", 0))
    file = tmp_path / "out"
    file.write_text("")
    with pytest.raises(ArgumentError, match="is a file, not a folder"):
        run_config("celeba_hq", out_dir=file)
    assert run_config.__module__ == "ddrm_helpers.runner"
    untouched(guarded, tmp_path)


def test_an_output_folder_is_not_checked_when_nothing_is_saved(guarded, tmp_path, monkeypatch):
    file = tmp_path / "out"
    file.write_text("")
    skipped_dir = tmp_path / "nothing"  # with save=False the run goes on to the (failing) checkpoints
    guarded.routes.clear()
    result = run_config("celeba_hq", out_dir=file, save=False, steps=1, progress=False, cache_dir=skipped_dir)
    assert result.skipped


def test_unknown_schedule_in_the_library_is_a_config_error_before_any_download(guarded, tmp_path, monkeypatch):
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", '{"celeba_hq": {"diffusion.beta_schedule": "cosine"}}')
    with pytest.raises(ConfigError, match="diffusion.beta_schedule is 'cosine'"):
        run_config("celeba_hq", steps=2)
    with pytest.raises(ConfigError, match="diffusion.beta_schedule is 'cosine'"):
        restore_photo("celeba_hq", load_image(FACE, 64), "sr4", steps=2)
    untouched(guarded, tmp_path)


def test_good_values_pass_and_are_converted():
    assert validate.check_steps(20.0, 1000) == 20 and isinstance(validate.check_steps(20.0, 1000), int)
    assert validate.check_steps(torch.tensor(7), 1000) == 7
    assert validate.check_sigma_y(0) == 0.0 and validate.check_sigma_y(1) == 1.0
    assert validate.check_eta(torch.tensor(0.5)) == 0.5
    assert validate.check_device(None) is None and validate.check_device("cpu") == torch.device("cpu")
    assert validate.check_seed(0) == 0


# -- --help without PyTorch ------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_help_answers_without_importing_torch():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ddrm_helpers", "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m ddrm_helpers"), done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "ddrm_helpers.cli" in imported
    assert [name for name in imported if name.split(".")[0] in ("torch", "numpy", "PIL")] == []

    script = """
import sys
from ddrm_helpers import cli
for argv in (["demo", "--help"], ["status", "--help"], ["download", "--help"], ["run", "--help"],
             ["restore", "--help"], ["run"], ["restore", "--config", "nope"]):
    try:
        cli.main(argv)
    except SystemExit as stop:
        print(argv[0], stop.code)
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line for line in lines if line[:4] in ("demo", "stat", "down", "run ", "rest")][-7:] == [
        "demo 0", "status 0", "download 0", "run 0", "restore 0", "run 2", "restore 2"]
    assert lines[-1] == "False"  # torch was never imported


def test_the_package_names_still_import():
    import ddrm_helpers

    namespace = {}
    exec("from ddrm_helpers import *", namespace)
    assert set(ddrm_helpers.__all__) <= set(namespace)
    assert namespace["run_config"] is run_config and namespace["ArgumentError"] is ArgumentError
    assert ddrm_helpers.sampler.ddrm_sample is namespace["ddrm_sample"]
    assert set(ddrm_helpers.__all__) <= set(dir(ddrm_helpers))
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        ddrm_helpers.nothing_here  # noqa: B018


def test_the_configs_own_classifier_scale_is_checked_too(guarded, tmp_path, monkeypatch):
    monkeypatch.setenv("DDRM_CONFIG_OVERRIDES", '{"imagenet_256_cc": {"classifier.classifier_scale": -2}}')
    with pytest.raises(ArgumentError, match="classifier_scale is the classifier guidance scale.*; got -2.0$"):
        run_config("imagenet_256_cc", steps=2)
    untouched(guarded, tmp_path)


def test_device_checks_on_a_machine_with_one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert validate.check_device("cuda", "--device") == torch.device("cuda")
    assert validate.check_device("cuda:0", "--device") == torch.device("cuda", 0)
    with pytest.raises(ArgumentError, match=r"^--device cuda:1: PyTorch sees 1 CUDA GPU\(s\), cuda:0 to cuda:0$"):
        validate.check_device("cuda:1", "--device")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match=r"^--device mps: no Apple GPU \(MPS\) is available to PyTorch .*; "
                                            "use --device cpu or omit --device$"):
        validate.check_device("mps", "--device")
