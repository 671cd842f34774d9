"""How long eval's check of a data set takes before any work: every image opened and decoded
(``ddrm_helpers.datasets.check_images``), against reading the headers alone.

Without a folder it makes one: ``--count`` JPEGs of 500x375 pixels (ImageNet's usual size) of
noise, quality 90 (about 170 kB each, more than ImageNet's 110 kB average: a slow case).

    python bench/check_images.py                      # 1,000 made-up JPEGs in a temporary folder
    python bench/check_images.py /data/imagenet/val   # a real folder (its first --count images)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddrm_helpers.datasets import CHECK_THREADS, check_images, open_data  # noqa: E402


def make_jpegs(folder: Path, count: int) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(noise, i, axis=1)).save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="a data set folder (default: made-up JPEGs)")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder) if args.folder else Path(scratch)
        if not args.folder:
            make_jpegs(folder, args.count)
        data = open_data(folder, limit=args.count)
        started = time.perf_counter()
        for item in data.items:
            with Image.open(item.path) as image:
                image.size  # noqa: B018 (the header is read by open; nothing is decoded)
        headers = time.perf_counter() - started
        started = time.perf_counter()
        problems, _ = check_images(data, range(len(data)))
        checked = time.perf_counter() - started
    threads = min(CHECK_THREADS, os.cpu_count() or 1)
    print(f"{len(data)} images: headers alone {headers:.2f} s; check_images (decoded, {threads} threads) "
          f"{checked:.2f} s ({1000 * checked / len(data):.1f} ms an image); {len(problems)} could not be used")


if __name__ == "__main__":
    main()
