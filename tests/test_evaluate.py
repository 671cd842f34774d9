"""`evaluate` and `python -m ddrm_helpers eval`, with tiny CelebA-HQ checkpoints (32x32) from a local
server: two processes under torchrun give the records of one; a job killed half way resumes and
computes no image twice; the summary's statistics on records made by hand; the data sets it reads."""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ddrm_helpers import cli
from ddrm_helpers.datasets import open_data
from ddrm_helpers.distribution import feature_network
from ddrm_helpers.errors import ClassLabelError, ImageError
from ddrm_helpers.evaluation import evaluate, image_seed
from ddrm_helpers.summary import csv_text, markdown, mean_interval, paper_figures, summarize, summary_files, t_quantile

from .conftest import REPO
from .distributed_eval import StandIn

# What must be the same, image by image, however the work was split
COMPARED = ("index", "name", "seed", "psnr", "ssim", "psnr_degraded", "ssim_degraded", "consistency", "consistency_rel")


def make_images(folder, count: int):
    """``count`` small random PNGs of different shapes (cropped and resized to 32x32 when loaded)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        shape = (36 + 4 * (i % 4), 44 - 2 * (i % 5), 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def same_records(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert (a["index"], a["name"], a["seed"]) == (b["index"], b["name"], b["seed"])
        for key in COMPARED[3:]:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["index"], key)


def png(folder, index: int) -> np.ndarray:
    return np.asarray(Image.open(folder / "restored" / f"{index:06d}.png"))


@pytest.mark.server
@pytest.mark.subprocess
def test_two_processes_under_torchrun_give_the_records_of_one(tiny, tmp_path):
    data = make_images(tmp_path / "data", 5)
    one = evaluate("celeba_hq", data, task="sr4", sigma_y=0.05, steps=2, out_dir=tmp_path / "one", features=StandIn(),
                   device="cpu", progress=False)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests" / "distributed_eval.py"), str(data), str(tmp_path / "two"), "2"],
                          env=tiny, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    two = tmp_path / "two"

    # Both ranks worked (images 0, 2, 4 and 1, 3), and the merged records are those of one process.
    assert [len(lines(p)) for p in sorted((two / "records").iterdir())] == [3, 2]
    merged = lines(two / "records.jsonl")
    same_records(one.records, merged)
    assert [r["seed"] for r in merged] == [image_seed(0, i) for i in range(5)]
    assert len({r["psnr"] for r in merged}) == 5  # five different images, not one five times
    assert all(np.array_equal(png(tmp_path / "one", i), png(two, i)) for i in range(5))

    # KID and FID: over both ranks' images, gathered by torchmetrics: the one-process figures.
    mine, theirs = one.summary["distribution"], json.loads((two / "summary.json").read_text())["distribution"]
    assert mine["note"] is None and mine["images"] == theirs["images"] == 5
    assert mine["kid_x1e3"] > 0 and mine["fid"] > 0
    assert theirs["kid_x1e3"] == pytest.approx(mine["kid_x1e3"], rel=1e-6)
    assert theirs["fid"] == pytest.approx(mine["fid"], rel=1e-4, abs=1e-6)
    assert "| KID x 1e3" in (two / "summary.md").read_text()


@pytest.mark.server
@pytest.mark.subprocess
def test_a_job_killed_half_way_resumes_and_computes_no_image_twice(tiny, tmp_path, capsys):
    data = make_images(tmp_path / "data", 12)
    out = tmp_path / "out"
    argv = ["eval", "--config", "celeba_hq", "--data", str(data), "--steps", "3", "--out", str(out), "--no-kid",
            "--device", "cpu"]
    job = subprocess.Popen([sys.executable, "-m", "ddrm_helpers", *argv], env=tiny, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    log = out / "records" / "rank-00000.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_bytes().count(b"\n") >= 2):
        assert job.poll() is None, job.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    job.stderr.close()
    before = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(before) < 12 and not (out / "records.jsonl").exists()
    with open(log, "ab") as f:  # as if the kill had cut the next record short
        f.write(b'{"index": 11, "name": "img1')

    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    assert f"Resuming {out}: {len(before)} of 12 images already have a record." in said
    assert "KID/FID not computed: no feature network (features=None)." in said

    written = [json.loads(line) for line in log.read_text().splitlines() if line != '{"index": 11, "name": "img1']
    assert sorted(r["index"] for r in written) == list(range(12))  # each image computed once
    assert written[: len(before)] == before  # the records of the killed job kept as they were
    merged = lines(out / "records.jsonl")
    assert [r["index"] for r in merged] == list(range(12))
    assert sorted(p.name for p in (out / "restored").iterdir()) == [f"{i:06d}.png" for i in range(12)]
    whole = evaluate("celeba_hq", data, steps=3, out_dir=tmp_path / "whole", features=None, device="cpu",
                     progress=False)
    same_records(whole.records, merged)  # resumed, the records are those of a run never stopped


def test_the_summary_means_and_intervals_are_right_on_records_made_by_hand(tmp_path):
    records = [{"index": i, "name": f"x{i}", "psnr": p, "ssim": s, "consistency": c, "consistency_rel": c / 10,
                "seconds": 2.0, "finite": True}
               for i, (p, s, c) in enumerate([(20.0, 0.5, 1.0), (22.0, 0.6, 1.0), (24.0, 0.7, 1.0), (26.0, 0.8, 1.0)])]
    records.append({"index": 4, "name": "x4", "psnr": None, "ssim": None, "consistency": None,
                    "consistency_rel": None, "seconds": 2.0, "finite": False})  # a NaN restoration, written as null
    run = {"config": "imagenet_256", "task": "sr4", "sigma_y": 0.05, "steps": 20, "eta": 0.85, "eta_b": 1.0,
           "seed": 0, "data": "five images"}
    distribution = {"images": 5, "kid_x1e3": 12.0, "kid_std_x1e3": 0.5, "fid": 30.0, "note": None}
    summary = summarize(records, run, distribution)

    # PSNR 20, 22, 24, 26: mean 23, sample std sqrt(20/3), t(0.975, 3) = 3.182446
    half = 3.182446305 * math.sqrt(20 / 3) / 2
    assert summary["metrics"]["psnr"] == pytest.approx({"mean": 23.0, "low": 23.0 - half, "high": 23.0 + half, "n": 4})
    half = 3.182446305 * math.sqrt(0.05 / 3) / 2
    assert summary["metrics"]["ssim"] == pytest.approx({"mean": 0.65, "low": 0.65 - half, "high": 0.65 + half, "n": 4})
    assert summary["metrics"]["consistency"] == pytest.approx({"mean": 1.0, "low": 1.0, "high": 1.0, "n": 4})
    assert summary["metrics"]["seconds"]["n"] == 5 and summary["images"] == 5 and summary["not_finite"] == 1
    assert (summary["paper"]["psnr"], summary["paper"]["kid_x1e3"]) == (25.21, 12.43)

    text = markdown(summary)
    assert "| PSNR (dB) | 23.00 | 18.89 | 27.11 | 4 | 25.21 |" in text
    assert "| SSIM | 0.6500 | 0.4446 | 0.8554 | 4 |  |" in text
    assert "| KID x 1e3 (mean over subsets; low/high: +- one std) | 12.00 | 11.50 | 12.50 | 5 | 12.43 |" in text
    assert "| FID | 30.00 |  |  | 5 |  |" in text
    assert "FAILED: 1 restoration(s) are not finite" in text
    rows = list(csv.DictReader(io.StringIO(csv_text(summary))))
    assert rows[0] == {"metric": "PSNR (dB)", "mean": "23.00", "low": "18.89", "high": "27.11", "n": "4",
                       "paper": "25.21"}
    files = summary_files(summary)
    assert list(files) == ["summary.md", "summary.csv", "summary.json"] and files["summary.md"] == text
    assert json.loads(files["summary.json"])["metrics"]["psnr"]["mean"] == 23.0

    # The paper's figures only beside the paper's setting
    assert paper_figures("imagenet_256", "deblur_uni", 0.0, 20, 0.85, 1.0)["psnr"] == 35.64
    for other in [("imagenet_256_cc", "sr4", 0.05, 20, 0.85, 1.0), ("imagenet_256", "sr4", 0.05, 10, 0.85, 1.0),
                  ("imagenet_256", "sr4", 0.1, 20, 0.85, 1.0), ("imagenet_256", "sr_bicubic4", 0.0, 20, 0.85, 1.0),
                  ("imagenet_256", "sr4", 0.0, 20, 0.5, 1.0)]:
        assert paper_figures(*other) is None
    assert "Paper: no figure for this setting" in markdown(summarize(records, {**run, "steps": 10}, distribution))


def test_the_t_quantiles_are_students():
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 9: 2.2622, 29: 2.0452, 999: 1.9623}  # printed t tables, p = 0.975
    for df, value in table.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-4)
    assert mean_interval([5.0]) == (5.0, None, None)
    assert mean_interval([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, 2.5 - 2.0542, 2.5 + 2.0542), abs=1e-4)


def test_the_data_sets_it_reads(tmp_path):
    from torchvision.datasets import ImageFolder

    folder = make_images(tmp_path / "flat", 3)
    (folder / "notes.txt").write_text("not an image")
    flat = open_data(folder)
    assert [item.name for item in flat.items] == ["img00.png", "img01.png", "img02.png"]
    assert all(item.label is None for item in flat.items) and len(open_data(folder, limit=2)) == 2

    # A list file, the reference's form: paths relative to its folder or to root, a class index or none.
    (tmp_path / "val" / "n01").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "val" / "n01" / "a.JPEG")
    Image.new("RGB", (30, 40)).save(tmp_path / "val" / "b.png")
    listing = tmp_path / "lists" / "val_2.txt"
    listing.parent.mkdir()
    listing.write_text("# two images\nn01/a 281\n\nb.png\n")
    listed = open_data(listing, root=tmp_path / "val")
    assert [(i.name, i.label, i.path.name) for i in listed.items] == [("n01/a.JPEG", 281, "a.JPEG"),
                                                                       ("b.png", None, "b.png")]
    with pytest.raises(FileNotFoundError, match=r"2 of the 2 images of .*val_2.txt are not under .*lists"):
        open_data(listing)  # the paths are not relative to the list's own folder
    listing.write_text("n01/a 1000\n")
    with pytest.raises(ClassLabelError, match="line 1: class 1000 is not an ImageNet class index"):
        open_data(listing, root=tmp_path / "val")

    # Class subfolders: torchvision's ImageFolder, as a path or as the object; two classes are not ImageNet's.
    for name in ("cats", "dogs"):
        make_images(tmp_path / "classes" / name, 2)
    by_path, by_object = open_data(tmp_path / "classes"), open_data(ImageFolder(str(tmp_path / "classes")))
    assert [i.name for i in by_path.items] == ["cats/img00.png", "cats/img01.png", "dogs/img00.png", "dogs/img01.png"]
    assert by_path.items == by_object.items and not by_path.imagenet_labels
    assert all(item.label is None for item in by_path.items)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no image"):
        open_data(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="No data set at"):
        open_data(tmp_path / "absent")


@pytest.mark.server
def test_eval_says_why_kid_is_missing_refuses_other_settings_and_resumes_a_finished_one(tiny, tmp_path, capsys,
                                                                                         monkeypatch):
    data = make_images(tmp_path / "data", 3)
    out = tmp_path / "out"
    argv = ["eval", "--config", "celeba_hq", "--device", "cpu", "--data", str(data), "--steps", "2", "--out", str(out)]
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as where it is not installed
    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    kid_lines = [line for line in said.splitlines() if "KID" in line]
    assert kid_lines == ["KID/FID not computed: torch-fidelity, which provides the Inception network, is not "
                         "installed (pip install torch-fidelity; docs/evaluation.md)."]
    assert "| PSNR (dB) |" in said and "| SSIM |" in said
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distribution"]["kid_x1e3"] is None and summary["metrics"]["psnr"]["n"] == 3

    written = (out / "records" / "rank-00000.jsonl").read_text()
    assert cli.main(argv) == 0  # everything has a record: nothing is computed again
    assert f"Resuming {out}: 3 of 3 images already have a record." in capsys.readouterr().out
    assert (out / "records" / "rank-00000.jsonl").read_text() == written

    assert cli.main([*argv[:-4], "--steps", "3", "--out", str(out)]) == 2
    assert "holds an evaluation with other settings (steps 2 there, 3 here)" in capsys.readouterr().err
    assert cli.main([*argv, "--limit", "0"]) == 2
    assert "--limit is how many images of the data set to evaluate" in capsys.readouterr().err
    assert cli.main(["eval", "--config", "celeba_hq", "--data", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "error: No data set at" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    assert feature_network(StandIn(), None) == (None, "KID/FID not computed: torchmetrics is not installed (pip "
                                                      "install torchmetrics torch-fidelity; docs/evaluation.md).")
