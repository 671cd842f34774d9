"""The checkpoint store against a hostile folder, an edited registry and a broken server.

Every case is a real file system (links, folders, a read-only bind mount, a full tmpfs where this
machine lets us mount) and a real HTTP server on 127.0.0.1 (tests/faulty_server.py). What must hold:
nothing is written outside the root or through a link, nothing the store did not create is deleted,
no more bytes than the file may have reach the disk, and every problem is one clear message.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess

import pytest
import requests

from ddrm_helpers import ConfigError, DownloadError, checkpoint_status, ensure_checkpoints, load_registry
from ddrm_helpers.download import RetryPolicy, fetch_checkpoint
from ddrm_helpers.safefs import PathBlockedError
from ddrm_helpers.store import CheckpointStore

from .store_helpers import OUTSIDE, fetch
from .test_download import PAYLOAD, SHA256, SIZE, files_in, spec_for
from .tiny_files import pinned_entry, write_registry

pytestmark = pytest.mark.server



@pytest.fixture
def policy():
    return RetryPolicy(max_failures=3, read_timeout=0.5, connect_timeout=2, sleep=lambda s: None)



def unchanged(path):
    return path.read_bytes() == OUTSIDE and path.stat().st_size == len(OUTSIDE)


# -- links, folders and other things in the way ------------------------------------------------------


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resuming server", "server ignoring Range"])
@pytest.mark.parametrize("name", ["model.ckpt", "model.ckpt.part", ".model.ckpt.lock"])
def test_a_link_in_the_folder_is_never_written_through(server, root, policy, outside, name, ignore_range):
    url = server.add("/m", PAYLOAD, ignore_range=ignore_range)
    folder = root / "test"
    folder.mkdir(parents=True)
    (folder / name).symlink_to(outside)
    with pytest.raises(PathBlockedError) as info:
        fetch(spec_for(url), root, policy)
    message = str(info.value)
    assert f"is a symbolic link (to {outside})" in message and f"rm {folder / name}" in message
    assert unchanged(outside)
    assert (folder / name).is_symlink()  # reported, never deleted
    assert server.log == []  # refused before any byte was asked for


def test_a_link_at_the_verification_record_is_not_written_through(server, root, policy, outside, capsys):
    folder = root / "test"
    folder.mkdir(parents=True)
    (folder / ".model.ckpt.verified.json").symlink_to(outside)
    path = fetch_checkpoint(spec_for(server.add("/m", PAYLOAD)), root, retry=policy, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert unchanged(outside)
    assert "note: cannot keep a verification record" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["model.ckpt", "model.ckpt.part", ".model.ckpt.lock"])
def test_a_folder_in_the_way_is_reported_by_every_entry_point(server, root, policy, name, monkeypatch, tmp_path):
    folder = root / "test"
    (folder / name).mkdir(parents=True)
    (folder / name / "keep.txt").write_text("mine")
    spec = spec_for(server.add("/m", PAYLOAD))
    with pytest.raises(PathBlockedError, match=rf"is a folder.*`rm -r {folder / name}`"):
        fetch(spec, root, policy)
    assert (folder / name / "keep.txt").read_text() == "mine"
    # ensure_checkpoints and status never raise: the problem is a row of the table
    registry = write_registry(tmp_path / "r.yml",
                              {"celeba_hq": pinned_entry("model.ckpt", "test", PAYLOAD, [spec.urls[0].url])})
    status = ensure_checkpoints("celeba_hq", root, registry=registry, progress=False, quiet=True)
    [row] = status.rows
    assert row.state in ("blocked", "missing") and not row.ok
    assert "is a folder" in (row.error or row.detail)


def test_a_subfolder_that_is_a_link_is_not_gone_through(server, root, policy, tmp_path):
    elsewhere = tmp_path / "elsewhere_dir"
    elsewhere.mkdir()
    root.mkdir()
    (root / "test").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PathBlockedError, match="the folder of model.ckpt"):
        fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert list(elsewhere.iterdir()) == []


def test_a_foreign_part_file_is_moved_aside_never_resumed_nor_deleted(server, root, policy):
    folder = root / "test"
    folder.mkdir(parents=True)
    mine = b"my own notes, which happen to have this name" * 1000
    (folder / "model.ckpt.part").write_bytes(mine)
    path = fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.log[0]["range"] is None
    assert (folder / "model.ckpt.part.invalid").read_bytes() == mine


def test_setting_aside_never_overwrites_an_earlier_invalid_file(server, root, policy):
    folder = root / "test"
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(b"second wrong file")
    (folder / "model.ckpt.invalid").write_bytes(b"first wrong file")
    fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert (folder / "model.ckpt.invalid").read_bytes() == b"first wrong file"
    assert (folder / "model.ckpt.invalid.2").read_bytes() == b"second wrong file"


# -- the registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("file", "../../escaped.ckpt"),
    ("file", "/tmp/absolute.ckpt"),
    ("file", "sub/model.ckpt"),
    ("subdir", ".."),
    ("subdir", "../../outside"),
    ("subdir", "/tmp/outside"),
    ("subdir", "a/../../b"),
])
def test_registry_names_that_would_leave_the_root_are_refused(server, tmp_path, field, value):
    victim = tmp_path / "escaped.ckpt"
    victim.write_bytes(OUTSIDE)
    entry = pinned_entry("model.ckpt", "test", PAYLOAD, [server.add("/m", PAYLOAD)])
    entry[field] = value
    registry = write_registry(tmp_path / "registry.yml", {"celeba_hq": entry})
    with pytest.raises(ConfigError, match=rf"checkpoint 'celeba_hq': '{field}' must be"):
        load_registry(registry)
    root = tmp_path / "deep" / "er" / "root"
    status = ensure_checkpoints("celeba_hq", root, registry=registry, progress=False, quiet=True)
    assert [row.state for row in status.rows] == ["error"]
    assert f"'{field}' must be" in status.rows[0].detail
    assert server.log == [] and victim.read_bytes() == OUTSIDE
    assert not (tmp_path / "outside").exists() and not (tmp_path / "b").exists()


def test_a_spec_made_in_code_cannot_leave_the_root_either(server, root, policy, tmp_path):
    with pytest.raises(ConfigError, match="'subdir' must be a plain relative name"):
        fetch(spec_for(server.add("/m", PAYLOAD), subdir="../escape"), root, policy)
    assert not (tmp_path / "escape").exists() and server.log == []


@pytest.mark.parametrize("text, message", [
    ("celeba_hq: {file: a.ckpt\n", r"not valid YAML \(line \d+, column \d+\)"),
    ("celeba_hq: !!python/object:os.system {}\n", r"not valid YAML"),
    ("- just\n- a list\n", r"a registry maps keys to checkpoint entries, not a list"),
    ("celeba_hq: [1, 2]\n", r"checkpoint 'celeba_hq': an entry is a mapping"),
])
def test_registry_files_that_are_not_registries_are_config_errors(tmp_path, text, message):
    path = tmp_path / "registry.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_registry(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("field, value, message", [
    ("size", -5, r"'size' must be a positive whole number of bytes, got -5"),
    ("size", 12.5, r"'size' must be a positive whole number of bytes, got 12.5"),
    ("size", True, r"'size' must be a positive whole number of bytes, got True"),
    ("size", "big", r"'size' must be a positive whole number of bytes"),
    ("urls", "https://example.org/m.ckpt", r"'urls' must be a list of URLs, got str"),
    ("urls", [42], r"a source is a URL string, or a mapping"),
    ("urls", [{"url": "https://example.org/m", "mirror": 1}], r"a source has unknown field\(s\) mirror"),
    ("sha256", 1234, r"'sha256' must be a string, got int"),
    ("file", 7, r"'file' must be a string, got int"),
    ("file", "model.ckpt.part", r"'file' must be a plain file name"),
])
def test_registry_fields_of_the_wrong_kind_are_config_errors(tmp_path, field, value, message):
    entry = pinned_entry("model.ckpt", "test", PAYLOAD, ["https://example.org/m.ckpt"])
    entry[field] = value
    path = write_registry(tmp_path / "registry.yml", {"celeba_hq": entry})
    with pytest.raises(ConfigError, match=message) as info:
        load_registry(path)
    assert str(path) in str(info.value) and "'celeba_hq'" in str(info.value)


def test_two_entries_for_one_file_are_refused(tmp_path):
    entry = pinned_entry("model.ckpt", "test", PAYLOAD, ["https://example.org/m.ckpt"])
    path = write_registry(tmp_path / "registry.yml", {"a": entry, "b": dict(entry)})
    with pytest.raises(ConfigError, match="checkpoints 'a' and 'b' are both test/model.ckpt"):
        load_registry(path)


# -- the server -----------------------------------------------------------------------------------


@pytest.fixture
def disk_sizes(monkeypatch):
    """Every size ``.part`` reaches on disk, read from the file system after each write."""
    import ddrm_helpers.part_writer as part_writer

    sizes = []
    real = part_writer.write_all

    def write(out, chunk):
        real(out, chunk)
        sizes.append(os.fstat(out.fileno()).st_size)

    monkeypatch.setattr(part_writer, "write_all", write)
    return sizes


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_an_endless_body_is_cut_at_the_file_size_and_the_next_mirror_used(server, root, policy, disk_sizes,
                                                                          framing):
    endless = server.add("/endless", PAYLOAD, faults=[("endless", framing)] * 5)
    good = server.add("/good", PAYLOAD)
    path = fetch(spec_for(endless, good), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert max(disk_sizes) <= SIZE  # never a byte more than the file has, at any moment
    assert [e["path"] for e in server.log] == ["/endless", "/good"]  # not retried: it is not the file


def test_an_endless_body_on_every_mirror_says_so(server, root, policy, disk_sizes):
    url = server.add("/endless", PAYLOAD, faults=[("endless", "close")])
    with pytest.raises(DownloadError, match=f"sent more than the {SIZE:,} bytes of the file"):
        fetch(spec_for(url), root, policy)
    assert max(disk_sizes) <= SIZE
    assert files_in(root / "test") == {".model.ckpt.lock"}


def test_a_server_that_trickles_below_the_rate_floor_is_cut(server, root):
    slow = server.add("/slow", PAYLOAD, faults=[("drip", 2000, 0.05, 200)] * 3)
    good = server.add("/good", PAYLOAD)
    policy = RetryPolicy(max_failures=2, read_timeout=5, min_rate=200_000, rate_window=0.4, sleep=lambda s: None)
    path = CheckpointStore(root).fetch(spec_for(slow, good), retry=policy, progress=False, quiet=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert len(server.requests_to("/slow")) == 2  # cut twice, counted as failures although bytes came


def test_the_rate_floor_is_in_the_final_message(server, root):
    slow = server.add("/slow", PAYLOAD, faults=[("drip", 2000, 0.05, 200)] * 3)
    policy = RetryPolicy(max_failures=2, read_timeout=5, min_rate=200_000, rate_window=0.4, sleep=lambda s: None)
    with pytest.raises(DownloadError, match=r"too slow: [\d,]+ bytes in the last \d+ s, below the floor of 200 KB/s"):
        fetch(spec_for(slow), root, policy)


class _RedirectingSession(requests.Session):
    """An https mirror (no TLS needed: the answer is made here) that redirects to plain http."""

    def __init__(self, location):
        super().__init__()
        self.location, self.asked = location, []

    def get(self, url, **kwargs):
        self.asked.append(url)
        if url.startswith("https://"):
            response = requests.Response()
            response.status_code, response.url = 302, url
            response.headers["Location"] = self.location
            response.raw = __import__("io").BytesIO(b"")
            return response
        return super().get(url, **kwargs)


def test_an_https_source_redirecting_to_http_on_loopback_is_refused(server, root, policy):
    plain = server.add("/m", PAYLOAD)
    session = _RedirectingSession(plain)
    with pytest.raises(DownloadError, match=f"refused {plain}: checkpoints are fetched over https only"):
        fetch(spec_for("https://mirror.example.org/m"), root, policy, session=session)
    assert server.log == [] and session.asked == ["https://mirror.example.org/m"]


# -- read-only and full disks ------------------------------------------------------------------------


def _mount(*args) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@pytest.fixture
def read_only(tmp_path):
    """A function making a read-only view of a folder (a read-only bind mount), unmounted afterwards."""
    mounted = []

    def make(source):
        view = tmp_path / f"ro_view_{len(mounted)}"
        view.mkdir()
        problem = _mount("--bind", str(source), str(view)) or _mount("-o", "remount,ro,bind", str(view))
        if problem:
            subprocess.run(["umount", str(view)], capture_output=True)
            pytest.skip(f"cannot make a read-only bind mount here ({problem}); as root, chmod does not stop writes")
        mounted.append(view)
        return view

    yield make
    for view in reversed(mounted):
        if subprocess.run(["umount", str(view)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(view)], check=True)  # a file still memory-mapped


def test_a_read_only_folder_of_good_files_is_used_as_it_is(server, tmp_path, policy, read_only, capsys):
    source = tmp_path / "shared_models"
    url = server.add("/m", PAYLOAD)
    fetch(spec_for(url), source, policy)
    (source / "test" / ".model.ckpt.verified.json").unlink()  # a copy made without our records
    (source / "test" / ".model.ckpt.lock").unlink()
    view = read_only(source)
    store = CheckpointStore(view)
    for _ in range(2):
        path = store.fetch(spec_for(url), retry=policy, progress=False)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
        assert store.verify(spec_for(url)).ok
    out = capsys.readouterr().out
    assert out.count("note: cannot keep a verification record") == 1 and "read-only" in out
    assert files_in(view / "test") == {"model.ckpt"} and len(server.log) == 1


def test_a_read_only_folder_missing_a_file_says_where_to_point_instead(server, tmp_path, policy, read_only):
    source = tmp_path / "shared_models"
    (source / "test").mkdir(parents=True)
    view = read_only(source)
    with pytest.raises(DownloadError, match=r"cannot be written \(Read-only file system\).*set DDRM_CHECKPOINT_DIR"):
        fetch(spec_for(server.add("/m", PAYLOAD)), view, policy)
    assert server.log == []


def test_ensure_checkpoints_on_a_read_only_folder_reports_rows_and_never_raises(server, tmp_path, read_only,
                                                                                monkeypatch, capsys):
    from .tiny_models import install_tiny_checkpoints

    env = install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    source = tmp_path / "empty_shared"
    source.mkdir()
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(read_only(source)))
    status = ensure_checkpoints("celeba_hq", progress=False, quiet=True)
    [row] = status.rows
    assert row.state == "missing" and "cannot be written (Read-only file system)" in row.error
    assert "set DDRM_CHECKPOINT_DIR to a folder you can write" in capsys.readouterr().out
    assert server.log == [] and env


def test_status_and_run_work_on_a_read_only_folder(server, tmp_path, read_only, monkeypatch):
    from ddrm_helpers import run_config

    from .tiny_models import install_tiny_checkpoints

    env = install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    ensure_checkpoints("celeba_hq", progress=False, quiet=True)
    view = read_only(env["DDRM_CHECKPOINT_DIR"])
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(view))
    assert checkpoint_status("celeba_hq").ready("celeba_hq")
    result = run_config("celeba_hq", steps=2, save=False, progress=False, device="cpu")
    assert not result.skipped and result.restored.shape[0] >= 1
    from ddrm_helpers.models import clear_pretrained_cache

    clear_pretrained_cache()  # its weights are memory-mapped from the mount


class _FullAfter:
    """A ``.part`` file on a disk that fills up after ``room`` bytes (the injected writer)."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real.write(bytes(data[:self.room]))
        self.room -= n
        return n

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def _assert_full_disk_message(err: DownloadError):
    text = str(err)
    assert text.startswith("The disk is full: writing")
    assert "needs" in text and "free" in text and "run again to resume it" in text


