"""Train the self-test prior: this project's DDPM UNet as a noise predictor on 8x8 digits.

    python scripts/train_digits_prior.py              # about 10 minutes on a 2-core CPU
    python scripts/train_digits_prior.py --steps 200 --out /tmp/prior   # a quick try elsewhere

The data are the 1,797 handwritten digits of scikit-learn's ``load_digits`` (8x8, values 0..16,
shipped inside the scikit-learn wheel: nothing is downloaded). 300 of them, chosen by a seeded
permutation, are held out; their indices go to ``digits_split.json`` and the digits themselves to
``digits_heldout.npz``, which the self-test and the tests restore. The rest train the network.

Each digit goes through the package's own image loader (``load_images``: a float array in [0, 1]
becomes an 8-bit picture, then 3 equal channels in [-1, 1]), so the network is trained on exactly
what a run feeds it. The network is ``build_model`` of ``ddrm_helpers/prior/digits.yml`` (the DDPM
UNet, ``model.type: simple``), the schedule that config's ``diffusion`` section (500 linear steps,
1e-4 .. 0.04; deliberately not the 1000-step ImageNet one), the loss the usual
``|| eps - model(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2`` with ``t`` uniform over
``0 .. T-1``, the timestep the sampler passes. The exponential moving average of the weights is
saved (a plain float32 state dict, ``torch.save``; loadable with ``weights_only=True``), and its
size and sha256 are written into ``registry.yml``.

Everything is seeded (``--seed``): on the same PyTorch build and thread count the file comes out
the same; elsewhere it differs in the last bits, and the registry's sha256 with it.

scikit-learn is needed here and in the tests only (requirements-test.txt), never at run time.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package of this checkout, whatever is installed

from ddrm_helpers.config import load_config  # noqa: E402
from ddrm_helpers.images import load_images  # noqa: E402
from ddrm_helpers.models import build_model  # noqa: E402
from ddrm_helpers.schedule import alphas_cumprod, betas_from_config  # noqa: E402

PRIOR_DIR = REPO / "ddrm_helpers" / "prior"
HELD_OUT = 300
REGISTRY_HEADER = """\
# The registry of the self-test prior (ddrm_helpers/selftest.py): a CheckpointStore with
# root=ddrm_helpers/prior and this registry finds digits/digits_ddpm.pt in place and verifies it.
# The file ships with the package, so it is never downloaded in practice; the URL is where it lives
# in the repository. Written by scripts/train_digits_prior.py: retrain, and this file changes with it.
"""
RAW_URL = "https://raw.githubusercontent.com/ddrm-demo/ddrm-demo/main/ddrm_helpers/prior/digits/digits_ddpm.pt"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="optimiser steps (default 4000)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of AdamW")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999, help="decay of the weights' moving average")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 (default): the fastest on a shared 2-core CPU")
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--config", type=Path, default=PRIOR_DIR / "digits.yml")
    parser.add_argument("--out", type=Path, default=PRIOR_DIR,
                        help="folder for digits/digits_ddpm.pt, registry.yml, digits_split.json, digits_heldout.npz")
    return parser.parse_args(argv)


def split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), both sorted: the first HELD_OUT of a seeded permutation are held out."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[HELD_OUT:]), np.sort(order[:HELD_OUT])


def as_images(values: np.ndarray) -> torch.Tensor:
    """Digits (N, 8, 8) of values 0..16 as the package loads them: (N, 3, 8, 8) in [-1, 1]."""
    return load_images(list(values.astype(np.float64) / 16.0), values.shape[-1])


@torch.no_grad()
def noise_prediction_loss(model, x0: torch.Tensor, abar: torch.Tensor, draws: int, seed: int) -> float:
    """The mean squared error of the predicted noise over ``draws`` (t, eps) pairs per image, seeded."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total = 0.0
    for _ in range(draws):
        t = torch.randint(0, len(abar), (x0.shape[0],), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        total += float((model(x_t, t.float()) - eps).pow(2).mean())
    return total / draws


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from sklearn.datasets import load_digits  # a dev dependency: requirements-test.txt

    digits = load_digits()
    values = digits.images.astype(np.uint8)  # (1797, 8, 8), 0..16
    labels = digits.target.astype(np.uint8)
    train_idx, held_idx = split(len(values), args.seed)
    x_train, x_held = as_images(values[train_idx]), as_images(values[held_idx])

    config = load_config(args.config)
    abar = alphas_cumprod(betas_from_config(config)).float()
    steps_t = len(abar)
    torch.manual_seed(args.seed)
    model = build_model(config)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    parameters = sum(p.numel() for p in model.parameters())
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 1)

    def learning_rate(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        done = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))

    print(f"{len(train_idx)} training digits, {len(held_idx)} held out; {parameters:,} parameters; "
          f"{steps_t} timesteps, betas {config.diffusion.beta_start}..{config.diffusion.beta_end}; "
          f"{args.steps} steps of {args.batch}", flush=True)
    curve, evals = [], []
    started = time.perf_counter()
    running = 0.0
    for step in range(args.steps):
        model.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step)
        pick = torch.randint(0, x_train.shape[0], (args.batch,), generator=generator)
        x0 = x_train[pick]
        t = torch.randint(0, steps_t, (args.batch,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        loss = (model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t.float()) - eps).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            for kept, live in zip(ema.parameters(), model.parameters()):
                kept.lerp_(live, 1 - args.ema)
        running += float(loss.detach())
        if (step + 1) % args.log_every == 0:
            mean = running / args.log_every
            running = 0.0
            curve.append({"step": step + 1, "train_loss": round(mean, 5)})
            print(f"step {step + 1:6d}  train loss {mean:.4f}  lr {learning_rate(step):.2e}  "
                  f"{time.perf_counter() - started:6.0f} s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            held = noise_prediction_loss(ema, x_held, abar, draws=8, seed=1234)
            seen = noise_prediction_loss(ema, x_train[:HELD_OUT], abar, draws=8, seed=1234)
            evals.append({"step": step + 1, "heldout_loss": round(held, 5), "train_subset_loss": round(seen, 5)})
            print(f"step {step + 1:6d}  EMA noise-prediction loss: held-out {held:.4f}, "
                  f"300 training digits {seen:.4f}", flush=True)
    seconds = time.perf_counter() - started

    out = args.out
    (out / "digits").mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().float().contiguous().clone() for name, tensor in ema.state_dict().items()}
    checkpoint = out / "digits" / "digits_ddpm.pt"
    torch.save(state, checkpoint)
    payload = checkpoint.read_bytes()
    sha256 = hashlib.sha256(payload).hexdigest()
    loaded = torch.load(checkpoint, weights_only=True)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)

    entry = {
        "description": "Self-test prior: the DDPM UNet (ch 32, ch_mult 1,2) trained on scikit-learn's 8x8 digits",
        "file": checkpoint.name, "subdir": "digits", "size": len(payload), "sha256": sha256,
        "urls": [{"url": RAW_URL, "note": "the repository's copy; the file ships with the package"}],
        "sources": {"sha256": "scripts/train_digits_prior.py wrote the file and this hash"},
    }
    import yaml

    listed = yaml.safe_dump({"digits_ddpm": entry}, sort_keys=False, width=120)
    (out / "registry.yml").write_text(REGISTRY_HEADER + "\n" + listed)
    np.savez_compressed(out / "digits_heldout.npz", images=values[held_idx], labels=labels[held_idx],
                        indices=held_idx.astype(np.int16))
    record = {
        "dataset": "sklearn.datasets.load_digits (1797 digits, 8x8, values 0..16)",
        "rule": f"numpy.random.default_rng({args.seed}).permutation(1797); the first {HELD_OUT} are held out",
        "heldout_indices": held_idx.tolist(),
        "training": {
            "command": " ".join(["python scripts/train_digits_prior.py", *(sys.argv[1:] if argv is None else argv)]),
            "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "parameters": parameters, "seconds": round(seconds, 1), "torch": torch.__version__,
            "machine": f"{platform.machine()}, {args.threads} threads",
            "curve": curve, "evaluations": evals,
        },
    }
    (out / "digits_split.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {checkpoint} ({len(payload):,} bytes, sha256 {sha256}) after {seconds:.0f} s; "
          f"final held-out noise-prediction loss {evals[-1]['heldout_loss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
