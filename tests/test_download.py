"""fetch_checkpoint against a real HTTP server on 127.0.0.1 that fails on purpose.

Every test checks the final file's hash, what is left on disk, and, where it must fail, the text of
the error. Waits between retries are recorded, never slept.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from filelock import FileLock

from ddrm_helpers import ChecksumError, DownloadError
from ddrm_helpers.download import RetryPolicy, fetch_checkpoint
from ddrm_helpers.registry import CheckpointSpec, Source
from ddrm_helpers.verify import CORRUPT, VERIFIED, verify_file

from .conftest import REPO
from .tiny_files import state_dict_bytes, write_manifest

pytestmark = pytest.mark.server

SIZE = 3_000_000
PAYLOAD = random.Random(1234).randbytes(SIZE)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
S3_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
             b"<Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>")


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def policy(sleeps):
    return RetryPolicy(max_failures=4, read_timeout=0.5, connect_timeout=2, sleep=sleeps.append)


def spec_for(*urls, payload=PAYLOAD, **fields) -> CheckpointSpec:
    defaults = dict(key="test_model", file="model.ckpt", subdir="test", size=len(payload),
                    sha256=hashlib.sha256(payload).hexdigest(), description="a test checkpoint")
    defaults.update(fields)
    return CheckpointSpec(urls=tuple(Source(u) for u in urls), **defaults)


def fetch(spec, root, policy, **kwargs):
    return fetch_checkpoint(spec, root, retry=policy, progress=False, quiet=True, **kwargs)


def files_in(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def assert_good(path, payload=PAYLOAD):
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert files_in(path.parent) == {"model.ckpt", ".model.ckpt.verified.json", ".model.ckpt.lock"}


def assert_nothing_final(root):
    folder = root / "test"
    assert "model.ckpt" not in files_in(folder)


def test_clean_download_is_verified_and_recorded(server, root, policy, sleeps):
    spec = spec_for(server.add("/m", PAYLOAD))
    path = fetch(spec, root, policy)
    assert path == root / "test" / "model.ckpt"
    assert_good(path)
    assert verify_file(spec, path).state == VERIFIED and verify_file(spec, path).cached
    assert [e["range"] for e in server.log] == [None] and sleeps == []


def test_a_verified_file_is_neither_downloaded_nor_hashed_again(server, root, policy, monkeypatch):
    spec = spec_for(server.add("/m", PAYLOAD))
    fetch(spec, root, policy)
    hashed = []
    monkeypatch.setattr("ddrm_helpers.verify.hash_file", lambda *a, **k: hashed.append(a))
    assert_good(fetch(spec, root, policy))
    assert hashed == [] and len(server.log) == 1


def test_one_line_per_event_and_nothing_for_a_cached_file(server, root, policy, capsys):
    spec = spec_for(server.add("/m", PAYLOAD))
    fetch_checkpoint(spec, root, retry=policy, progress=False)
    fetch_checkpoint(spec, root, retry=policy, progress=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model.ckpt: downloading 3.0 MB from http://127.0.0.1")
    assert lines[1].startswith(f"model.ckpt: verified (sha256 {SHA256[:12]}")
    assert len(lines) == 2  # quiet success: the second call found the file verified and said nothing


def test_connection_reset_after_k_bytes_resumes_with_range(server, root, policy, sleeps):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("reset", 1_200_000)]))
    assert_good(fetch(spec, root, policy))
    first, second = server.log
    assert first["range"] is None and first["sent"] == 1_200_000
    resumed_at = int(second["range"].removeprefix("bytes=").rstrip("-"))
    assert resumed_at == 1_200_000 and second["status"] == 206
    assert server.bytes_sent("/m") == SIZE + 0  # nothing received was asked for again
    assert sleeps == [1.0]


def test_syncing_to_disk_during_the_download_keeps_the_bytes_right(server, root, policy, monkeypatch):
    synced = []
    real = os.fdatasync
    monkeypatch.setattr("ddrm_helpers.part_writer.SYNC_EVERY", 256 << 10)
    monkeypatch.setattr("os.fdatasync", lambda fd: synced.append(fd) or real(fd))
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("reset", 1_000_000)]))
    assert_good(fetch(spec, root, policy))
    assert synced  # the syncing ran while the bytes arrived


def test_500_n_times_then_success_backs_off_exponentially(server, root, policy, sleeps):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("status", 500)] * 3))
    assert_good(fetch(spec, root, policy))
    assert sleeps == [1.0, 2.0, 4.0]
    assert [e["status"] for e in server.log] == [500, 500, 500, 200]


def test_backoff_is_capped(server, root, sleeps):
    policy = RetryPolicy(max_failures=8, backoff=1.0, backoff_max=5.0, sleep=sleeps.append)
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("status", 502)] * 6))
    assert_good(fetch(spec, root, policy))
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_503_with_retry_after_is_honoured(server, root, policy, sleeps):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("status", 503, b"busy", {"Retry-After": "7"})]))
    assert_good(fetch(spec, root, policy))
    assert sleeps == [7.0]


def test_429_with_an_http_date_retry_after(server, root, policy, sleeps):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("status", 429, b"", {"Retry-After": when}), ("status", 429)]))
    assert_good(fetch(spec, root, policy))
    assert 25 <= sleeps[0] <= 31 and sleeps[1] == 2.0


def test_retry_after_longer_than_we_wait_moves_on(server, root, policy, sleeps):
    first = server.add("/busy", PAYLOAD, faults=[("status", 503, b"", {"Retry-After": "86400"})])
    spec = spec_for(first, server.add("/m", PAYLOAD))
    assert_good(fetch(spec, root, policy))
    assert sleeps == [] and len(server.requests_to("/busy")) == 1


def test_404_is_not_retried_and_the_next_mirror_is_used(server, root, policy, sleeps):
    spec = spec_for(server.url("/gone"), server.add("/m", PAYLOAD))
    assert_good(fetch(spec, root, policy))
    assert len(server.requests_to("/gone")) == 1 and sleeps == []


def test_403_with_s3_xml_body_fails_clearly_and_leaves_nothing(server, root, policy, sleeps):
    url = server.add("/s3", PAYLOAD, faults=[("status", 403, S3_DENIED, {"Content-Type": "application/xml"})])
    with pytest.raises(DownloadError) as info:
        fetch(spec_for(url), root, policy)
    message = str(info.value)
    assert f"1. {url}\n     HTTP 403 Forbidden: AccessDenied" in message
    assert str(root / "test" / "model.ckpt") in message
    assert len(server.requests_to("/s3")) == 1 and sleeps == []
    assert files_in(root / "test") <= {".model.ckpt.lock"}
    assert isinstance(info.value, OSError) and info.value.attempts[0][0] == url


def test_200_with_an_html_page_is_not_a_checkpoint(server, root, policy):
    page = b"<!DOCTYPE html><html><head><title>Sign in to continue</title></head></html>"
    spec = spec_for(server.add("/page", page, content_type="text/html; charset=utf-8"))
    with pytest.raises(DownloadError, match="served a text/html page instead of the file: Sign in to continue"):
        fetch(spec, root, policy)
    assert files_in(root / "test") <= {".model.ckpt.lock"}


def test_an_error_body_sent_as_octet_stream_is_caught_by_its_size_or_content(server, root, policy):
    spec = spec_for(server.add("/xml", S3_DENIED))
    with pytest.raises(DownloadError, match=f"offers {len(S3_DENIED):,} bytes, expected 3,000,000 bytes"):
        fetch(spec, root, policy)
    # Where the size is not known in advance (no Content-Length), the content gives it away.
    spec = spec_for(server.add("/chunked", PAYLOAD, faults=[("body", b"  <html>oops</html>", {})]),
                    size=None, size_min=10, size_max=SIZE, sha256=None)
    with pytest.raises(DownloadError, match="served a text page instead of the file"):
        fetch(spec, root, policy)
    assert files_in(root / "test") <= {".model.ckpt.lock"}


def test_a_stall_past_the_read_timeout_is_retried_and_resumed(server, root, policy, sleeps):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("hold", 1_000_000)]))
    assert_good(fetch(spec, root, policy))
    # The first answer fell silent until the next request came (60 s at most): the client gave up on
    # it after its read timeout and asked again, rather than wait it out, however slow the machine.
    assert server.log[0]["held_until"] == "the next request"
    assert server.log[1]["range"] is not None and server.log[1]["status"] == 206
    assert sleeps == [1.0]


def test_a_server_that_ignores_range_is_started_over_cleanly(server, root, policy):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("reset", 1_000_000)], ignore_range=True))
    assert_good(fetch(spec, root, policy))
    assert server.log[1]["range"] is not None and server.log[1]["status"] == 200


def test_wrong_bytes_on_the_first_mirror_and_the_right_file_on_the_second(server, root, policy, sleeps):
    wrong = bytearray(PAYLOAD)
    wrong[SIZE // 2] ^= 0xFF
    spec = spec_for(server.add("/bad", bytes(wrong)), server.add("/good", PAYLOAD))
    assert_good(fetch(spec, root, policy))
    assert len(server.requests_to("/bad")) == 1  # a mismatch is not downloaded again and again
    assert sleeps == []


def test_a_body_shorter_than_its_content_length_is_resumed(server, root, policy):
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("short", 700_000)]))
    assert_good(fetch(spec, root, policy))
    assert server.log[1]["range"] == "bytes=700000-"


def test_a_source_that_always_truncates_fails_with_the_byte_count(server, root, policy, sleeps):
    faults = [("short", 500_000)] * 10
    spec = spec_for(server.add("/m", PAYLOAD, faults=faults, ignore_range=True))
    with pytest.raises(DownloadError) as info:
        fetch(spec, root, policy)
    assert "truncated at 500,000 of 3,000,000 bytes" in str(info.value)
    assert "gave up after 4 tries in a row without progress" in str(info.value)
    # The partial file stays for a later call, which resumes it.
    assert files_in(root / "test") == {"model.ckpt.part", ".model.ckpt.part.json", ".model.ckpt.lock"}
    assert "partial download (500,000 bytes)" in str(info.value)


def test_retries_go_on_while_bytes_keep_arriving(server, root, sleeps):
    policy = RetryPolicy(max_failures=2, sleep=sleeps.append)
    spec = spec_for(server.add("/m", PAYLOAD, faults=[("reset", 400_000)] * 6))
    assert_good(fetch(spec, root, policy))
    assert len(server.log) == 7  # six cuts, more than max_failures, each brought new bytes


def test_redirects_as_hugging_face_resolve_urls_do(server, root, policy):
    cdn = server.add("/cdn/abc123", PAYLOAD)
    linked = {"X-Linked-Etag": f'"{SHA256}"', "X-Linked-Size": str(SIZE)}
    spec = spec_for(server.add("/resolve/main/model.ckpt", b"", faults=[("redirect", cdn, linked)]))
    assert_good(fetch(spec, root, policy))
    assert [e["path"] for e in server.log] == ["/resolve/main/model.ckpt", "/cdn/abc123"]


def test_a_redirect_announcing_another_sha256_is_skipped_before_downloading(server, root, policy):
    cdn = server.add("/cdn/other", PAYLOAD)
    linked = {"X-Linked-Etag": '"' + "ab" * 32 + '"'}
    spec = spec_for(server.add("/resolve", b"", faults=[("redirect", cdn, linked)]), server.add("/m", PAYLOAD))
    assert_good(fetch(spec, root, policy))
    assert server.requests_to("/cdn/other") == []


def test_a_redirect_to_plain_http_elsewhere_is_refused_without_contacting_it(server, root, policy):
    spec = spec_for(server.add("/r", b"", faults=[("redirect", "http://insecure.invalid/model.ckpt")]))
    with pytest.raises(DownloadError, match="refused http://insecure.invalid/model.ckpt: .*https only"):
        fetch(spec, root, policy)


def test_a_known_md5_that_the_server_contradicts_is_skipped(server, root, policy):
    wrong_md5 = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    first = server.add("/azure", PAYLOAD, headers={"Content-MD5": wrong_md5}, rate=2_000_000)
    spec = spec_for(first, server.add("/m", PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest())
    assert_good(fetch(spec, root, policy))
    assert server.requests_to("/azure")[0]["sent"] < SIZE / 2  # refused on its headers


def test_every_source_failing_gives_one_message_with_every_answer(server, root, policy, sleeps):
    wrong = bytes(reversed(PAYLOAD))
    urls = [server.url("/gone"), server.add("/down", PAYLOAD, faults=[("status", 500)] * 9),
            server.add("/wrong", wrong)]
    with pytest.raises(DownloadError) as info:
        fetch(spec_for(*urls), root, policy)
    message = str(info.value)
    assert f"1. {urls[0]}\n     HTTP 404 Not Found: 404 Not Found" in message
    assert (f"2. {urls[1]}\n     HTTP 500 Internal Server Error; gave up after 4 tries in a row without progress "
            "(4 tries, waited 1, 2, 4 s)") in message
    wrong_sha = hashlib.sha256(wrong).hexdigest()
    assert f"3. {urls[2]}\n     checksum mismatch: expected sha256 {SHA256}, got {wrong_sha}" in message
    for remedy in ("put it at", str(root / "test" / "model.ckpt"), "DDRM_CHECKPOINT_DIR", "Colab",
                   "docs/downloads.md"):
        assert remedy in message
    assert not isinstance(info.value, ChecksumError)
    assert sleeps == [1.0, 2.0, 4.0]
    assert files_in(root / "test") <= {".model.ckpt.lock"}


def test_all_sources_serving_the_same_wrong_file_is_a_checksum_error(server, root, policy):
    wrong = bytes(reversed(PAYLOAD))
    spec = spec_for(server.add("/a", wrong), server.add("/b", wrong))
    with pytest.raises(ChecksumError, match="Every source served the same file") as info:
        fetch(spec, root, policy)
    assert isinstance(info.value, DownloadError)
    assert files_in(root / "test") <= {".model.ckpt.lock"}


def test_a_file_corrupted_after_verification_is_noticed_and_replaced(server, root, policy):
    spec = spec_for(server.add("/m", PAYLOAD))
    path = fetch(spec, root, policy)
    before = path.stat()
    with open(path, "r+b") as f:  # same size, and the modification time put back: only ctime tells
        f.seek(SIZE // 3)
        f.write(b"\0" * 16)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    state = verify_file(spec, path)
    assert state.state == CORRUPT and "sha256 mismatch" in state.detail
    fetch(spec, root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert (root / "test" / "model.ckpt.invalid").exists()  # the bad copy is kept aside, not lost
    assert len(server.log) == 2


def test_a_foreign_partial_file_under_the_final_name_is_set_aside_not_resumed(server, root, policy):
    folder = root / "test"
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(PAYLOAD[:1_000_000])  # a prefix, but nothing says this store wrote it
    spec = spec_for(server.add("/m", PAYLOAD))
    path = fetch(spec, root, policy)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256
    assert server.log[0]["range"] is None  # started afresh
    assert (folder / "model.ckpt.invalid").read_bytes() == PAYLOAD[:1_000_000]  # kept, never deleted


def test_an_error_page_saved_as_the_checkpoint_is_set_aside(server, root, policy):
    folder = root / "test"
    folder.mkdir(parents=True)
    (folder / "model.ckpt").write_bytes(S3_DENIED)
    spec = spec_for(server.add("/m", PAYLOAD))
    assert verify_file(spec, folder / "model.ckpt").detail.endswith("(this looks like an error page saved as the file)")
    fetch(spec, root, policy)
    assert server.log[0]["range"] is None
    assert (folder / "model.ckpt.invalid").read_bytes() == S3_DENIED


def test_a_complete_partial_is_verified_after_a_416(server, root, policy, monkeypatch):
    url = server.add("/m", PAYLOAD)
    real_replace = os.replace

    def die_before_the_rename(src, dst):
        if str(src).endswith(".part"):
            raise KeyboardInterrupt  # the process dies between the last byte and the rename
        real_replace(src, dst)

    monkeypatch.setattr("ddrm_helpers.fetch_policy.os.replace", die_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        fetch(spec_for(url), root, policy)
    monkeypatch.setattr("ddrm_helpers.fetch_policy.os.replace", real_replace)
    assert (root / "test" / "model.ckpt.part").stat().st_size == SIZE
    assert_good(fetch(spec_for(url), root, policy))
    assert [e["status"] for e in server.log] == [200, 416]


def test_not_enough_disk_space_says_how_much_is_needed(server, root, policy, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr("ddrm_helpers.part_writer.shutil.disk_usage",
                        lambda p: real(p)._replace(free=10_000_000))
    with pytest.raises(DownloadError, match=r"needs 70\.1 MB more .* has 10\.0 MB free"):
        fetch(spec_for(server.add("/m", PAYLOAD)), root, policy)
    assert server.log == []


def test_waiting_for_another_holder_of_the_lock_times_out_clearly(server, root, policy):
    folder = root / "test"
    folder.mkdir(parents=True)
    holder = FileLock(str(folder / ".model.ckpt.lock"))
    acquired = threading.Event()
    release = threading.Event()

    def hold():
        with holder:
            acquired.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait(5)
    try:
        with pytest.raises(DownloadError, match="still locked by another process"):
            fetch(spec_for(server.add("/m", PAYLOAD)), root, policy, lock_timeout=0.2)
    finally:
        release.set()
        thread.join()
    assert server.log == []


def test_checkpoint_dir_environment_variable_moves_the_root(server, tmp_path, policy, monkeypatch):
    monkeypatch.setenv("DDRM_CHECKPOINT_DIR", str(tmp_path / "drive"))
    spec = spec_for(server.add("/m", PAYLOAD))
    path = fetch_checkpoint(spec, retry=policy, progress=False, quiet=True)
    assert path == tmp_path / "drive" / "test" / "model.ckpt"
    assert_good(path)


# -- several processes ----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from ddrm_helpers.download import RetryPolicy, fetch_checkpoint
    from ddrm_helpers.registry import CheckpointSpec, Source
    url, root, size, sha = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    spec = CheckpointSpec(key="test_model", file="model.ckpt", subdir="test", size=size, sha256=sha,
                          urls=(Source(url),))
    print("CHILD", fetch_checkpoint(spec, root, progress=False, retry=RetryPolicy(read_timeout=5)), flush=True)
""")