def test_a_full_disk_stops_at_once_keeps_the_part_and_resumes_later(server, root, policy, monkeypatch):
    import ddrm_helpers.part_writer as part_writer

    real_create = part_writer.create_new
    monkeypatch.setattr(part_writer, "create_new", lambda path: _FullAfter(real_create(path), 1_000_000))
    url = server.add("/m", PAYLOAD)
    with pytest.raises(DownloadError) as info:
        fetch(spec_for(url), root, policy)
    _assert_full_disk_message(info.value)
    assert len(server.log) == 1  # not retried like a network fault
    assert (root / "test" / "model.ckpt.part").stat().st_size == 1_000_000
    monkeypatch.setattr(part_writer, "create_new", real_create)
    path = fetch(spec_for(url), root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.log[1]["range"] == "bytes=1000000-"


def test_a_full_tmpfs_stops_at_once_and_resumes_once_there_is_room(server, tmp_path, policy, monkeypatch):
    disk = tmp_path / "small_disk"
    disk.mkdir()
    problem = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk))
    if problem:
        pytest.skip(f"cannot mount a tmpfs here ({problem}); the injected writer above covers the same path")
    try:
        # A file system that misreports its free space (network mounts do) gets past the check before
        # the download; the write itself then meets ENOSPC.
        real_usage = __import__("shutil").disk_usage
        monkeypatch.setattr("ddrm_helpers.part_writer.shutil.disk_usage",
                            lambda p: real_usage(p)._replace(free=1 << 40))
        url = server.add("/m", PAYLOAD)
        with pytest.raises(DownloadError) as info:
            fetch(spec_for(url), disk, policy)
        _assert_full_disk_message(info.value)
        have = (disk / "test" / "model.ckpt.part").stat().st_size
        assert 0 < have < SIZE and len(server.log) == 1
        assert _mount("-o", "remount,size=8m", str(disk)) is None
        path = fetch(spec_for(url), disk, policy)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
        assert server.log[1]["range"] == f"bytes={have}-"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_file_system_without_flock_falls_back_to_a_lock_file_and_says_so_once(server, root, policy, monkeypatch,
                                                                                capsys):
    import ddrm_helpers.safefs as safefs

    def no_flock(fd, operation):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(safefs, "flock", no_flock)
    monkeypatch.setattr(safefs.StoreLock, "_said_soft", set())
    for name in ("a.ckpt", "b.ckpt"):
        payload = PAYLOAD[:100_000] + name.encode()
        spec = spec_for(server.add(f"/{name}", payload), payload=payload, file=name, key=name)
        fetch_checkpoint(spec, root, retry=policy, progress=False)
    out = capsys.readouterr().out
    assert out.count("does not support file locks (flock)") == 1
    assert not any(p.name.endswith(".soft") for p in (root / "test").iterdir())  # released


