"""ddrm_helpers.safefs on a real file system: what each public function refuses, and what it keeps.

Every case plants one thing where a writer of ours would write (a symbolic link, a hard link, a
named pipe, a folder, another user's file) and checks that its bytes are untouched and that the
refusal is one :class:`PathBlockedError` naming it.
"""

from __future__ import annotations

import os
import threading

import pytest

from ddrm_helpers import safefs
from ddrm_helpers.safefs import PathBlockedError

OUTSIDE = b"someone's file\n" * 50
FOREIGN_UID = 4242


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "elsewhere.txt"
    path.write_bytes(OUTSIDE)
    return path


def give_away(path):
    try:
        os.chown(path, FOREIGN_UID, FOREIGN_UID, follow_symlinks=False)
    except PermissionError:
        pytest.skip("only root can give a file to another user here")


def plant(kind: str, path, outside):
    if kind == "symlink":
        path.symlink_to(outside)
    elif kind == "hard link":
        os.link(outside, path)
    elif kind == "named pipe":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "another user's file":
        path.write_bytes(OUTSIDE)
        give_away(path)


KINDS = ["symlink", "hard link", "named pipe", "folder", "another user's file"]


@pytest.mark.parametrize("kind", KINDS)
def test_open_append_refuses_what_is_not_a_plain_file_of_ours_and_keeps_its_bytes(tmp_path, outside, kind):
    target = tmp_path / "records.jsonl"
    plant(kind, target, outside)
    with pytest.raises(PathBlockedError) as info:
        safefs.open_append(target, "the records")
    message = str(info.value)
    assert message.startswith(f"{target} (the records) ") and f" {target}`) and run again" in message
    assert len(message.splitlines()) == 1
    assert outside.read_bytes() == OUTSIDE


def test_open_append_creates_then_appends_to_its_own_file(tmp_path):
    target = tmp_path / "records.jsonl"
    for line in (b"one\n", b"two\n"):
        with safefs.open_append(target) as f:
            f.write(line)
    assert target.read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize("kind", ["symlink", "folder", "another user's file"])
def test_write_new_atomically_never_replaces_a_link_a_folder_or_another_users_file(tmp_path, outside, kind):
    target = tmp_path / "summary.md"
    plant(kind, target, outside)
    with pytest.raises(PathBlockedError, match="summary.md"):
        safefs.write_new_atomically(target, b"new", "the summary")
    assert outside.read_bytes() == OUTSIDE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "summary.md"]  # no temporary left


def test_write_new_atomically_replaces_its_own_file_through_a_name_unique_to_the_process(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    target.write_bytes(b"old")
    seen = []
    real = safefs.create_new
    monkeypatch.setattr(safefs, "create_new", lambda path: seen.append(path.name) or real(path))
    safefs.write_new_atomically(target, b"new")
    safefs.write_new_atomically(target, b"newer")
    assert target.read_bytes() == b"newer"
    assert len(set(seen)) == 2 and all(f".{os.getpid()}." in name for name in seen)


def test_reading_a_named_pipe_fails_at_once_instead_of_waiting_for_a_writer(tmp_path):
    pipe = tmp_path / "photo.png"
    os.mkfifo(pipe)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(safefs.read_small(pipe)), daemon=True)
    reader.start()
    reader.join(timeout=30)  # an open that waits for a writer would still be waiting
    assert not reader.is_alive() and outcome == [None]


@pytest.mark.parametrize("kind", ["hard link", "another user's file"])
def test_read_own_believes_only_a_file_of_ours_with_one_link(tmp_path, outside, kind):
    record = tmp_path / ".x.verified.json"
    plant(kind, record, outside)
    assert safefs.read_small(record) == OUTSIDE
    assert safefs.read_own(record) is None


def test_side_names_fit_the_file_system_and_are_the_same_on_every_run(tmp_path):
    name = "m" * 250 + ".ckpt"
    short = safefs.side_name(name, ".", ".part.json")
    assert len(short.encode()) <= safefs.NAME_MAX and short == safefs.side_name(name, ".", ".part.json")
    assert short.startswith(".mmm") and short.endswith(".part.json")
    assert safefs.side_name(name, ".", ".lock") != short
    (tmp_path / short).write_text("fits")  # the file system takes it
    assert safefs.side_name("model.ckpt", ".", ".part.json") == ".model.ckpt.part.json"
    multibyte = "é" * 120 + ".pt"  # 243 bytes: cut on a character, not inside one
    assert len(safefs.side_name(multibyte, suffix=".part.invalid.12").encode()) <= safefs.NAME_MAX


def test_discard_own_deletes_only_its_own_file(tmp_path, outside):
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    mine.write_text("{}")
    theirs.write_bytes(OUTSIDE)
    give_away(theirs)
    assert safefs.discard_own(mine) is None and not mine.exists()
    moved = safefs.discard_own(theirs)
    assert moved.name == "theirs.json.invalid" and moved.read_bytes() == OUTSIDE
