"""`eval` against folders, data sets and records that misbehave, one way per test, with tiny CelebA-HQ
checkpoints (32x32) from a local server. What must hold, as a careful tool would have it: nothing is
written through a link or outside ``--out``, nothing a user had is lost, each problem is one line
(exit 2 before anything is loaded or written; a record with its error for an image that cannot be
read), and a rerun of the same command completes what was left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from ddrm_helpers import cli
from ddrm_helpers.datasets import open_data
from ddrm_helpers.errors import ImageError

from .conftest import REPO
from .test_evaluate import lines, make_images
from .test_image_limits import pipe_with_a_png, png_header

pytestmark = pytest.mark.server


def argv(data, out, *more) -> list[str]:
    return ["eval", "--config", "celeba_hq", "--data", str(data), "--out", str(out), "--steps", "2", "--no-kid",
            "--device", "cpu", *more]


def refused(args, capsys) -> str:
    """The CLI exits 2 with one line ``error: ...`` and no traceback; returns that line."""
    capsys.readouterr()  # what came before
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return err[0]


def snapshot(folder) -> dict:
    """Every name under ``folder`` (links not followed) with its content or link target."""
    found = {}
    for here, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    found[rel] = f.read()
            else:
                found[rel] = "folder"
    return found


@pytest.fixture
def victim(tmp_path):
    """A file of the user's, outside the evaluation, that a planted link points at."""
    path = tmp_path / "victim.txt"
    path.write_text("the user's precious notes")
    return path


def test_links_planted_at_the_temporary_names_eval_used_are_not_written_through(tiny, tmp_path, victim, capsys):
    data, out = make_images(tmp_path / "data", 4), tmp_path / "out"
    assert cli.main(argv(data, out, "--limit", "2")) == 0
    for name in (".run.json.partial", ".records.jsonl.partial", "restored/.000002.partial.png",
                 "restored/.000003.partial.png", ".summary.md.partial", "records/.rank-00000.jsonl.partial"):
        (out / name).symlink_to(victim)
    assert cli.main(argv(data, out)) == 0
    assert victim.read_text() == "the user's precious notes"
    assert [r["index"] for r in lines(out / "records.jsonl")] == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "restored").iterdir() if not p.is_symlink()) == [
        f"{i:06d}.png" for i in range(4)]
    assert f"Resuming {out}: 2 of 4 images already have a record." in capsys.readouterr().out
    assert cli.main(argv(data, out, "--limit", "1")) == 0  # a smaller --limit: the first image, done
    assert f"Resuming {out}: 1 of 1 images already have a record." in capsys.readouterr().out


@pytest.mark.parametrize("name", ["summary.md", "records.jsonl", "records/rank-00000.jsonl", "restored/000002.png",
                                  "run.json"])
def test_a_link_at_a_name_eval_writes_is_refused_before_any_work(tiny, tmp_path, victim, capsys, name, monkeypatch):
    data, out = make_images(tmp_path / "data", 3), tmp_path / "out"
    assert cli.main(argv(data, out, "--limit", "2")) == 0
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(victim)
    before = snapshot(out)
    monkeypatch.setattr("ddrm_helpers.engine.load_networks", lambda *a, **k: pytest.fail("networks were loaded"))
    line = refused(argv(data, out), capsys)
    assert line.startswith(f"error: {out / name} (") and f"is a symbolic link (to {victim})" in line
    assert "give another --out" in line
    assert snapshot(out) == before and victim.read_text() == "the user's precious notes"


@pytest.mark.parametrize("plant", ["run.json a folder", "records a file", "restored a link", "records.jsonl a pipe"])
def test_a_folder_where_a_file_belongs_or_a_file_where_a_folder_belongs_is_one_line(tiny, tmp_path, capsys, plant):
    data, out = make_images(tmp_path / "data", 2), tmp_path / "out"
    assert cli.main(argv(data, out)) == 0
    if plant == "run.json a folder":
        (out / "run.json").unlink()
        (out / "run.json").mkdir()
        expected = f"{out / 'run.json'} (the settings) is a folder"
    elif plant == "records a file":
        for log in (out / "records").iterdir():
            log.unlink()
        (out / "records").rmdir()
        (out / "records").write_text("not a folder")
        expected = f"{out / 'records'} (the records folder) is a file, not a folder"
    elif plant == "restored a link":
        (out / "restored").rename(tmp_path / "elsewhere")
        (out / "restored").symlink_to(tmp_path / "elsewhere")
        expected = f"{out / 'restored'} (the restored images' folder) is a symbolic link"
    else:
        (out / "records.jsonl").unlink()
        os.mkfifo(out / "records.jsonl")
        expected = f"{out / 'records.jsonl'} (every record, merged) is a named pipe"
    before = snapshot(out)
    assert refused(argv(data, out), capsys).startswith(f"error: {expected}")
    assert snapshot(out) == before


