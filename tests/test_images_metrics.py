import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers.errors import ImageError
from ddrm_helpers.images import center_square, load_image, load_images, save_image, to_uint8
from ddrm_helpers.metrics import psnr, ssim


def gradient_rgb(h=60, w=90):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=-1).astype(np.uint8)


def test_rgb_file_round_trips_exactly(tmp_path):
    array = gradient_rgb(64, 64)
    Image.fromarray(array).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), array)
    save_image(x, tmp_path / "b.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), array)


def test_center_crop_takes_the_middle_square():
    array = np.zeros((40, 100, 3), np.uint8)
    array[:, 26:74] = 255  # white around the centred 40x40 square (and the resampling margin)
    out = center_square(Image.fromarray(array), 20)
    assert out.size == (20, 20) and np.asarray(out).min() == 255
    assert load_image(array, 16).shape == (3, 16, 16)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_every_common_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(gradient_rgb())
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
        assert image.mode.startswith("I;16")
    elif mode == "P":
        image = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    image.save(path)
    x = load_image(path, 32)
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
    if mode in ("L", "LA", "I;16", "1"):
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_sixteen_bit_grey_keeps_its_brightness(tmp_path):
    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(tmp_path / "g.png")
    assert abs(load_image(tmp_path / "g.png").mean().item()) < 0.01  # mid grey, not black or white


def test_transparency_is_laid_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # black, fully transparent
    assert load_image(rgba).min().item() == 1.0


def test_float_and_uint16_arrays_and_tensors():
    grey = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    x = load_image(grey)
    assert x.shape == (3, 8, 8) and x.min().item() == -1 and x.max().item() == 1
    assert torch.allclose(load_image((grey * 65535).astype(np.uint16)), x, atol=1 / 127.5)
    assert torch.allclose(load_image(torch.from_numpy(grey * 2 - 1)[None]), x, atol=1 / 127.5)  # tensors: [-1, 1]
    assert load_images([grey, grey], 4).shape == (2, 3, 4, 4)


def test_clear_errors_for_what_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    with pytest.raises(ImageError, match="notes.png is not an image that can be read"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="No image at"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageError, match=r"got shape \(2, 3, 4, 5\)"):
        load_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageError, match=r"values in \[0, 1\]"):
        load_image(np.full((4, 4), 3.0))
    with pytest.raises(ImageError, match="cannot use a dict"):
        load_image({})
    assert issubclass(ImageError, ValueError)


def test_psnr_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    b = (a + 0.1 * torch.randn(2, 3, 16, 16, generator=gen)).clamp(-1, 1)
    mse = (((a + 1) / 2 - (b + 1) / 2) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(b, a), 10 * torch.log10(1 / mse))
    assert psnr(a, a)[0] > 100


def test_ssim_matches_scikit_image():
    from skimage import metrics  # a test requirement: our SSIM is checked against scikit-image's
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 48, 40, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(1, 3, 48, 40, generator=gen)).clamp(-1, 1)
    ours = ssim(b, a).item()
    theirs = metrics.structural_similarity(
        ((b[0] + 1) / 2).permute(1, 2, 0).double().numpy(), ((a[0] + 1) / 2).permute(1, 2, 0).double().numpy(),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-9)


def test_ssim_of_images_smaller_than_the_window_uses_the_largest_window_that_fits():
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 8, 8, generator=gen)).clamp(-1, 1)
    torch.testing.assert_close(ssim(b, a), ssim(b, a, window=7), rtol=0, atol=0)
    assert bool(torch.isfinite(ssim(b, a)).all()) and bool((ssim(b, a) < 0.9).all())
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert ssim(a[:, :, :5, :6], a[:, :, :5, :6]).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)  # window 5


def test_tensors_are_taken_exactly_in_the_packages_range():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 20, 30, generator=gen) * 2.4 - 1.2  # a noisy measurement may leave [-1, 1]
    torch.testing.assert_close(load_image(x), x, rtol=0, atol=0)
    torch.testing.assert_close(load_image(x[None]), x, rtol=0, atol=0)
    grey = load_image(x[:1])
    assert torch.equal(grey[0], x[0]) and torch.equal(grey[2], x[0])
    cropped = load_image(x, 20)
    torch.testing.assert_close(cropped, x[:, :, 5:25], rtol=0, atol=0)  # the centred square, no resize
    assert load_image(x, 10).shape == (3, 10, 10)
    with pytest.raises(ImageError, match="1 or 3 channels"):
        load_image(torch.zeros(4, 8, 8))
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_image(torch.full((3, 4, 4), float("nan")))
