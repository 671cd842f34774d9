"""The store against someone who can write its folder: planted links, hard links, forged records.

Each case is what an attacker who can write the checkpoint folder (a shared Drive or lab folder)
can do with the public registry and this source at hand, on a real file system and a real HTTP
server on 127.0.0.1. What must hold, as for pip or huggingface_hub: nothing written outside the
root (a link's target keeps its bytes), nothing the store did not create deleted, one clear line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest

from ddrm_helpers import DownloadError
from ddrm_helpers.download import RetryPolicy, fetch_checkpoint
from ddrm_helpers.safefs import PathBlockedError

from .store_helpers import OUTSIDE, fetch
from .test_download import PAYLOAD, SHA256, files_in, spec_for

pytestmark = pytest.mark.server

FOREIGN_UID = 4242  # another user of a shared folder


@pytest.fixture
def policy():
    return RetryPolicy(max_failures=1, read_timeout=2, connect_timeout=2, sleep=lambda s: None)


@pytest.fixture
def folder(root):
    return root / "test"



def unchanged(path) -> bool:
    return path.read_bytes() == OUTSIDE


def give_away(path) -> None:
    """Make ``path`` another user's file, as if that user had written it into the shared folder."""
    try:
        os.chown(path, FOREIGN_UID, FOREIGN_UID, follow_symlinks=False)
    except PermissionError:
        pytest.skip("only root can give a file to another user here")


def leave_a_partial_download(server, root, policy, key="test_model"):
    """A real interrupted download: ``model.ckpt.part`` (1,000,000 bytes) and its genuine record."""
    cut = server.add("/cut", PAYLOAD, faults=[("short", 1_000_000)] * 3, ignore_range=True)
    with pytest.raises(DownloadError):
        fetch(spec_for(cut, key=key), root, policy)
    part = root / "test" / "model.ckpt.part"
    assert part.stat().st_size == 1_000_000
    server.log.clear()
    return part, root / "test" / ".model.ckpt.part.json"


# -- the .part ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resuming server", "server ignoring Range"])
def test_a_hard_linked_part_with_a_forged_record_is_moved_aside_never_written(server, root, policy, outside,
                                                                                 ignore_range, capsys):
    part, record = leave_a_partial_download(server, root, policy)
    forged = json.loads(record.read_bytes())
    part.unlink()
    os.link(outside, part)  # a hard link to the user's file, not a symbolic one: O_NOFOLLOW does not see it
    st = os.stat(outside)
    forged["inode"] = [st.st_dev, st.st_ino]  # the record's inode, computed as the store would
    record.write_text(json.dumps(forged))
    url = server.add("/m", PAYLOAD, ignore_range=ignore_range)
    path = fetch_checkpoint(spec_for(url), root, retry=policy, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert unchanged(outside) and os.stat(outside).st_size == len(OUTSIDE)
    assert server.log[0]["range"] is None  # started afresh, not resumed
    kept = part.with_name("model.ckpt.part.invalid")
    assert os.path.samefile(kept, outside)  # moved aside, never deleted
    lines = [line for line in capsys.readouterr().out.splitlines() if "model.ckpt.part" in line]
    assert len(lines) == 1 and "has 2 links" in lines[0] and "moved it to model.ckpt.part.invalid" in lines[0]


@pytest.mark.parametrize("owned", ["part", "record"])
def test_a_part_or_its_record_of_another_user_is_moved_aside_never_resumed(server, root, policy, owned):
    part, record = leave_a_partial_download(server, root, policy)
    before = {"part": part.read_bytes(), "record": record.read_bytes()}
    give_away(part if owned == "part" else record)
    path = fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.log[0]["range"] is None
    assert part.with_name("model.ckpt.part.invalid").read_bytes() == before["part"]
    if owned == "record":  # another user's record is not deleted either
        assert record.with_name(".model.ckpt.part.json.invalid").read_bytes() == before["record"]


def test_a_part_that_gains_a_second_link_while_paused_is_not_resumed(server, root, policy, tmp_path):
    part, _ = leave_a_partial_download(server, root, policy)
    watcher = tmp_path / "elsewhere_link"
    os.link(part, watcher)  # someone keeps a name of their own for the bytes we would write
    path = fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert watcher.read_bytes() == PAYLOAD[:1_000_000]  # not one byte written through the other name
    assert server.log[0]["range"] is None


def test_status_says_what_download_will_do_with_a_part(server, root, policy, tmp_path):
    from ddrm_helpers import checkpoint_status

    from .tiny_files import pinned_entry, write_registry

    registry = write_registry(tmp_path / "r.yml", {"celeba_hq": pinned_entry("model.ckpt", "test", PAYLOAD,
                                                                             [server.url("/m")])})
    part, _ = leave_a_partial_download(server, root, policy, key="celeba_hq")
    [row] = checkpoint_status("celeba_hq", root, registry=registry).rows
    assert row.detail.startswith("partial download, 1.0 MB of 3.0 MB; `download` resumes it")
    os.link(part, tmp_path / "another_name")
    [row] = checkpoint_status("celeba_hq", root, registry=registry).rows
    assert row.detail == ("not downloaded yet; the .part file there has 2 links (another name elsewhere shares its "
                          "bytes), so it is not ours to write: `download` moves it aside and starts afresh")


# -- links at every name the store uses ---------------------------------------------------------------


@pytest.mark.parametrize("name", [".model.ckpt.part.json", ".model.ckpt.lock.soft"])
def test_a_link_at_a_bookkeeping_name_is_reported_before_any_request(server, root, folder, policy, outside, name,
                                                                    monkeypatch):
    import ddrm_helpers.safefs as safefs

    if name.endswith(".soft"):  # the lock file of a file system without flock
        monkeypatch.setattr(safefs, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOSYS, "no flock")))
    folder.mkdir(parents=True)
    (folder / name).symlink_to(outside)
    with pytest.raises(PathBlockedError) as info:
        fetch(spec_for(server.add("/m", PAYLOAD)), root, policy, lock_timeout=5)
    assert f"is a symbolic link (to {outside})" in str(info.value) and f"rm {folder / name}" in str(info.value)
    assert unchanged(outside) and (folder / name).is_symlink()
    assert server.log == []
    assert not any(n.endswith(".invalid") for n in files_in(folder))