# -- the promises ---------------------------------------------------------------------------------


def test_a_download_that_failed_is_not_retried_by_a_run_unless_asked(server, tmp_path, monkeypatch, capsys):
    from ddrm_helpers import run_config

    from .tiny_models import install_tiny_checkpoints

    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=())
    status = ensure_checkpoints("celeba_hq", progress=False)
    assert not status.ready("celeba_hq")
    capsys.readouterr()
    asked = len(server.log)
    result = run_config("celeba_hq", steps=2, save=False, device="cpu")
    lines = capsys.readouterr().out.strip().splitlines()
    assert result.skipped and len(server.log) == asked  # not asked again
    assert lines == [str(result)] and str(result).startswith("Config 1: CelebA-HQ (DDPM) skipped: celeba_hq.ckpt "
                                                             "could not be downloaded")
    assert "python -m ddrm_helpers download --config celeba_hq" in lines[0]
    run_config("celeba_hq", steps=2, save=False, device="cpu", download=True, progress=False)
    assert len(server.log) > asked  # asked: tried again


def test_a_verified_cached_file_prints_nothing_in_a_run(server, tmp_path, monkeypatch, capsys):
    from ddrm_helpers import run_config

    from .tiny_models import install_tiny_checkpoints

    install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    ensure_checkpoints("celeba_hq", progress=False, quiet=True)
    capsys.readouterr()
    run_config("celeba_hq", steps=2, save=False, device="cpu", progress=False)
    out = capsys.readouterr().out
    assert "cached" not in out and "verified" not in out and "celeba_hq.ckpt" not in out


