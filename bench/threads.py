"""How PyTorch's CPU thread count changes the self-test's time, on a quiet CPU and on a busy one.

    python bench/threads.py                  # 1 thread, 2 threads, the package's choice; 0 and N busy processes
    python bench/threads.py --busy 0 --repeats 3

Each row runs ``python -m ddrm_helpers selftest --device cpu`` in a fresh process, with
``DDRM_THREADS`` set to the count (PyTorch's default count is what the package used before it
chose; "choice" leaves the variable unset, so ``ddrm_helpers.threads`` decides from the load), while
``--busy`` other processes spin on the CPU (``while True: pass``; the default: none, then one per
CPU). It prints the wall time, the CPU time of the self-test's process, the thread count it reports
and the load average when it ended. docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"


def run_selftest(threads: str | None) -> tuple[float, float, str, int]:
    """(wall seconds, CPU seconds, the threads line of its table, exit status) of one self-test."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DDRM_THREADS")}
    if threads is not None:
        env["DDRM_THREADS"] = threads
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ddrm_helpers", "selftest", "--device", "cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    header = done.stdout.splitlines()[0] if done.stdout else done.stderr.strip()[-200:]
    found = re.search(r"\((\d+ threads?: [^)]*\)?)\)", header)
    return wall, cpu, found.group(1) if found else header, done.returncode


def main(argv=None) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    import torch

    default = torch.get_num_threads() if not os.environ.get("OMP_NUM_THREADS") else cpus
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, cpus],
                        help=f"how many spinning processes beside it (default: 0 and {cpus})")
    parser.add_argument("--threads", nargs="+", default=sorted({"1", str(default)}) + ["choice"],
                        help="DDRM_THREADS values, or 'choice' for the package's own (default: 1, PyTorch's "
                             f"default {default}, choice)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"{cpus} CPUs, PyTorch {torch.__version__} (its default: {default} threads); load before "
          f"{os.getloadavg()[0]:.1f}")
    print("| busy processes | DDRM_THREADS | wall (s) | CPU (s) | the self-test says | exit | load after |")
    print("|---|---|---|---|---|---|---|")
    for busy in args.busy:
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
        try:
            time.sleep(65 if busy else 0)  # the load average the package reads is over the last minute
            for threads in args.threads:
                for _ in range(args.repeats):
                    wall, cpu, said, code = run_selftest(None if threads == "choice" else threads)
                    print(f"| {busy} | {threads if threads != 'choice' else 'unset (choice)'} | {wall:.1f} | "
                          f"{cpu:.1f} | {said} | {code} | {os.getloadavg()[0]:.1f} |", flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
