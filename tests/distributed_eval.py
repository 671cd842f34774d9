"""`evaluate` with a small stand-in for the Inception network, as a script that torchrun can start.

    torchrun --standalone --nproc_per_node=2 tests/distributed_eval.py DATA OUT STEPS

tests/test_evaluate.py runs it with tiny checkpoints (the environment of tests/tiny_models.py) on the
CPU (gloo) and compares its records, KID and FID with those of one process.
"""

from __future__ import annotations

import sys

import torch


class StandIn(torch.nn.Module):
    """A fixed small network in place of Inception-v3: ``uint8`` images ``[N, 3, H, W]`` -> 16 features."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.tanh(self.conv(images.float() / 127.5 - 1))
        return features.mean(dim=(2, 3))


def main(data: str, out: str, steps: str) -> None:
    from ddrm_helpers.evaluation import evaluate

    evaluate("celeba_hq", data, task="sr4", sigma_y=0.05, steps=int(steps), out_dir=out, features=StandIn(),
             device="cpu", progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