def test_an_unpinned_file_with_non_finite_weights_is_refused(server, root, policy, tmp_path):
    import io

    import torch

    from .tiny_files import write_manifest

    tensors = {"encoder.weight": torch.randn(64, 32), "encoder.bias": torch.zeros(64),
               "head.weight": torch.ones(10, 64)}
    tensors["head.weight"][3, 7] = float("nan")
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    payload = buffer.getvalue()
    spec = spec_for(server.add("/nan", payload), payload=payload, sha256=None, size=None,
                    size_min=len(payload) - 10, size_max=len(payload) + 10,
                    manifest=str(write_manifest(tmp_path / "m.json")))
    with pytest.raises(DownloadError, match=r"1 tensor\(s\) hold NaN or infinity \(head.weight\)"):
        fetch(spec, root, policy)


def test_non_finite_weights_give_a_failed_run_and_valid_json(server, tmp_path, monkeypatch, capsys):
    import torch

    from ddrm_helpers import run_config

    from . import tiny_models

    real = tiny_models.tiny_checkpoint_bytes

    def poisoned(key, seed=0):
        import io

        state = torch.load(io.BytesIO(real(key, seed)), weights_only=True)
        for tensor in state.values():
            tensor.fill_(float("nan"))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    monkeypatch.setattr(tiny_models, "tiny_checkpoint_bytes", poisoned)
    tiny_models.install_tiny_checkpoints(server, tmp_path, monkeypatch, keys=("celeba_hq",))
    result = run_config("celeba_hq", steps=2, device="cpu", progress=False, out_dir=tmp_path / "runs")
    assert not result.finite and "FAILED: the restoration is not finite" in str(result)
    summary = json.loads((result.out_dir / "metrics.json").read_text())  # strict JSON: no bare NaN
    assert summary["images"][0]["psnr_restored"] is None
    assert "written as null" in summary["notes_on_values"] and summary["failed"]
    from ddrm_helpers import cli

    capsys.readouterr()
    assert cli.main(["run", "--config", "celeba_hq", "--steps", "2", "--out", str(tmp_path / "runs")]) == 1
    assert "FAILED: the restoration is not finite" in capsys.readouterr().out


def test_a_checkpoint_folder_that_is_a_file_is_refused_before_anything(tmp_path):
    from ddrm_helpers import run_config

    afile = tmp_path / "not_a_folder"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_config("celeba_hq", cache_dir=afile)
    assert afile.read_text() == "x"
