"""This process's place among an evaluation's processes: rank 0 of 1, or one of ``torchrun``'s.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the processes join a ``torch.distributed`` group (NCCL on
GPUs, gloo on CPUs). Work that must be done once (looking at the output folder, fetching the
checkpoints, merging the records) is rank 0's, and its value, or the exception it raised, is
handed to every rank, so that no rank waits for one that gave up.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Ranks:
    """This process's rank and the number of processes, with the few collective steps evaluation needs."""

    def __init__(self, rank: int = 0, world: int = 1, owned: bool = False):
        self.rank, self.world, self.owned = rank, world, owned

    @classmethod
    def join(cls, device: torch.device) -> Ranks:
        """The group already set up by the caller, else torchrun's (``WORLD_SIZE`` > 1, joined here:
        NCCL on a GPU, gloo on a CPU), else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owned=True)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def on_zero(self, work):
        """``work()`` run by rank 0 alone, its value (or its exception) handed to every rank."""
        outcome = None
        if self.rank == 0:
            try:
                outcome = (True, work())
            except Exception as err:  # raised on every rank below, so that none waits for the others
                outcome = (False, err)
        if self.world > 1:
            box = [outcome]
            dist.broadcast_object_list(box, src=0)
            outcome = box[0]
        ok, value = outcome
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()