def test_a_link_at_the_set_aside_name_is_passed_over(server, root, folder, policy, outside):
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(b"a wrong file")
    (folder / "model.ckpt.invalid").symlink_to(outside)
    fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert unchanged(outside) and (folder / "model.ckpt.invalid").is_symlink()
    assert (folder / "model.ckpt.invalid.2").read_bytes() == b"a wrong file"


def test_a_hard_linked_lock_file_is_never_written(server, root, folder, policy, outside):
    folder.mkdir(parents=True)
    os.link(outside, folder / ".model.ckpt.lock")
    path = fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert unchanged(outside)


# -- the verification record is a cache, never a proof --------------------------------------------------


STAT_FIELDS = {"size": "st_size", "mtime_ns": "st_mtime_ns", "ctime_ns": "st_ctime_ns", "inode": "st_ino",
               "device": "st_dev"}


def substitute_and_forge(path, as_another_user: bool):
    """Put a file of the same size but other bytes under the checkpoint's name and rewrite its
    verification record to match it, field by field, as anyone who can write the folder can."""
    record = path.with_name(f".{path.name}.verified.json")
    fields = json.loads(record.read_bytes())
    substitute = bytes(reversed(path.read_bytes()))
    path.unlink()
    path.write_bytes(substitute)
    if as_another_user:
        give_away(path)  # before the stat: a chown changes the change time
    st = os.stat(path)
    fields.update({field: getattr(st, attr) for field, attr in STAT_FIELDS.items() if field in fields})
    record.unlink()
    record.write_text(json.dumps(fields))
    if as_another_user:
        give_away(record)
    return substitute


@pytest.fixture
def hashes(monkeypatch):
    """Every file that verification hashes."""
    import ddrm_helpers.verify as verify

    seen = []
    real = verify.hash_file
    monkeypatch.setattr(verify, "hash_file", lambda path, *a, **k: seen.append(path) or real(path, *a, **k))
    return seen


