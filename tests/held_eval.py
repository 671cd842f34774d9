"""`evaluate` that stops half way, its folder's lock held, until told to go on: a second evaluation
of the same folder can then be started at a moment the test knows, with no sleep and no race.

    python tests/held_eval.py DATA OUT

It restores every image of DATA into OUT, then, at the first call of its feature network (KID's,
computed before the summary, the lock still held), prints ``holding`` and waits for a line on its
standard input. tests/test_eval_hostile.py runs it with tiny checkpoints (tests/tiny_models.py).
"""

from __future__ import annotations

import sys

from distributed_eval import StandIn


class Held(StandIn):
    """The stand-in feature network, which waits once to be told to go on."""

    def __init__(self):
        super().__init__()
        self.waited = False

    def forward(self, images):
        if not self.waited:
            self.waited = True
            print("holding", flush=True)
            sys.stdin.readline()
        return super().forward(images)


def main(data: str, out: str) -> None:
    from ddrm_helpers.evaluation import evaluate

    evaluate("celeba_hq", data, steps=2, out_dir=out, features=Held(), device="cpu", progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
