"""The evaluation folder's file rules (ddrm_helpers/outdir.py), each against a folder that
misbehaves in one way: a link planted at a name we write (the final one, or the temporary one an
older version used), a hard link, a folder where a file belongs, a folder swapped for a link while
we work, a file of another owner, a lock held by someone else. What must hold: nothing is written
through a link or outside the folder, nothing there is lost, and each refusal is one line."""

from __future__ import annotations

import os

import pytest

from ddrm_helpers.errors import OutDirError
from ddrm_helpers.outdir import Folder, Lock


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


@pytest.fixture
def out(tmp_path):
    with Folder.open(tmp_path / "out", create=True) as folder:
        yield folder


def write_text(folder: Folder, name: str, text: str, role: str = "a test file") -> None:
    folder.replace(name, role, lambda f: f.write(text.encode()))


def test_a_file_is_written_whole_under_a_name_of_its_own_and_renamed(out):
    write_text(out, "run.json", "{}\n")
    write_text(out, "run.json", '{"a": 1}\n')
    assert (out.path / "run.json").read_text() == '{"a": 1}\n'
    assert sorted(os.listdir(out.path)) == ["run.json"]  # no temporary file left behind


def test_links_planted_at_the_old_temporary_names_are_never_written_through(out, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in (".run.json.partial", ".records.jsonl.partial"):
        (out.path / name).symlink_to(victim)
    write_text(out, "run.json", "{}\n")
    write_text(out, "records.jsonl", "")
    assert victim.read_text() == "precious"
    assert (out.path / "run.json").read_text() == "{}\n" and not (out.path / "run.json").is_symlink()


@pytest.mark.parametrize("plant", ["symlink", "hard link", "folder", "pipe"])
def test_a_final_name_holding_something_not_ours_is_refused_in_one_line(out, tmp_path, plant):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = out.path / "summary.md"
    if plant == "symlink":
        target.symlink_to(victim)
    elif plant == "hard link":
        os.link(victim, target)
    elif plant == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    with pytest.raises(OutDirError) as info:
        write_text(out, "summary.md", "# summary", "the summary")
    text = one_line(info.value)
    said = {"symlink": f"is a symbolic link (to {victim})", "hard link": "has 2 hard links",
            "folder": "is a folder", "pipe": "is a named pipe"}[plant]
    assert text.startswith(f"{target} (the summary) {said}") and "give another --out" in text
    assert victim.read_text() == "precious" and os.path.lexists(target)
    assert sorted(os.listdir(out.path)) == ["summary.md"]  # the temporary file was removed


def test_appending_opens_only_our_own_plain_file(out, tmp_path):
    with out.append("rank-00000.jsonl", "rank 0's records") as log:
        log.write(b"one\n")
    with out.append("rank-00000.jsonl", "rank 0's records") as log:
        log.write(b"two\n")
    assert (out.path / "rank-00000.jsonl").read_bytes() == b"one\ntwo\n"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out.path / "rank-00001.jsonl").symlink_to(victim)
    with pytest.raises(OutDirError, match=r"rank-00001.jsonl \(rank 1's records\) is a symbolic link"):
        out.append("rank-00001.jsonl", "rank 1's records")
    assert victim.read_text() == "precious"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_file_of_another_owner_is_not_reused(out):
    write_text(out, "run.json", "{}\n")
    os.chown(out.path / "run.json", 12345, 12345)
    with pytest.raises(OutDirError, match=r"run.json \(the settings\) belongs to another user \(uid 12345\)"):
        out.read("run.json", "the settings", 1000)
    with pytest.raises(OutDirError, match="belongs to another user"):
        write_text(out, "run.json", "{}\n", "the settings")
    assert (out.path / "run.json").read_text() == "{}\n"


def test_a_subfolder_is_never_a_link_and_a_swap_afterwards_is_not_followed(out, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out.path / "records").symlink_to(elsewhere)
    with pytest.raises(OutDirError) as info:
        out.sub("records", "the records folder", create=True)
    assert one_line(info.value).startswith(f"{out.path / 'records'} (the records folder) is a symbolic link")
    (out.path / "restored").write_text("a file")
    with pytest.raises(OutDirError, match=r"restored \(the restored images' folder\) is a file, not a folder"):
        out.sub("restored", "the restored images' folder", create=True)
    (out.path / "restored").unlink()

    # Once opened, the folder is reached through its descriptor: renaming it away and planting a
    # link in its place does not send our files there.
    restored = out.sub("restored", "the restored images' folder", create=True)
    os.rename(out.path / "restored", out.path / "restored.moved")
    (out.path / "restored").symlink_to(elsewhere)
    write_text(restored, "000000.png", "png")
    assert os.listdir(elsewhere) == [] and (out.path / "restored.moved" / "000000.png").read_text() == "png"
    restored.close()


def test_the_output_folder_itself_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutDirError, match=r"file \(the output folder\) is a file, not a folder"):
        Folder.open(tmp_path / "file", create=True)
    assert Folder.open(tmp_path / "absent", create=False) is None and not (tmp_path / "absent").exists()
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)  # the user's own choice
    (tmp_path / "real").mkdir()
    with Folder.open(tmp_path / "linked", create=False) as folder:
        write_text(folder, "run.json", "{}")
    assert (tmp_path / "real" / "run.json").read_text() == "{}"


def test_one_lock_per_folder_and_a_look_at_it_writes_nothing(out):
    assert not Lock.held_elsewhere(out) and os.listdir(out.path) == []  # looking creates no file
    first = Lock(out)
    first.acquire()
    assert Lock.held_elsewhere(out)
    with pytest.raises(OutDirError) as info:
        Lock(out).acquire()
    text = one_line(info.value)
    assert text.startswith(f"another evaluation is running in {out.path}") and "give another --out" in text
    first.release()
    assert not Lock.held_elsewhere(out)
    second = Lock(out)
    second.acquire()
    second.release()