def test_files_of_something_else_in_a_folder_without_run_json_are_not_written_over(tiny, tmp_path, capsys):
    data, out = make_images(tmp_path / "data", 2), tmp_path / "notes"
    out.mkdir()
    (out / "summary.md").write_text("my own summary of something else")
    line = refused(argv(data, out), capsys)
    assert line.startswith(f"error: {out} holds summary.md but no run.json")
    assert snapshot(out) == {"summary.md": b"my own summary of something else"}


def record_lines(out) -> list[bytes]:
    return (out / "records" / "rank-00000.jsonl").read_bytes().splitlines()


def test_lines_that_are_not_records_are_set_aside_said_once_and_their_images_computed_again(tiny, tmp_path, capsys):
    data, out = make_images(tmp_path / "data", 4), tmp_path / "out"
    assert cli.main(argv(data, out)) == 0
    good = lines(out / "records.jsonl")
    capsys.readouterr()
    kept = record_lines(out)
    nan = kept[1].replace(b'"psnr": ' + json.dumps(good[1]["psnr"]).encode(), b'"psnr": NaN')
    assert b"NaN" in nan
    huge = kept[2].replace(b'"ssim": ' + json.dumps(good[2]["ssim"]).encode(), b'"ssim": 1e999')
    assert b"1e999" in huge
    not_records = [b"[1, 2, 3]", b'{"index": "three", "name": "img03.png"}', b'{"index": 3}', b"\xff\xfe not text"]
    (out / "records" / "rank-00000.jsonl").write_bytes(b"\n".join([kept[0], nan, huge, *not_records]) + b"\n")
    (out / "records.jsonl").unlink()

    assert cli.main(argv(data, out)) == 0
    said = capsys.readouterr().out
    notes = [line for line in said.splitlines() if "not records" in line]
    assert notes == [f"note: 6 line(s) of {out / 'records'} are not records (rank-00000.jsonl line 2: a non-finite "
                     f"number (NaN)); they are kept in {out / 'records' / 'set-aside.txt'} and their images computed "
                     "again."]
    assert f"Resuming {out}: 1 of 4 images already have a record." in said
    again = lines(out / "records.jsonl")
    assert [r["index"] for r in again] == [0, 1, 2, 3]
    for before, after in zip(good, again):  # computed again, the same figures
        assert after["psnr"] == pytest.approx(before["psnr"], rel=1e-6)
    side = (out / "records" / "set-aside.txt").read_bytes()
    assert nan in side and huge in side and all(line in side for line in not_records)
    assert b"# rank-00000.jsonl line 3: a non-finite number in ssim" in side

    assert cli.main(argv(data, out)) == 0  # set aside once: said once
    assert "not records" not in capsys.readouterr().out


def test_unreadable_images_are_said_before_loading_recorded_with_their_error_and_counted(tiny, tmp_path, capsys,
                                                                                         monkeypatch):
    data, out = make_images(tmp_path / "data", 3), tmp_path / "out"
    png_header(data / "bomb.png", 50_000, 50_000)
    Image.new("RGB", (40, 40), (0, 90, 200)).save(data / "cut.png")
    (data / "cut.png").write_bytes((data / "cut.png").read_bytes()[:60])
    (data / "fake.png").write_text("a text file with an image's name")
    said_before_load = []
    real_load = __import__("ddrm_helpers.engine", fromlist=["load_networks"]).load_networks

    def load_networks(*args, **kwargs):
        said_before_load.append(capsys.readouterr().out)
        return real_load(*args, **kwargs)

    monkeypatch.setattr("ddrm_helpers.engine.load_networks", load_networks)
    with pipe_with_a_png(data / "pipe.png") as opened:
        assert cli.main(argv(data, out)) == 1  # not every image could be evaluated
        assert opened == []
    before = [line for line in said_before_load[0].splitlines() if line.startswith("cannot evaluate")]
    assert len(before) == 4
    assert before[0].startswith("cannot evaluate bomb.png (image 0):") and "2,500,000,000 pixels" in before[0]
    assert before[1].startswith("cannot evaluate cut.png (image 1): ") and "truncated" in before[1].lower()
    assert before[3].startswith("cannot evaluate pipe.png (image 6):") and "is a named pipe" in before[3]

    records = lines(out / "records.jsonl")
    errors = {r["name"]: r["error"] for r in records if "error" in r}
    assert sorted(errors) == ["bomb.png", "cut.png", "fake.png", "pipe.png"] and len(records) == 7
    assert sorted(p.name for p in (out / "restored").iterdir()) == ["000003.png", "000004.png", "000005.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unreadable"] == 4 and summary["metrics"]["psnr"]["n"] == 3
    text = (out / "summary.md").read_text()
    assert "NOT EVALUATED: 4 of 7 image(s) could not be read (bomb.png, cut.png, fake.png, ...)" in text

    # The user replaces two of them: the rerun restores those and keeps the others' errors, once each.
    os.unlink(data / "pipe.png")
    for name in ("fake.png", "pipe.png"):
        Image.fromarray(np.random.default_rng(7).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / name)
    assert cli.main(argv(data, out)) == 1
    records = lines(out / "records.jsonl")
    assert sorted(r["name"] for r in records if "error" in r) == ["bomb.png", "cut.png"]
    assert sum(1 for line in record_lines(out) if b'"bomb.png"' in line) == 1  # the same error not written twice
    assert json.loads((out / "summary.json").read_text())["unreadable"] == 2


