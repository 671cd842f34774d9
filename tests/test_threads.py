"""PyTorch's thread count on a CPU (ddrm_helpers/threads.py): the choice, made once, said when the
machine is busy; and eval, which computes with the same count in every process whatever the load.

The machine's figures (the count PyTorch would use, the CPUs, the load) are handed in: nothing here
depends on how busy the machine that runs the tests is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import cli, engine, threads
from ddrm_helpers.errors import ArgumentError
from ddrm_helpers.evaluation import evaluate

from .distributed_eval import StandIn
from .tiny_models import install_tiny_checkpoints


def choose(busy: float, cpus: int = 2, default: int = 2, **environ):
    return threads.choose(environ, default=default, cpus=cpus, busy=busy)


def test_a_free_cpu_keeps_pytorchs_default_and_a_busy_one_gets_what_is_free():
    assert choose(busy=0.2).count == 2 and not choose(busy=0.2).lowered
    assert choose(busy=0.7).count == 2 and choose(busy=0.8).count == 1  # busy three quarters of the minute
    busy = choose(busy=1.8)  # another process on one core of two
    assert busy.count == 1 and busy.lowered and busy.reason == "the CPU is busy (load 1.8 on 2 CPUs)"
    assert "set DDRM_THREADS=N to choose" in busy.note()
    assert choose(busy=7.0).count == 1  # never fewer than one
    assert choose(busy=4.0, cpus=16, default=8).count == 8  # 12 free CPUs: PyTorch's 8, no more
    assert choose(busy=10.4, cpus=16, default=8).count == 6


def test_the_user_chooses_with_ddrm_threads_or_the_openmp_variables():
    assert choose(busy=1.8, DDRM_THREADS="2").count == 2
    kept = choose(busy=1.8, OMP_NUM_THREADS="2")  # PyTorch read it: its count stays
    assert kept.count == 2 and not kept.lowered and kept.reason == "OMP_NUM_THREADS=2"
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ArgumentError, match=f"DDRM_THREADS={bad}: give a whole number of threads, 1 or more"):
            choose(busy=0, DDRM_THREADS=bad)


def test_apply_sets_the_count_once_per_process_and_says_it_only_when_busy(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_applied", None)
    monkeypatch.setattr(threads, "choose", lambda: threads.Choice(1, 2, "the CPU is busy (load 1.8 on 2 CPUs)", True))
    said = []
    try:
        assert threads.apply("cuda:0", say=said.append) is None and torch.get_num_threads() == before  # a GPU
        assert threads.apply("cpu", say=said.append).count == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(before)
        assert threads.apply(None if not torch.cuda.is_available() else "cpu", say=said.append).count == 1
        assert torch.get_num_threads() == before  # chosen once: a later call leaves the process as it is
        assert said == ["note: the CPU is busy (load 1.8 on 2 CPUs), so PyTorch computes with 1 of its 2 threads "
                        "(more would wait for each other); set DDRM_THREADS=N to choose"]
    finally:
        torch.set_num_threads(before)


def test_eval_computes_with_one_thread_on_a_cpu_whatever_the_load_unless_ddrm_threads_says():
    assert threads.for_evaluation("cpu", {}) == 1
    assert threads.for_evaluation("cpu", {"DDRM_THREADS": "3", "OMP_NUM_THREADS": "8"}) == 3
    assert threads.for_evaluation("cuda", {}) is None  # a GPU's results do not depend on it


def test_a_bad_ddrm_threads_is_one_line_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setenv("DDRM_THREADS", "many")
    assert cli.main(["run", "--config", "celeba_hq", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == ("error: DDRM_THREADS=many: give a whole number of threads, 1 or more "
                                               "(or unset it to let the package choose)")


@pytest.mark.server
def test_eval_restores_with_its_own_count_in_a_process_set_to_another_and_puts_it_back(server, tmp_path,
                                                                                      monkeypatch):
    """torchrun starts each rank with one thread; one process started with PyTorch's default must
    compute its records with the same count, or they round differently (issue 17)."""
    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"img{i}.png")
    seen = []
    sample = engine.sample_measurements

    def counted(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return sample(*args, **kwargs)

    monkeypatch.setattr(engine, "sample_measurements", counted)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate("celeba_hq", data, task="sr4", steps=1, out_dir=tmp_path / "out", features=StandIn(), device="cpu",
                 progress=False)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