def child(url, root, payload=PAYLOAD):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, url, str(root), str(len(payload)), hashlib.sha256(payload).hexdigest()]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The two waits below poll for a state another process or thread reaches; their timeouts only
# bound a hang (a state never reached), far beyond the time it takes on a busy machine.
def wait_for_part(path, at_least, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {at_least} bytes")


def wait_until(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.01)


@pytest.mark.subprocess
def test_two_processes_fetching_the_same_file_end_with_one_good_file(server, root):
    url = server.add("/m", PAYLOAD, rate=3_000_000)
    first, second = child(url, root), child(url, root)
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert all(f"CHILD {root / 'test' / 'model.ckpt'}" in out for out, _ in outs)
    assert_good(root / "test" / "model.ckpt")
    assert server.bytes_sent("/m") == SIZE  # the second waited for the first, then found the file
    assert any("another process is downloading this file" in out for out, _ in outs)


@pytest.mark.subprocess
def test_a_download_killed_part_way_is_resumed_by_a_new_process(server, root, policy):
    # The first answer stops at 2,000,000 bytes (and then says nothing), so that the process is
    # killed part way however slowly the test runs: what it sent is bounded, its timing is not.
    url = server.add("/m", PAYLOAD, faults=[("stall", 2_000_000, 30)], rate=2_000_000)
    proc = child(url, root)
    part = root / "test" / "model.ckpt.part"
    wait_for_part(part, 1_000_000)
    proc.kill()
    proc.wait()
    kept = part.stat().st_size
    assert 1_000_000 <= kept <= 2_000_000
    assert not (root / "test" / "model.ckpt").exists()
    server.routes["/m"].rate = None
    assert_good(fetch(spec_for(url), root, policy))
    # What the protocol guarantees: the killed process made one whole-file request; the new one
    # asked for exactly the bytes the .part lacked, and was sent those and no others.
    killed, resumed = server.requests_to("/m")
    assert (killed["range"], killed["status"]) == (None, 200)
    assert (resumed["range"], resumed["status"]) == (f"bytes={kept}-", 206)
    wait_until(lambda: resumed["sent"] == SIZE - kept)  # the server thread counts after the client has the bytes


@pytest.mark.subprocess
def test_ctrl_c_leaves_a_resumable_partial_and_nothing_else(server, root, policy):
    url = server.add("/m", PAYLOAD, rate=2_000_000)
    proc = child(url, root)
    part = root / "test" / "model.ckpt.part"
    wait_for_part(part, 1_000_000)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert "interrupted; the partial download" in out and "is resumed next time" in out
    assert files_in(root / "test") == {"model.ckpt.part", ".model.ckpt.part.json", ".model.ckpt.lock"}
    kept = part.stat().st_size
    server.routes["/m"].rate = None
    assert_good(fetch(spec_for(url), root, policy))  # the lock was released, the partial resumed
    assert server.log[-1]["range"] == f"bytes={kept}-"


# -- the unpinned classifier -------------------------------------------------------------------


@pytest.fixture
def unpinned(tmp_path):
    """A spec like the classifier's: no sha256, a size range, a tensor manifest."""
    payload = state_dict_bytes()
    manifest = write_manifest(tmp_path / "tiny.json")

    def make(*urls):
        return spec_for(*urls, payload=payload, size=None, sha256=None, size_min=len(payload) - 2000,
                        size_max=len(payload) + 2000, manifest=str(manifest))

    return payload, make


def test_unpinned_file_is_checked_by_manifest_and_its_hash_recorded(server, root, policy, unpinned, capsys):
    payload, make = unpinned
    md5 = base64.b64encode(hashlib.md5(payload).digest()).decode()
    spec = make(server.add("/cls", payload, headers={"Content-MD5": md5}))
    path = fetch_checkpoint(spec, root, retry=policy, progress=False)
    sha = hashlib.sha256(payload).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    out = capsys.readouterr().out
    assert "unpinned: nobody publishes a sha256 for this file" in out and sha in out
    state = verify_file(spec, path)
    assert state.state == "unpinned" and state.sha256 == sha and state.cached


def test_unpinned_file_with_other_tensors_is_refused(server, root, policy, unpinned):
    payload, make = unpinned
    other = state_dict_bytes({"encoder.weight": (64, 32), "encoder.bias": (64,), "heads.weight": (10, 64)})
    spec = make(server.add("/other", other), server.add("/cls", payload))
    fetch(spec, root, policy)
    spec = make(server.add("/other2", other))
    (root / "test" / "model.ckpt").unlink()
    with pytest.raises(DownloadError) as info:
        fetch(spec, root, policy)
    assert "1 tensor(s) missing (head.weight); 1 tensor(s) unexpected (heads.weight)" in str(info.value)
    assert files_in(root / "test") <= {".model.ckpt.lock", ".model.ckpt.verified.json"}


def test_unpinned_garbage_of_the_right_size_is_refused(server, root, policy, unpinned):
    payload, make = unpinned
    garbage = b"\x80\x02" + bytes(len(payload) - 2)
    with pytest.raises(DownloadError, match="cannot be loaded as a checkpoint"):
        fetch(make(server.add("/junk", garbage)), root, policy)


def test_unpinned_file_must_match_the_digests_the_server_announces(server, root, policy, unpinned):
    payload, make = unpinned
    bad_md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    cdn = server.add("/cdn", payload)
    bad_etag = {"X-Linked-Etag": '"' + "cd" * 32 + '"'}
    spec = make(server.add("/md5", payload, headers={"Content-MD5": bad_md5}),
                server.add("/lfs", b"", faults=[("redirect", cdn, bad_etag)]))
    with pytest.raises(ChecksumError) as info:
        fetch(spec, root, policy)
    message = str(info.value)
    md5s = hashlib.md5(b"x").hexdigest(), hashlib.md5(payload).hexdigest()
    assert "the server announced MD5 {}, got {}".format(*md5s) in message
    assert f"the server announced sha256 {'cd' * 32}, got {hashlib.sha256(payload).hexdigest()}" in message
    assert files_in(root / "test") <= {".model.ckpt.lock"}