def test_an_image_smaller_than_the_model_is_said_before_loading_and_evaluated_upscaled(tiny, tmp_path, capsys):
    data, out = make_images(tmp_path / "data", 2), tmp_path / "out"
    Image.new("RGB", (20, 16), (90, 10, 10)).save(data / "small.png")
    assert cli.main(argv(data, out)) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert said == ["note: 1 image(s) are smaller than the model's 32x32 and are upscaled to it, so their figures "
                    "compare against an upscaled original (first: small.png, 20x16)."]
    assert [r["name"] for r in lines(out / "records.jsonl")] == ["img00.png", "img01.png", "small.png"]


def test_a_data_set_none_of_whose_images_can_be_read_is_refused_and_writes_nothing(tiny, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    png_header(data / "bomb.png", 50_000, 50_000)
    (data / "fake.jpg").write_text("not a picture")
    line = refused(argv(data, out), capsys)
    assert line == (f"error: none of the 2 images of the folder {data} can be read (bomb.png: {data / 'bomb.png'} "
                    "declares 2,500,000,000 pixels, more than the 67,108,864 pixels this package decodes at once; "
                    "downscale it first (for example to 4096 pixels on its longer side))")
    assert not out.exists()


def test_a_skipped_or_refused_evaluation_writes_nothing_into_out(server, tmp_path, capsys, monkeypatch):
    from .tiny_models import install_tiny_checkpoints

    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=())  # every checkpoint answers 404
    data, out = make_images(tmp_path / "data", 2), tmp_path / "out"
    assert cli.main(argv(data, out)) == 1
    assert "Nothing could run" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"config": "celeba_hq", "steps": 7}))
    before = snapshot(out)
    assert "holds an evaluation with other settings" in refused(argv(data, out), capsys)
    assert snapshot(out) == before


def test_list_entries_absolute_or_climbing_out_of_root_are_refused_naming_their_line(tiny, tmp_path, capsys):
    root, outside = tmp_path / "val", tmp_path / "private"
    make_images(root, 2)
    make_images(outside, 1)
    (root / "escape.png").symlink_to(outside / "img00.png")
    listing = tmp_path / "list.txt"
    cases = {
        f"img00.png\n{outside / 'img00.png'} 3\n": f"line 2: {outside / 'img00.png'} is an absolute path",
        "# images\nimg00.png\n\n../private/img00.png\n": "line 4: ../private/img00.png climbs out of",
        "img01.png\nescape.png\n": f"line 2: escape.png is a link to {os.path.realpath(outside / 'img00.png')}, "
                                     "outside",
    }
    for text, expected in cases.items():
        listing.write_text(text)
        with pytest.raises(ImageError) as info:
            open_data(listing, root=root)
        assert expected in str(info.value) and "\n" not in str(info.value)
        line = refused(argv(listing, tmp_path / "out", "--root", str(root)), capsys)
        assert line.startswith(f"error: {listing}, line ") and "paths in a list are relative to --root" in line
    assert not (tmp_path / "out").exists()
    listing.write_text("img01.png\n./img00.png\n")
    assert [item.name for item in open_data(listing, root=root).items] == ["img01.png", "./img00.png"]


@contextmanager
def deep_tree(top, depth: int):
    """``depth`` folders ``d`` nested under ``top``; yields the deepest. Removed afterwards one by
    one, from the bottom: pytest's own clean-up (shutil.rmtree) recurses and would fail on it."""
    chain = [top / "d"]
    for _ in range(depth - 1):
        chain.append(chain[-1] / "d")
    for folder in chain:
        folder.mkdir()
    try:
        yield chain[-1]
    finally:
        for folder in reversed(chain):
            for leftover in folder.iterdir():
                if not leftover.is_dir() or leftover.is_symlink():
                    leftover.unlink()
            folder.rmdir()


