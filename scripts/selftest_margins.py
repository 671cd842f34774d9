"""What each of the self-test's checks measures over several seeds and digits: the table its margins rest on.

    python scripts/selftest_margins.py              # seeds 0 to 9, 16 digits and 3 samples each, on the CPU
    python scripts/selftest_margins.py --seeds 20 --device cuda

Run k restores held-out digits 16k to 16k + 15 (wrapping round the 300) with seed k, as
``python -m ddrm_helpers selftest`` restores digits 0 to 15 with seed 0, through the same
``run_check``. For each check of ``selftest.CHECKS`` it prints the smallest and largest gain of the
samples' mean over the baseline (against the margin), colour (against ``GREY_LIMIT``), noise
statistics (against ``NOISE_Z``) and, for noiseless tasks, the distance from the measurement
(against ``FLOAT32_TOLERANCE``; 0 means kept bit for bit), and how many runs failed. docs/ddrm.md
("Does it really restore?") has the table. Rerun it after a change to the sampler's draws, and set
the margins with headroom below the smallest gains.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ddrm_helpers.prior_checks import FLOAT32_TOLERANCE, GREY_LIMIT, NOISE_Z
from ddrm_helpers.selftest import CHECKS, DIGITS, SAMPLES, heldout_digits, run_check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs, seeds 0 to N - 1 (default 10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch's CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    digits, _ = heldout_digits()
    print(f"{args.seeds} runs on {args.device}: {DIGITS} digits, {SAMPLES} samples, seeds 0 to {args.seeds - 1}")
    print("| task | sigma_y | gain (dB) | margin | colour | noise: spread z, mean z | H x = y | failed runs |")
    print("|---|---|---|---|---|---|---|---|")
    for check in CHECKS:
        outcomes = []
        for seed in range(args.seeds):
            start = (seed * DIGITS) % len(digits)
            subset = (digits + digits)[start:start + DIGITS]
            outcomes.append(run_check(check, subset, device=args.device, seed=seed))
        gains = [o.gain for o in outcomes]
        colours = [o.colour for o in outcomes]
        spread = [o.noise.z_spread for o in outcomes]
        mean = [o.noise.z_mean for o in outcomes]
        noise = (f"{min(spread):+.2f}..{max(spread):+.2f}, {min(mean):+.2f}..{max(mean):+.2f}" if check.sigma_y
                 else f"none (largest {max(o.noise.largest for o in outcomes):.1g})")
        kept = [o.consistency for o in outcomes if o.consistency is not None]
        consistency = "-" if not kept else "kept bit for bit" if max(kept) == 0 else f"<= {max(kept):.1g}"
        failed = sum(not o.passed for o in outcomes)
        print(f"| `{check.task}` | {check.sigma_y:g} | {min(gains):+.1f}..{max(gains):+.1f} | {check.margin:+.1f} | "
              f"{min(colours):.4f}..{max(colours):.4f} | {noise} | {consistency} | {failed} |", flush=True)
    print(f"limits: colour <= {GREY_LIMIT}, |z| <= {NOISE_Z:g}, |H x_hat - y| <= {FLOAT32_TOLERANCE:g} "
          "(kept pixels: 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