def test_a_same_size_substitute_with_a_record_rewritten_by_another_user_is_hashed_and_refused(server, root,
                                                                                              policy, hashes):
    from ddrm_helpers.store import CheckpointStore

    url = server.add("/m", PAYLOAD)
    path = fetch(spec_for(url), root, policy)
    substitute = substitute_and_forge(path, as_another_user=True)
    store = CheckpointStore(root)
    state = store.verify(spec_for(url), quiet=True)
    assert state.state == "corrupt" and f"sha256 mismatch: expected {SHA256}" in state.detail and hashes
    path = store.fetch(spec_for(url), retry=policy, progress=False, quiet=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert path.with_name("model.ckpt.invalid").read_bytes() == substitute  # kept aside, not deleted


def test_status_verify_hashes_everything_and_finds_a_forgery_by_the_same_user(server, root, policy, tmp_path,
                                                                               monkeypatch, capsys):
    from ddrm_helpers import cli

    from .tiny_files import pinned_entry, write_registry

    url = server.add("/m", PAYLOAD)
    registry = write_registry(tmp_path / "r.yml", {"celeba_hq": pinned_entry("model.ckpt", "test", PAYLOAD, [url])})
    monkeypatch.setenv("DDRM_REGISTRY", str(registry))
    fetch(spec_for(url), root, policy)
    substitute_and_forge(root / "test" / "model.ckpt", as_another_user=False)
    capsys.readouterr()
    # Whoever writes as this very user can forge a record that a plain status believes...
    assert cli.main(["status", "--config", "celeba_hq", "--dir", str(root)]) == 0
    assert "verified" in capsys.readouterr().out
    # ... and --verify believes no record.
    assert cli.main(["status", "--verify", "--config", "celeba_hq", "--dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out and f"sha256 mismatch: expected {SHA256}" in out


def test_a_verified_file_with_a_second_link_is_hashed_at_every_use(server, root, policy, tmp_path, hashes):
    from ddrm_helpers.store import CheckpointStore

    url = server.add("/m", PAYLOAD)
    path = fetch(spec_for(url), root, policy)
    store = CheckpointStore(root)
    assert store.verify(spec_for(url)).cached and hashes == []
    os.link(path, tmp_path / "another_name.ckpt")
    for _ in range(2):
        state = store.verify(spec_for(url), quiet=True)
        assert state.state == "verified" and not state.cached
    assert len(hashes) == 2


@pytest.mark.parametrize("field", [*STAT_FIELDS, "file"])
def test_the_record_is_believed_only_while_every_field_of_its_key_matches(server, root, policy, hashes, field):
    from ddrm_helpers.store import CheckpointStore

    url = server.add("/m", PAYLOAD)
    path = fetch(spec_for(url), root, policy)
    record = path.with_name(".model.ckpt.verified.json")
    fields = json.loads(record.read_bytes())
    fields[field] = "other.ckpt" if field == "file" else fields[field] + 1
    record.write_text(json.dumps(fields))
    state = CheckpointStore(root).verify(spec_for(url), quiet=True)
    assert state.state == "verified" and not state.cached and len(hashes) == 1


# -- long file names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [240, 255])
def test_a_long_legal_file_name_downloads_resumes_and_leaves_nothing_behind(server, root, folder, policy, length):
    name = "n" * (length - 3) + ".pt"
    for _ in range(2):  # each run is cut short: the .part and its record stay, and nothing else
        cut = server.add("/cut", PAYLOAD, faults=[("short", 1_000_000)] * 3, ignore_range=True)
        with pytest.raises(DownloadError):
            fetch(spec_for(cut, file=name), root, policy)
    assert server.log[2]["range"] == "bytes=1000000-"  # the second run resumed the first one's .part
    path = fetch(spec_for(server.add("/m", PAYLOAD), file=name), root, policy)
    assert path.name == name and hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.log[-1]["range"] == "bytes=1000000-"
    left = files_in(folder)
    assert len(left) == 3 and name in left  # the file, its verification record and its lock
    assert all(len(n.encode()) <= 255 for n in left) and not any("invalid" in n for n in left)
    assert json.loads((folder / next(n for n in left if n.endswith(".verified.json"))).read_text())["file"] == name


def test_a_file_name_longer_than_the_file_system_allows_is_a_registry_error(tmp_path):
    from ddrm_helpers import ConfigError, load_registry

    from .tiny_files import pinned_entry, write_registry

    entry = pinned_entry("n" * 253 + ".pt", "test", PAYLOAD, ["https://example.org/m.pt"])
    with pytest.raises(ConfigError, match=r"checkpoint 'celeba_hq': 'file' must be a plain file name: .* is longer "
                                          r"than 255 bytes"):
        load_registry(write_registry(tmp_path / "r.yml", {"celeba_hq": entry}))


# -- deadlines on the whole response ---------------------------------------------------------------------


def deadline_policy(**fields):
    """Reads may wait 5 s, the status line and headers 0.5 s in all: a server that sends them a byte
    every 0.05 s keeps every read well under the read timeout and needs some 35 s for its headers."""
    return RetryPolicy(**{"max_failures": 2, "read_timeout": 5, "connect_timeout": 5, "response_timeout": 0.5,
                          "sleep": lambda s: None, **fields})


def test_a_server_dripping_its_status_line_and_headers_is_cut_like_a_drip_of_body(server, root):
    slow = server.add("/slow", PAYLOAD, faults=[("drip_head", 0.05)] * 3)
    path = fetch(spec_for(slow, server.add("/good", PAYLOAD)), root, deadline_policy())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    cut = server.requests_to("/slow")
    assert len(cut) == 2 and not any(entry["head_done"] for entry in cut)  # cut twice, then the next source


def test_a_drip_of_headers_on_every_source_is_one_line_in_the_report(server, root):
    slow = server.add("/slow", PAYLOAD, faults=[("drip_head", 0.05)] * 3)
    with pytest.raises(DownloadError) as info:
        fetch(spec_for(slow), root, deadline_policy())
    [(url, outcome)] = info.value.attempts
    assert outcome.startswith("no status line and headers within 0.5 s (the server sent them too slowly); gave up "
                              "after 2 tries in a row without progress")
    assert files_in(root / "test") <= {".model.ckpt.lock"}


def test_an_error_page_dripped_a_byte_at_a_time_is_not_waited_for(server, root):
    slow = server.add("/denied", PAYLOAD, faults=[("drip_error", 403, 0.05)])
    path = fetch(spec_for(slow, server.add("/good", PAYLOAD)), root, deadline_policy())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.requests_to("/denied")[0]["sent"] < 4096  # gave up before the page ended (some 200 s)


# -- the command line --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["a file where the subfolder belongs", "a folder where the checkpoint belongs",
                                   "a link where the subfolder belongs"])
def test_something_in_the_way_is_one_row_and_exit_1_in_download_and_status(server, root, tmp_path, outside,
                                                                         monkeypatch, capsys, where):
    from ddrm_helpers import cli

    from .tiny_files import pinned_entry, write_registry

    url = server.add("/m", PAYLOAD)
    monkeypatch.setenv("DDRM_REGISTRY", str(write_registry(
        tmp_path / "r.yml", {"celeba_hq": pinned_entry("model.ckpt", "test", PAYLOAD, [url])})))
    root.mkdir()
    if where.startswith("a file"):
        blocker, kind = root / "test", "is a file"
        blocker.write_bytes(OUTSIDE)
    elif where.startswith("a folder"):
        blocker, kind = root / "test" / "model.ckpt", "is a folder"
        blocker.mkdir(parents=True)
        (blocker / "keep.txt").write_bytes(OUTSIDE)
    else:
        blocker, kind = root / "test", f"is a symbolic link (to {outside.parent})"
        blocker.symlink_to(outside.parent, target_is_directory=True)
    for command in (["download", "--quiet"], ["status"]):
        assert cli.main([*command, "--config", "celeba_hq", "--dir", str(root)]) == 1
        out, err = capsys.readouterr()
        rows = [line for line in out.splitlines() if line.startswith("celeba_hq ")]
        assert len(rows) == 1 and " blocked " in rows[0] and f"{blocker} (" in rows[0] and kind in rows[0]
        assert "Traceback" not in out + err
    assert server.log == [] and unchanged(outside)
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.bin"]