def test_a_link_loop_in_an_image_folder_gives_each_image_once(tmp_path):
    from torchvision.datasets import ImageFolder

    classes = tmp_path / "classes"
    for name in ("cats", "dogs"):
        make_images(classes / name, 2)
    plain = ImageFolder(str(classes)).samples
    (classes / "cats" / "loop").symlink_to(classes, target_is_directory=True)  # cats/loop/cats/loop/...
    (classes / "dogs" / "here").symlink_to(classes / "dogs", target_is_directory=True)
    (classes / "dogs" / "again.png").symlink_to(classes / "dogs" / "img00.png")
    data_set = open_data(classes)
    assert [item.name for item in data_set.items] == ["cats/img00.png", "cats/img01.png", "dogs/img00.png",
                                                      "dogs/img01.png"]
    assert [str(item.path) for item in data_set.items] == [os.path.realpath(path) for path, _ in plain]
    assert data_set.notes == (f"{classes}: 3 link(s) lead to images or folders already in the data set (first: "
                              "cats/loop); each image is evaluated once.",)

    outside = make_images(tmp_path / "private", 1)
    (classes / "dogs" / "secret.png").symlink_to(outside / "img00.png")
    with pytest.raises(ImageError) as info:
        open_data(classes)
    assert str(info.value) == (f"{classes}: dogs/secret.png is a link to {os.path.realpath(outside / 'img00.png')}, "
                               "outside the data "
                               "set's folder; links out of a data set are not followed (copy the file in, or give "
                               "the folder that holds it)")
    (classes / "dogs" / "secret.png").unlink()
    (classes / "cats" / "out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ImageError, match=r"cats/out is a link to .*private, outside the data set's folder"):
        open_data(classes)
    (classes / "cats" / "out").unlink()
    with deep_tree(classes / "dogs", 1100) as bottom:  # deeper than Python's recursion limit
        Image.new("RGB", (8, 8)).save(bottom / "bottom.png")
        assert open_data(classes).items[-1].name == "dogs/" + "d/" * 1100 + "bottom.png"

    flat = make_images(tmp_path / "flat", 2)
    (flat / "img09.png").symlink_to(outside / "img00.png")
    with pytest.raises(ImageError, match=r"flat: img09.png is a link to .*private/img00.png, outside"):
        open_data(flat)


def test_a_second_evaluation_of_the_same_folder_is_refused_in_one_line(tiny, tmp_path, capsys):
    data, out = make_images(tmp_path / "data", 3), tmp_path / "out"
    first = subprocess.Popen([sys.executable, str(REPO / "tests" / "held_eval.py"), str(data), str(out)], env=tiny,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "holding\n", first.stderr.read()[-3000:]
        before = snapshot(out)
        line = refused(argv(data, out, "--steps", "2"), capsys)
        assert line == (f"error: another evaluation is running in {out} (it holds {out / '.lock'}); wait for it to "
                        "finish, or give another --out (two at once would restore every image twice)")
        assert snapshot(out) == before
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
        first.communicate()
    assert sorted(json.loads(line)["index"] for line in record_lines(out)) == [0, 1, 2]  # each image once
    assert cli.main(argv(data, out)) == 0
    assert f"Resuming {out}: 3 of 3 images already have a record." in capsys.readouterr().out


def _mount(*args) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def test_a_full_disk_is_one_line_and_the_same_command_resumes_once_there_is_room(tiny, tmp_path, capsys):
    disk = tmp_path / "small_disk"
    disk.mkdir()
    problem = _mount("-t", "tmpfs", "-o", "size=28k", "tmpfs", str(disk))
    if problem:
        pytest.skip(f"cannot mount a tmpfs here ({problem})")
    try:
        data, out = make_images(tmp_path / "data", 12), disk / "out"
        assert cli.main(argv(data, out)) == 1
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if "error" in line.lower()]  # beside the progress bars
        assert len(err) == 1 and err[0].startswith("error: The disk of ") and "Traceback" not in captured.err
        assert "is full: writing" in err[0] and "run the same command again" in err[0]
        assert not [p for p in snapshot(out) if p.endswith(".partial")]  # no temporary file left
        done = [json.loads(line)["index"] for line in record_lines(out) if line.endswith(b"}")]
        assert 0 < len(done) < 12

        assert _mount("-o", "remount,size=4m", str(disk)) is None
        assert cli.main(argv(data, out)) == 0
        assert f"Resuming {out}: {len(done)} of 12 images already have a record." in capsys.readouterr().out
        assert [r["index"] for r in lines(out / "records.jsonl")] == list(range(12))
        indices = [json.loads(line)["index"] for line in record_lines(out)]
        assert sorted(indices) == list(range(12))  # each image computed once
    finally:
        subprocess.run(["umount", str(disk)], check=True)
