"""Images a user points us at that must not hurt: a header declaring more pixels than we decode, a
named pipe or a device given as a photo. Each is one line (exit 2 on the command line) before any
download or load; nothing is decoded or allocated past the limit, and no pipe is opened.

The pipe tests keep a writer ready on the pipe (a thread blocked opening it for writing): code that
opened the pipe would read a real PNG from it and go on, so the test would fail, not hang.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from ddrm_helpers.errors import ImageError
from ddrm_helpers.images import MAX_PIXELS, check_pixels, load_image, open_regular, to_rgb_pil

from .test_cli_validation import guarded, refused, untouched  # noqa: F401 (guarded: the fixture, used by name)


def png_header(path, width: int, height: int):
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels (its data is a few bytes):
    what a decompression bomb looks like to a reader of headers."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@contextmanager
def pipe_with_a_png(path):
    """A named pipe at ``path`` with a writer waiting to hand a real 8x8 PNG to whoever opens it."""
    os.mkfifo(path)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    payload = buffer.getvalue()
    opened = []

    def feed():
        with open(path, "wb") as pipe:  # blocks until a reader opens the pipe
            opened.append(True)
            pipe.write(payload)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield opened
    finally:
        # Release the writer: open the reading end ourselves (non-blocking), then let it finish.
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(timeout=60)
        os.close(reader)


def test_check_pixels_bounds_a_size_before_it_is_allocated():
    assert check_pixels(8192, 8192, "an image") is None and MAX_PIXELS == 8192 * 8192
    with pytest.raises(ImageError) as info:
        check_pixels(100_000, 100_000, "the padded photo")
    text = str(info.value)
    assert "\n" not in text and text.startswith("the padded photo: 100000x100000 pixels (width x height)")
    assert f"more than the {MAX_PIXELS:,} pixels this package decodes or allocates at once" in text
    for height, width in ((0, 5), (5, -1)):
        with pytest.raises(ImageError, match="has no pixels"):
            check_pixels(height, width, "an image")


@pytest.mark.parametrize("side", [9000, 10_000, 50_000])
def test_a_header_declaring_more_pixels_than_the_limit_is_refused_before_decoding(tmp_path, side):
    # 9000^2 is under PIL's own warning, 10000^2 over it (a DecompressionBombWarning), 50000^2 over
    # its error (a DecompressionBombError, which is not an OSError): one ImageError for each, no warning.
    bomb = png_header(tmp_path / "bomb.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as info:
            load_image(bomb, 32)
    text = str(info.value)
    # PIL itself refuses the largest before saying its size: then the message gives the count.
    assert "\n" not in text and str(bomb) in text and (f"{side}x{side}" in text or f"{side * side:,} pixels" in text)
    assert "downscale it" in text


def test_a_photo_is_opened_only_if_it_is_a_regular_file(tmp_path):
    with pipe_with_a_png(tmp_path / "photo.png") as opened:
        with pytest.raises(ImageError, match=r"photo.png is a named pipe, not an image file"):
            to_rgb_pil(tmp_path / "photo.png")
        assert opened == []  # the pipe was never opened
    with pytest.raises(ImageError, match=r"/dev/zero is a device file, not an image file"):
        load_image("/dev/zero")
    with pytest.raises(ImageError, match="is a folder, not an image"):
        open_regular(tmp_path)
    with pytest.raises(FileNotFoundError, match="No image at"):
        open_regular(tmp_path / "absent.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "real.png")
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "real.png")  # a link to a regular file is the user's own choice
    assert to_rgb_pil(link).size == (8, 8)


def test_an_in_memory_image_above_the_limit_is_refused_before_conversion(monkeypatch):
    monkeypatch.setattr("ddrm_helpers.images.MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="the image array: 11x10 pixels"):
        to_rgb_pil(np.zeros((10, 11, 3), np.uint8))
    assert to_rgb_pil(np.zeros((10, 10), np.uint8)).size == (10, 10)


def test_run_and_restore_refuse_a_bomb_header_or_a_pipe_in_one_line_before_any_download(guarded, tmp_path,  # noqa: F811
                                                                                        capsys):
    bomb = png_header(tmp_path / "bomb.png", 50_000, 50_000)
    line = refused(["run", "--config", "celeba_hq", "--images", str(bomb), "--out", str(tmp_path / "out")], capsys)
    assert "2,500,000,000 pixels" in line and str(bomb) in line
    line = refused(["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(bomb)], capsys)
    assert "2,500,000,000 pixels" in line
    with pipe_with_a_png(tmp_path / "pipe.png") as opened:
        line = refused(["run", "--config", "celeba_hq", "--images", str(tmp_path / "pipe.png")], capsys)
        assert "is a named pipe, not an image file" in line
        line = refused(["restore", "--config", "celeba_hq", "--task", "sr4", "--photo", str(tmp_path / "pipe.png")],
                       capsys)
        assert "is a named pipe, not an image file" in line
        assert opened == []
    line = refused(["restore", "--config", "celeba_hq", "--task", "deno", "--photo", "/dev/zero"], capsys)
    assert "/dev/zero is a device file" in line
    untouched(guarded, tmp_path)
    assert not (tmp_path / "out").exists()


def test_an_upload_declaring_more_pixels_than_the_limit_is_one_line(tmp_path):
    from ddrm_helpers.notebook import uploaded_images

    bomb = png_header(tmp_path / "bomb.png", 50_000, 50_000).read_bytes()
    with pytest.raises(ImageError) as info:
        uploaded_images({"bomb.png": bomb})  # as google.colab.files.upload() gives it
    text = str(info.value)
    assert "\n" not in text and text.startswith("the upload 'bomb.png' declares 2,500,000,000 pixels")
