"""``--mask FILE`` and ``--kernel FILE|K ...`` / ``--kernel-h`` / ``--kernel-w`` on the command line
(ddrm_helpers/operator_inputs.py): every task reachable from ``run`` and ``restore``, every bad
file or flag refused in one line naming the flag, before anything is downloaded or loaded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ddrm_helpers import cli
from ddrm_helpers.errors import ArgumentError
from ddrm_helpers.operator_inputs import read_kernel, read_mask, split_kernel
from ddrm_helpers.paths import DEMO_DIR

from .test_cli_validation import (
    guarded,  # noqa: F401 (a fixture, asked for by name below)
    refused,
    untouched,
)
from .tiny_models import install_tiny_checkpoints

FACE = DEMO_DIR / "face_eileen_collins.png"


def gaussian(sigma: float, taps: int) -> np.ndarray:
    kernel = np.exp(-0.5 * ((np.arange(taps) - taps // 2) / sigma) ** 2)
    return kernel / kernel.sum()


@pytest.fixture
def files(tmp_path):
    """A mask with a box cut out, kernels as an image, arrays and text, and files that are wrong."""
    folder = tmp_path / "files"
    folder.mkdir()
    mask = np.full((300, 400), 255, np.uint8)
    mask[100:200, 150:250] = 0
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "black.png")
    psf = np.outer(gaussian(2.0, 9), gaussian(2.0, 9))
    Image.fromarray(np.round(psf / psf.max() * 255).astype(np.uint8)).save(folder / "psf.png")
    r = np.arange(-4, 5)
    Image.fromarray(((r[:, None] ** 2 + r[None] ** 2 <= 16) * 255).astype(np.uint8)).save(folder / "disk.png")
    np.save(folder / "kernel.npy", gaussian(1.0, 5))
    np.savetxt(folder / "kernel2d.txt", np.outer([1, 2, 1], [1, 4, 6, 4, 1]) / 64.0, delimiter=", ")
    (folder / "words.txt").write_text("a b c\n")
    return folder


def test_run_inp_mask_with_a_mask_file_restores_and_keeps_every_kept_pixel(server, tmp_path, monkeypatch, files):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    out = tmp_path / "runs"
    assert cli.main(["run", "--config", "celeba_hq", "--task", "inp_mask", "--mask", str(files / "mask.png"),
                     "--sigma-y", "0", "--images", str(FACE), "--steps", "2", "--out", str(out),
                     "--device", "cpu"]) == 0
    [folder] = list(out.iterdir())
    original = np.asarray(Image.open(next(folder.glob("00_*_original.png"))))
    restored = np.asarray(Image.open(next(folder.glob("00_*_restored.png"))))
    kept = read_mask(files / "mask.png", size=32)  # the tiny model's 32x32: the mask's centred square, resized
    assert kept.shape == (32, 32) and 0 < kept.mean() < 1
    assert np.array_equal(restored[kept], original[kept]) and not np.array_equal(restored, original)


def test_restore_deblur_with_a_kernel_image(server, tmp_path, monkeypatch, files):
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    photo = tmp_path / "blurred.png"
    Image.open(FACE).convert("RGB").resize((32, 32)).save(photo)
    assert cli.main(["restore", "--config", "celeba_hq", "--task", "deblur", "--kernel", str(files / "psf.png"),
                     "--photo", str(photo), "--sigma-y", "0.01", "--steps", "1", "--out", str(tmp_path / "runs"),
                     "--device", "cpu"]) == 0


def test_kernels_from_numbers_arrays_text_and_images(files):
    assert read_kernel(["0.25", "0.5", "0.25"], "--kernel").tolist() == [0.25, 0.5, 0.25]
    assert np.allclose(read_kernel([str(files / "kernel.npy")], "--kernel"), gaussian(1.0, 5))
    text = read_kernel([str(files / "kernel2d.txt")], "--kernel")  # an exact outer product, split in two
    factors = split_kernel(text)
    assert np.allclose(np.outer(factors["kernel_h"], factors["kernel_w"]), text, atol=1e-12)
    assert np.allclose(np.array(factors["kernel_h"]) / sum(factors["kernel_h"]), [0.25, 0.5, 0.25])
    image = read_kernel([str(files / "psf.png")], "--kernel")  # 8-bit: separable within its rounding
    assert image.sum() == pytest.approx(1.0)
    factors = split_kernel(image)
    assert np.abs(np.outer(factors["kernel_h"], factors["kernel_w"]) - image).max() < 0.01 * image.max()
    assert np.allclose(factors["kernel_h"], factors["kernel_w"], atol=1e-3) and min(factors["kernel_h"]) > 0


@pytest.mark.parametrize("argv, message", [
    (["--task", "inp_mask"], "error: --task inp_mask needs --mask FILE: "),
    (["--task", "sr4", "--mask", "{files}/mask.png"], "error: --mask is for --task inp_mask; --task sr4 takes no mask"),
    (["--task", "inp_mask", "--mask", "{files}/black.png"], "error: --mask {files}/black.png: the mask keeps no pixel"),
    (["--task", "inp_mask", "--mask", "{files}/none.png"], "error: --mask {files}/none.png: no such file"),
    (["--task", "inp_mask", "--mask", "{files}"], "error: --mask {files}: a folder"),
    (["--task", "inp_mask", "--mask", "{files}/words.txt"], "error: --mask {files}/words.txt: cannot be read as an "
                                                           "array"),
    (["--task", "deblur"], "error: --task deblur needs --kernel (numbers or a file"),
    (["--task", "deblur", "--kernel", "1", "--kernel-h", "1"], "error: --task deblur needs --kernel (numbers"),
    (["--task", "deblur", "--kernel-h", "1", "2"], "error: --task deblur needs --kernel (numbers"),
    (["--task", "deno", "--kernel", "1", "2"], "error: --kernel is for --task deblur (your own blur); --task deno"),
    (["--task", "deblur", "--kernel", "{files}/disk.png"], "error: --kernel {files}/disk.png: this 9x9 kernel is not "
                                                          "separable (its second singular value is 25.1% of the first"),
    (["--task", "deblur", "--kernel-h", "{files}/psf.png", "--kernel-w", "1"], "error: --kernel-h {files}/psf.png: "
                                                                              "give a 1-D kernel here"),
    (["--task", "deblur", "--kernel", "1", "x"], "error: --kernel 1 x: give numbers (a 1-D kernel) or one file"),
])
@pytest.mark.parametrize("command", ["run", "restore"])
@pytest.mark.usefixtures("guarded")  # every checkpoint downloadable from the local server, loading one fails
def test_a_bad_mask_or_kernel_is_one_line_naming_the_flag_before_any_download(server, tmp_path, capsys, files,
                                                                               command, argv, message):
    argv = [a.format(files=files) for a in argv]
    photo = ["--photo", str(FACE)] if command == "restore" else []
    line = refused([command, "--config", "celeba_hq", *photo, *argv], capsys)
    assert line.startswith(message.format(files=files)), line
    untouched(server, tmp_path)


def test_read_mask_refuses_a_3d_array(files):
    np.save(files / "cube.npy", np.ones((2, 3, 4)))
    with pytest.raises(ArgumentError, match=r"a mask is a 2-D picture or array; this one has shape \[2, 3, 4\]"):
        read_mask(files / "cube.npy")
