"""How many threads PyTorch computes with on a CPU (its intra-op threads): the one place that decides.

PyTorch starts one thread per physical core and splits every operation among them; each operation
then waits for its slowest thread. On cores that other processes keep busy, a thread that has lost
its core holds all the others up: ``python -m ddrm_helpers selftest`` took 7 s on one thread and 38
to 212 s on the default two of a 2-core machine with another process busy on every core
(``bench/threads.py``, docs/performance.md). So the package chooses (:func:`choose`):

1. ``DDRM_THREADS=N`` in the environment: N.
2. ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` set: PyTorch read them; that choice is kept.
3. Otherwise the CPUs this process may run on, less those the load average says other processes
   keep busy (a CPU counts as busy when the load over the last minute says it was busy three
   quarters of it), at least 1 and at most PyTorch's own default.

The command line, the notebook's device cell and the self-test apply it once per process
(:func:`apply`); a library call such as ``run_config`` leaves the process as the caller set it.

``eval`` is different: its records must not depend on how the work was split (one process, or
ranks under ``torchrun``, which starts each rank with one thread), and a sum computed by two threads
rounds differently from the same sum on one. So on a CPU it computes with the same count in every
process: ``DDRM_THREADS`` if set, else 1 (:func:`for_evaluation`); the load is not consulted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import ArgumentError

ENV = "DDRM_THREADS"
LIBRARY_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
EVALUATION_THREADS = 1

_applied: Choice | None = None


@dataclass(frozen=True)
class Choice:
    """A thread count and why: ``count``, the ``default`` PyTorch would use, and a few words of ``reason``."""

    count: int
    default: int
    reason: str
    lowered: bool = False  # fewer than PyTorch's default because the machine is busy: worth one line

    def __str__(self) -> str:
        return f"{self.count} thread{'s' if self.count != 1 else ''}: {self.reason}"

    def note(self) -> str:
        """The one line that says what was chosen, why, and how to choose otherwise."""
        return (f"note: {self.reason}, so PyTorch computes with {self.count} of its {self.default} threads (more "
                f"would wait for each other); set {ENV}=N to choose")


def requested(environ=None) -> int | None:
    """The count ``DDRM_THREADS`` asks for, or None; anything but a whole number >= 1 raises ``ArgumentError``."""
    value = (os.environ if environ is None else environ).get(ENV)
    if value is None or not value.strip():
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ArgumentError(f"{ENV}={value}: give a whole number of threads, 1 or more (or unset it to let the "
                            "package choose)")
    return count


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cpus() -> float:
    """How many CPUs other processes keep busy: the load average over the last minute (0 where unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose(environ=None, *, default: int | None = None, cpus: int | None = None, busy: float | None = None) -> Choice:
    """The count for CPU work by the rules of the module docstring. ``default`` (PyTorch's current
    count), ``cpus`` and ``busy`` are read from this machine unless given (the tests give them)."""
    environ = os.environ if environ is None else environ
    if default is None:
        import torch

        default = torch.get_num_threads()
    asked = requested(environ)
    if asked is not None:
        return Choice(asked, default, f"{ENV}={asked}")
    library = next((name for name in LIBRARY_ENV if environ.get(name, "").strip()), None)
    if library is not None:
        return Choice(default, default, f"{library}={environ[library]}")
    cpus = usable_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    free = max(1, min(default, cpus - math.floor(busy + 0.25)))
    load = f"load {busy:.1f} on {cpus} CPUs"
    if free < default:
        return Choice(free, default, f"the CPU is busy ({load})", lowered=True)
    return Choice(free, default, f"PyTorch's default, the CPU is free ({load})")


def apply(device=None, say=None) -> Choice | None:
    """Set PyTorch's thread count by :func:`choose`, once per process, when the work runs on the CPU
    (``device`` None or a CPU; a GPU's results do not depend on it). ``say`` (``print``, say) gets
    the one line of :meth:`Choice.note` when the count was lowered because the machine is busy.
    Returns the choice made (this call's or an earlier one's), or None for a GPU."""
    global _applied
    import torch

    if device is not None and torch.device(device).type != "cpu":
        return None
    if device is None and torch.cuda.is_available():
        return None
    if _applied is None:
        _applied = choose()
        torch.set_num_threads(_applied.count)
        if say is not None and _applied.lowered:
            say(_applied.note())
    return _applied


def for_evaluation(device, environ=None) -> int | None:
    """The count ``eval`` computes with on ``device``: ``DDRM_THREADS`` if set, else 1, on a CPU;
    None (leave it) on a GPU."""
    import torch

    if torch.device(device).type != "cpu":
        return None
    return requested(environ) or EVALUATION_THREADS


def set_count(count: int | None) -> int:
    """Set PyTorch's thread count to ``count`` (None: leave it); returns the count before, to put back."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    return before

