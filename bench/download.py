"""Benchmark: fetch_checkpoint against a plain requests download of the same file, on loopback.

    python bench/download.py [--size-mb 512] [--repeat 3] [--dir DIR]

A server in its own process serves a file of random bytes with sendfile (as nginx would) and
honours Range. Printed:

1. throughput of a plain ``requests`` stream-to-file (1 MiB chunks, no hashing, no fsync) and of
   ``fetch_checkpoint`` (which also hashes every byte, fsyncs, verifies and renames), median of
   ``--repeat`` runs each, alternating, and their ratio (target: at least 0.9), unthrottled and at
   ``--rate-mb``; unthrottled, also the plain copy with each of our two costs added alone;
2. a download cut by the server at 60 % and resumed: the bytes the server sent beyond the file's
   size, as a share of the file (target: under 1 %).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from ddrm_helpers.download import RetryPolicy, fetch_checkpoint  # noqa: E402
from ddrm_helpers.registry import CheckpointSpec, Source  # noqa: E402


def serve(path: str, port_out, sent, cut_at, rate):
    """Serve ``path`` at /file; count body bytes in ``sent``; close once after ``cut_at`` bytes;
    send at most ``rate.value`` bytes per second when it is positive."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            size = os.path.getsize(path)
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Connection", "close")
            self.end_headers()
            end = size
            with cut_at.get_lock():
                if cut_at.value > start:
                    end, cut_at.value = cut_at.value, 0
            offset = start
            started = time.monotonic()
            with open(path, "rb") as f:
                try:
                    while offset < end:
                        step = end - offset if rate.value <= 0 else min(end - offset, 4 << 20)
                        n = os.sendfile(self.connection.fileno(), f.fileno(), offset, step)
                        if n == 0:
                            break
                        offset += n
                        with sent.get_lock():
                            sent.value += n
                        if rate.value > 0:
                            ahead = (offset - start) / rate.value - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                except OSError:
                    pass
            self.close_connection = True

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def plain_download(url: str, target: Path, hashed: bool = False, synced: bool = False) -> None:
    """The baseline: requests streaming to a file; ``hashed``/``synced`` add one cost of ours each."""
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as r, open(target, "wb") as f:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            f.write(chunk)
            if hashed:
                digest.update(chunk)
        if synced:
            f.flush()
            os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--rate-mb", type=float, default=100.0,
                        help="also compare at this serving rate in MB/s, a fast real link (0: skip)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ddrm-bench-", dir=args.dir))
    source = work / "served.bin"
    size = args.size_mb << 20
    with open(source, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    sha = hashlib.sha256(source.read_bytes()).hexdigest()

    ctx = mp.get_context("spawn")
    port_q, sent, cut_at, rate = ctx.Queue(), ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("d", 0.0)
    server = ctx.Process(target=serve, args=(str(source), port_q, sent, cut_at, rate), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port_q.get(timeout=30)}/file"
    spec = CheckpointSpec(key="bench", file="bench.bin", subdir="ours", size=size, sha256=sha, urls=(Source(url),))

    def compare(label: str) -> None:
        plain_times, ours_times = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            plain_download(url, work / "plain.bin")
            plain_times.append(time.perf_counter() - started)
            (work / "plain.bin").unlink()

            shutil.rmtree(work / "ours", ignore_errors=True)
            started = time.perf_counter()
            fetch_checkpoint(spec, work, progress=False, quiet=True)
            ours_times.append(time.perf_counter() - started)
        plain, ours = statistics.median(plain_times), statistics.median(ours_times)
        mb = size / 1e6
        print(f"{label}:")
        print(f"  plain requests stream-to-file : {mb / plain:7.0f} MB/s  ({plain:.2f} s; runs "
              + ", ".join(f"{t:.2f}" for t in plain_times) + ")")
        print(f"  fetch_checkpoint (hash+fsync) : {mb / ours:7.0f} MB/s  ({ours:.2f} s; runs "
              + ", ".join(f"{t:.2f}" for t in ours_times) + ")")
        print(f"  ratio fetch_checkpoint / plain: {plain / ours:.2f}  (target >= 0.90)")

    print(f"file: {size:,} bytes ({args.size_mb} MiB) on loopback; median of {args.repeat} runs; "
          f"{os.cpu_count()} CPUs")
    try:
        plain_download(url, work / "warmup.bin")  # page cache and connection paths warm
        (work / "warmup.bin").unlink()
        compare("unthrottled loopback (CPU-bound: server, client and hashing share the CPUs)")
        for label, options in (("plain + sha256 in the loop", {"hashed": True}),
                               ("plain + fsync at the end", {"synced": True})):
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                plain_download(url, work / "plain.bin", **options)
                times.append(time.perf_counter() - started)
                (work / "plain.bin").unlink()
            t = statistics.median(times)
            print(f"  (where the time goes) {label:27s}: {size / 1e6 / t:7.0f} MB/s  ({t:.2f} s)")
        if args.rate_mb > 0:
            rate.value = args.rate_mb * 1e6
            compare(f"served at {args.rate_mb:g} MB/s (a fast real connection)")
            rate.value = 0.0

        shutil.rmtree(work / "ours", ignore_errors=True)
        with sent.get_lock():
            sent.value = 0
        with cut_at.get_lock():
            cut_at.value = int(size * 0.6)
        path = fetch_checkpoint(spec, work, progress=False, quiet=True, retry=RetryPolicy(sleep=lambda s: None))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
        resent = sent.value - size
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    print(f"cut at 60 % and resumed: {resent:,} bytes sent again = {100 * resent / size:.3f} % (target < 1 %)")


if __name__ == "__main__":
    main()
