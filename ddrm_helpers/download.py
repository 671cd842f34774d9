"""`fetch_checkpoint`: a verified checkpoint on disk, or a `DownloadError` that says what to do.

How a file arrives:

1. A file already in place counts once it is verified (size, then sha256; a record of a good
   verification spares the re-hash, see :mod:`ddrm_helpers.verify`).
2. Otherwise, holding a lock (``.<file>.lock``) so that two processes never write the same file,
   each source of the registry is tried in order. The bytes stream into ``<file>.part`` in the
   same folder and are hashed as they arrive. A partial file is resumed with ``Range`` (and
   started over cleanly when the server ignores it). What can succeed on retry (connection
   reset, timeout, 408/429/5xx, honouring ``Retry-After``) is retried with capped exponential
   backoff, and for as long as bytes keep arriving; a 403 or 404, an error page, or a file of
   the wrong size moves on to the next source at once.
3. Only a file whose size and sha256 match the registry (for the unpinned classifier: its size
   range, every digest the server announced, and its tensor manifest) is moved into place, with
   an atomic ``os.replace``. A cut or corrupt download never stands under the final name;
   Ctrl-C leaves ``<file>.part`` for the next call to resume.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .errors import ChecksumError, DownloadError
from .paths import CHECKPOINT_DIR_ENV
from .registry import CheckpointSpec, is_allowed_url
from .safefs import (
    PathBlockedError,
    StoreLock,
    blocked_message,
    create_new,
    is_disk_full,
    is_read_only,
    open_own,
    open_read,
    read_small,
    require_plain,
    set_aside,
    what_is,
    write_new_atomically,
)
from .verify import BLOCKED, CORRUPT, UNREADABLE, check_manifest, hash_file, verify_file, write_record

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# What a body stream raises when the connection breaks or stalls, through requests or urllib3.
STREAM_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)
MARKUP_TYPES = ("text/html", "application/xhtml", "text/xml", "application/xml", "application/json")
# Received bytes are synced to the disk in steps of this size while the download goes on.
SYNC_EVERY = 64 << 20
# Room left over on the disk beyond the file itself, so that finishing a download never fills it.
DISK_MARGIN = 64 << 20


@dataclass
class RetryPolicy:
    """How hard to try one source before moving to the next.

    ``max_failures`` counts consecutive attempts that brought no new bytes; an attempt that
    brings bytes resets it, so a slow but working connection is never abandoned.
    ``min_rate`` (bytes per second) over ``rate_window`` seconds is the floor below which a
    connection that still trickles is cut and counted as a failure, like a stall.
    ``sleep`` is injectable so that tests record waits instead of waiting.
    """

    max_failures: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 600.0
    connect_timeout: float = 20.0
    read_timeout: float = 60.0
    min_rate: float = 10_000.0
    rate_window: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int) -> float:
        return min(self.backoff * 2 ** max(failures - 1, 0), self.backoff_max)


def fetch_checkpoint(
    key: str | CheckpointSpec,
    cache_dir: str | os.PathLike | None = None,
    *,
    registry: dict[str, CheckpointSpec] | str | os.PathLike | None = None,
    progress: bool = True,
    quiet: bool = False,
    retry: RetryPolicy | None = None,
    session: requests.Session | None = None,
    lock_timeout: float | None = None,
) -> Path:
    """Return the path of the verified checkpoint ``key``, downloading it if needed.

    A convenience for ``CheckpointStore(cache_dir, registry).fetch(key, ...)`` (see
    :class:`~ddrm_helpers.store.CheckpointStore`): ``cache_dir`` (else ``$DDRM_CHECKPOINT_DIR``,
    else ``exp/logs``) is the checkpoint root; the file goes to ``<root>/<subdir>/<file>`` as listed
    in ``configs/checkpoints.yml``. ``progress`` shows a tqdm bar; ``quiet`` silences the one-line
    reports. ``lock_timeout`` bounds the wait for another process downloading the same file
    (None: wait).

    Raises :class:`DownloadError` (an ``OSError``) naming every source tried and what it
    answered, and what the user can do; :class:`ChecksumError` when the sources served bytes
    that are not the pinned file.
    """
    from .store import CheckpointStore

    return CheckpointStore(cache_dir, registry).fetch(
        key, progress=progress, quiet=quiet, retry=retry, session=session, lock_timeout=lock_timeout)


def download_file(spec: CheckpointSpec, path: Path, say: Callable[[str], None], *, progress: bool = True,
                  retry: RetryPolicy | None = None, session: requests.Session | None = None,
                  lock_timeout: float | None = None) -> Path:
    """Make ``path`` the verified file of ``spec``: the locked download of one file.

    ``path`` is where the store placed it (inside the root, no link on the way). Holds the lock
    ``.<file>.lock`` so that two processes never write the same file.
    """
    require_plain(path, key=spec.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(spec, path, err) from None
    lock = StoreLock(path.with_name(f".{path.name}.lock"), say)
    try:
        held = lock.acquire(timeout=0)
        if not held:
            say(f"another process is downloading this file; waiting for it (lock: {lock.path})")
            held = lock.acquire(timeout=lock_timeout)
    except PathBlockedError:
        raise
    except OSError as err:
        raise _unwritable(spec, path, err) from None
    if not held:
        raise DownloadError(
            f"{spec.file}: still locked by another process after {lock_timeout:.0f} s "
            f"({lock.path}). Wait for that download to finish, or stop it and run again.",
            key=spec.key, path=path,
        )
    try:
        return _Download(spec, path, say, progress, retry or RetryPolicy(), session).run()
    finally:
        lock.release()


def part_record_path(path: Path) -> Path:
    """Where the record beside a ``.part`` that this downloader created is kept (see ``_Download``)."""
    return path.with_name(f".{path.name}.part.json")


def _unwritable(spec: CheckpointSpec, path: Path, err: OSError) -> DownloadError:
    if is_disk_full(err):
        return DownloadError(f"Cannot download {spec.file}: the disk holding {path.parent} is full. Free some "
                             f"space, or set {CHECKPOINT_DIR_ENV} to a folder on another disk.",
                             key=spec.key, path=path)
    if is_read_only(err):
        return DownloadError(
            f"Cannot download {spec.file}: {path.parent} cannot be written ({err.strerror or err}); the "
            "checkpoints already there are used as they are. To download this one, set "
            f"{CHECKPOINT_DIR_ENV} to a folder you can write (for example ~/ddrm-checkpoints, or a Google "
            "Drive folder in Colab), or pass cache_dir=... (--dir on the command line).",
            key=spec.key, path=path,
        )
    return DownloadError(f"Cannot download {spec.file} into {path.parent}: {err.strerror or err}",
                         key=spec.key, path=path)


class _Reporter:
    """One line per event, prefixed with the file name."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet = name, quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.name}: {message}", flush=True)


@dataclass
class _Attempt:
    """What one source answered, in the words of the final error message."""

    url: str
    outcome: str = ""
    tries: int = 0
    waits: list[float] = field(default_factory=list)
    checksum: bool = False  # the source served bytes that are not the expected file
    got: str | None = None  # the sha256 of the whole file it served, when it did

    def line(self) -> str:
        extra = []
        if self.tries > 1:
            extra.append(f"{self.tries} tries")
        if self.waits:
            extra.append("waited " + ", ".join(f"{w:g}" for w in self.waits) + " s")
        return self.outcome + (f" ({', '.join(extra)})" if extra else "")


class _SourceFailed(Exception):
    """This source cannot give the file: go to the next one.

    ``checksum`` marks bytes that are not the expected file; ``got`` is their sha256 when the
    whole file arrived.
    """

    def __init__(self, outcome: str, *, checksum: bool = False, got: str | None = None):
        super().__init__(outcome)
        self.outcome, self.checksum, self.got = outcome, checksum or got is not None, got


class _Retry(Exception):
    """This attempt failed in a way that may succeed on another try.

    ``slow``: bytes did arrive, but below the rate floor; that counts as no progress.
    """

    def __init__(self, outcome: str, retry_after: float | None = None, slow: bool = False):
        super().__init__(outcome)
        self.outcome, self.retry_after, self.slow = outcome, retry_after, slow


class _DiskFull(Exception):
    """Writing ``.part`` failed for want of space: no retry can help."""


class _StreamHash:
    """Digests of the bytes appended to ``.part``, computed on a worker thread as they arrive.

    hashlib releases the GIL on large buffers, so hashing overlaps the network and the disk.
    ``fed`` counts the bytes hashed so far; it must equal the size of ``.part`` to be of use.
    """

    def __init__(self, algorithms: tuple[str, ...]):
        self.algorithms = algorithms
        self.fed = 0
        self._hashers = [hashlib.new(a) for a in algorithms]
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._work, name="ddrm-hash", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not None:
            for h in self._hashers:
                h.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)
        self.fed += len(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigests(self) -> dict[str, str]:
        self.close()
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers)}


class _FlushBehind:
    """Writes received bytes to the disk while the download goes on.

    The file is fsync'ed before it is renamed into place (else a crash could leave a verified name
    over unwritten data); syncing every ``every`` bytes on a worker thread spreads that work over
    the download instead of adding it at the end.
    """

    def __init__(self, every: int | None = None):
        self.every, self.pending, self.unsynced = every or SYNC_EVERY, None, 0
        self.sync = getattr(os, "fdatasync", os.fsync)

    def wrote(self, out, n: int) -> None:
        self.unsynced += n
        if self.unsynced >= self.every and (self.pending is None or not self.pending.is_alive()):
            out.flush()
            self.pending = threading.Thread(target=self._sync, args=(out.fileno(),), daemon=True)
            self.pending.start()
            self.unsynced = 0

    def _sync(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports what matters
            self.sync(fd)

    def finish(self) -> None:
        if self.pending is not None:
            self.pending.join()


class _Download:
    """One file: the sources in order, each with retries, into ``<file>.part``, then verify."""

    def __init__(self, spec, path, say, progress, retry, session):
        self.spec, self.path, self.say, self.progress, self.retry = spec, path, say, progress, retry
        self.session = session or _new_session()
        self.part = path.with_name(path.name + ".part")
        # Beside a .part the store created: its inode, so that a file put there by anyone else is
        # never resumed (nor deleted).
        self.part_record = part_record_path(path)
        self.part_inode: tuple[int, int] | None = None
        self.attempts: list[_Attempt] = []
        self.hash: _StreamHash | None = None

    def run(self) -> Path:
        try:
            return self._run()
        except _DiskFull as full:
            raise self._disk_full_error(full.__cause__ or full) from None
        except KeyboardInterrupt:
            if self._part_size():
                self.say(f"interrupted; the partial download ({self._part_size():,} bytes) is kept at "
                         f"{self.part} and is resumed next time")
            raise
        finally:
            if self.hash is not None:
                self.hash.close()

    def _run(self) -> Path:
        current = verify_file(self.spec, self.path, say=self.say)  # another process may have finished meanwhile
        if current.ok:
            return self.path
        if current.state == BLOCKED:
            raise PathBlockedError(current.detail, key=self.spec.key, path=self.path)
        if current.state == UNREADABLE:
            raise DownloadError(f"{self.path} {current.detail}: check its permissions, or move it away and run "
                                "again.", key=self.spec.key, path=self.path)
        if current.state == CORRUPT:
            moved = set_aside(self.path)
            self.say(f"the file at {self.path} is not the right one ({current.detail}); moved it to {moved.name}")
        self._adopt_part()
        self._check_disk_space()
        failed_sources: list[str] = []
        for source in self.spec.urls:
            attempt = _Attempt(source.url)
            self.attempts.append(attempt)
            try:
                sha256 = self._from_source(source.url, attempt)
            except _SourceFailed as failure:
                attempt.outcome, attempt.checksum, attempt.got = failure.outcome, failure.checksum, failure.got
                note = f" [{source.note}]" if source.note else ""
                # Said only if a later source succeeds; if none does, the final report lists them all.
                failed_sources.append(f"{source.url}: {failure.outcome}{note}")
                continue
            for line in failed_sources:
                self.say(f"{line} (then the next source served the file)")
            require_plain(self.path, key=self.spec.key)
            os.replace(self.part, self.path)
            self._forget_part()
            write_record(self.path, sha256, pinned=self.spec.pinned, source=source.url, say=self.say)
            if self.spec.pinned:
                self.say(f"verified (sha256 {sha256[:12]}...) -> {self.path}")
            else:
                self.say(
                    f"unpinned: nobody publishes a sha256 for this file, so it was checked by its size, "
                    f"the digests the server sent, and its tensor names and shapes. Its sha256 is {sha256} "
                    f"(recorded beside it) -> {self.path}"
                )
            return self.path
        raise self._final_error()

    # -- before downloading -------------------------------------------------------------------

    def _adopt_part(self) -> None:
        """Keep a ``.part`` this store created (to resume it); move anything else there aside."""
        what = what_is(self.part)
        if what is not None:
            raise PathBlockedError(blocked_message(self.part, what, "a partial download"),
                                   key=self.spec.key, path=self.part)
        if not os.path.lexists(self.part):
            self._forget_part()
            return
        record = _read_json(self.part_record)
        st = os.lstat(self.part)
        mine = (isinstance(record, dict) and record.get("inode") == [st.st_dev, st.st_ino]
                and record.get("for") == self._identity())
        if mine:
            self.part_inode = (st.st_dev, st.st_ino)
            return
        moved = set_aside(self.part)
        self._forget_part()
        self.say(f"{self.part.name} was not left by this downloader (or by a download of another file): "
                 f"moved it to {moved.name}; starting afresh")

    def _identity(self) -> str:
        return f"{self.spec.key} {self.spec.sha256 or ''} {self.spec.expected_size_text()}"

    def _open_part(self, have: int):
        """``.part`` for writing from byte ``have``: a new file of ours, or the one we made before."""
        if self.part_inode is None or not os.path.lexists(self.part):
            self._forget_part()
            out = create_new(self.part)
            st = os.fstat(out.fileno())
            self.part_inode = (st.st_dev, st.st_ino)
            write_new_atomically(self.part_record, json.dumps(
                {"for": self._identity(), "inode": list(self.part_inode)}).encode())
        else:
            out = open_own(self.part, self.part_inode)
        out.seek(have)
        out.truncate()
        return out

    def _drop_part(self) -> None:
        """Delete our own ``.part`` (never anyone else's)."""
        if self.part_inode is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.part)
                if (st.st_dev, st.st_ino) == self.part_inode:
                    os.unlink(self.part)
        self._forget_part()

    def _forget_part(self) -> None:
        self.part_inode = None
        if what_is(self.part_record) is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part_record)

    def _check_disk_space(self) -> None:
        have = self._part_size()
        need = max(self.spec.max_size - have, 0) + DISK_MARGIN
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise DownloadError(
                f"Not enough disk space for {self.spec.file}: it needs {format_size(need)} more "
                f"(the file is {format_size(self.spec.max_size)}), and {self.path.parent} "
                f"has {format_size(free)} free.\n"
                f"Free some space, or keep checkpoints on another disk: set {CHECKPOINT_DIR_ENV} "
                "(or pass cache_dir=..., or --dir on the command line) to a folder there.",
                key=self.spec.key, path=self.path,
            )

    # -- one source ----------------------------------------------------------------------------

    def _from_source(self, url: str, attempt: _Attempt) -> str:
        """Download from one URL with retries; return the sha256 of the verified ``.part``."""
        failures = 0
        started_with = self._part_size()
        best = started_with
        restarted = False
        while True:
            attempt.tries += 1
            try:
                digests = self._one_request(url)
            except _Retry as retry:
                have = self._part_size()
                if have > best and not retry.slow:
                    best, failures = have, 0
                else:
                    failures += 1
                best = max(best, have)
                if failures >= self.retry.max_failures:
                    raise _SourceFailed(self._with_progress(retry.outcome, have)) from None
                wait = retry.retry_after if retry.retry_after is not None else self.retry.delay(failures)
                if wait > self.retry.max_retry_after:
                    raise _SourceFailed(
                        f"{retry.outcome}; asked to retry after {wait:.0f} s, longer than we wait"
                    ) from None
                self.say(f"{retry.outcome}; retrying in {wait:g} s")
                attempt.waits.append(wait)
                self.retry.sleep(wait)
                continue
            try:
                return self._verify_part(digests)
            except _SourceFailed as failure:
                self._drop_part()
                if failure.checksum and started_with and not restarted:
                    # The bytes of an older partial may be at fault, not this source: once, start over.
                    restarted, started_with, best, failures = True, 0, 0, 0
                    self.say(f"{failure.outcome} after resuming an earlier partial file; starting over")
                    continue
                raise

    def _one_request(self, url: str) -> dict:
        """One GET, resumed from ``.part``; returns what is known about the whole file's digests."""
        have = self._part_size()
        if have > self.spec.max_size:
            self._drop_part()
            have = 0
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        response = self._get_following_redirects(url, headers)
        with response:
            announced = self._check_response(response, have)
            if response.status_code == 416:
                return announced  # the partial file is already whole; verify it
            if response.status_code == 200 and have:
                self.say("the server ignored the resume request; starting over")
                have = 0
            size = format_size(self.spec.max_size) if self.spec.pinned else f"about {format_size(self.spec.max_size)}"
            self.say(f"{'downloading' if not have else f'resuming at {format_size(have)} of'} {size} from {url}")
            total = have + announced["length"] if announced["length"] is not None else None
            self._stream(response, have, total)
        return announced

    def _get_following_redirects(self, url: str, headers: dict) -> requests.Response:
        """GET, following redirects by hand so that each hop is checked before it is contacted.

        Hugging Face ``resolve`` URLs redirect to a CDN; the redirect carries the file's sha256
        (``X-Linked-Etag``), so the hops are kept in ``response.history`` for `_check_response`.
        """
        history: list[requests.Response] = []
        first_scheme = urlsplit(url).scheme
        for _ in range(10):
            if not is_allowed_url(url) or (first_scheme == "https" and urlsplit(url).scheme != "https"):
                raise _SourceFailed(f"refused {url}: checkpoints are fetched over https only")
            try:
                response = self.session.get(
                    url, headers=headers, stream=True, allow_redirects=False,
                    timeout=(self.retry.connect_timeout, self.retry.read_timeout),
                )
            except requests.exceptions.InvalidURL as err:
                raise _SourceFailed(f"invalid URL: {err}") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
                if _unreachable(err):
                    host = urlsplit(url).hostname
                    raise _SourceFailed(f"cannot reach {host} (no internet connection, or the host is gone)") from None
                raise _Retry(_network_error(err)) from None
            if not (response.is_redirect and response.headers.get("Location")):
                response.history = history
                return response
            history.append(response)
            response.close()
            self._refuse_announced_mismatch(_announced_sha256(response))
            url = urljoin(url, response.headers["Location"])
        raise _SourceFailed("too many redirects")

    def _check_response(self, response: requests.Response, have: int) -> dict:
        """Refuse what cannot be the file; return the length and digests the server announced."""
        chain = [*response.history, response]
        status = response.status_code
        if status in RETRYABLE_STATUS:
            raise _Retry(f"HTTP {status} {response.reason}", _retry_after(response))
        if status == 416 and have:
            if self.spec.size_ok(have):
                return {"length": 0, "sha256": None, "md5": None}
            self._drop_part()
            raise _Retry("HTTP 416 Range Not Satisfiable (partial file discarded)")
        if status not in (200, 206):
            raise _SourceFailed(_http_error(response))
        content_type = response.headers.get("Content-Type", "").lower()
        if any(content_type.startswith(t) for t in MARKUP_TYPES):
            raise _SourceFailed(f"served a {content_type.split(';')[0]} page instead of the file"
                                + _body_hint(response))

        length = _int_header(response, "Content-Length")
        if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
            length = None  # a length of the encoded body says nothing about the file
        if status == 206:
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                raise _Retry(f"answered a resume at {have:,} with Content-Range "
                             f"{response.headers.get('Content-Range')!r}")
            whole = int(match.group(3)) if match.group(3) != "*" else None
        else:
            whole = length
        if whole is not None and not self.spec.size_ok(whole):
            raise _SourceFailed(f"offers {whole:,} bytes, expected {self.spec.expected_size_text()} "
                                "(a different file)")

        sha256 = md5 = None
        for r in chain:
            sha256 = sha256 or _announced_sha256(r)
            if status == 200 and r is response:
                md5 = md5 or _b64_md5(r.headers.get("Content-MD5"))
            md5 = md5 or _b64_md5(r.headers.get("x-ms-blob-content-md5"))
        self._refuse_announced_mismatch(sha256)
        if md5 and self.spec.md5 and md5 != self.spec.md5:
            raise _SourceFailed(f"announces MD5 {md5}, but the known MD5 is {self.spec.md5} "
                                "(a different file)", checksum=True)
        return {"length": length, "sha256": sha256, "md5": md5}

    def _refuse_announced_mismatch(self, sha256: str | None) -> None:
        if sha256 and self.spec.pinned and sha256 != self.spec.sha256:
            raise _SourceFailed(f"announces sha256 {sha256}, but the registry pins {self.spec.sha256} "
                                "(a different file)", checksum=True)

    def _stream(self, response: requests.Response, have: int, total: int | None) -> None:
        """Append the body to ``.part`` (from ``have``); a cut or too slow stream raises `_Retry`.

        Never more bytes than the file may have reach the disk, whatever the server announced: a
        body that goes on past the registry's size fails this source.
        """
        from tqdm.auto import tqdm

        limit = self.spec.max_size
        bar = tqdm(
            total=total or limit, initial=have, unit="B", unit_scale=True,
            unit_divisor=1024, desc=self.spec.file, disable=not self.progress, leave=False,
            mininterval=0.5,
        )
        received = have
        first = True
        digest = self._hash_up_to(have)
        flusher = _FlushBehind()
        floor = _RateFloor(self.retry.min_rate, self.retry.rate_window)
        try:
            out = self._open_part(have)
        except OSError as err:
            if is_disk_full(err):
                raise _DiskFull() from err
            raise DownloadError(f"cannot write {self.part}: {err.strerror or err}", key=self.spec.key,
                                path=self.path) from None
        try:
            with out:
                try:
                    for chunk in _body_chunks(response):
                        if first and not have and _looks_like_markup(chunk[:512]):
                            out.close()
                            self._drop_part()
                            raise _SourceFailed("served a text page instead of the file"
                                                + _body_hint(response, chunk))
                        first = False
                        if received + len(chunk) > limit:
                            out.close()
                            self._drop_part()
                            raise _SourceFailed(f"sent more than the {limit:,} bytes of the file (stopped reading "
                                                "there)")
                        _write(out, chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        flusher.wrote(out, len(chunk))
                        slow = floor.check(len(chunk))
                        if slow:
                            raise _Retry(slow, slow=True)
                except STREAM_ERRORS as err:
                    raise _Retry(_network_error(err)) from None
                finally:
                    flusher.finish()
                    if not out.closed:
                        try:
                            out.flush()
                            os.fsync(out.fileno())
                        except OSError as err:
                            if is_disk_full(err):
                                raise _DiskFull() from err
                            raise
        finally:
            bar.close()
        if total is not None and received < total:
            raise _Retry(f"connection closed early at {received:,} of {total:,} bytes")

    def _disk_full_error(self, err: BaseException) -> DownloadError:
        have = self._part_size()
        need = max(self.spec.max_size - have, 0)
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = 0
        return DownloadError(
            f"The disk is full: writing {self.part} failed ({getattr(err, 'strerror', None) or err}) after "
            f"{have:,} bytes of {self.spec.file}. It needs {format_size(need)} more and {self.path.parent} has "
            f"{format_size(free)} free. The partial download is kept: free some space (or set "
            f"{CHECKPOINT_DIR_ENV} to a folder on a larger disk and move the .part file there) and run again "
            "to resume it.",
            key=self.spec.key, path=self.path,
        )

    # -- after downloading ---------------------------------------------------------------------

    def _algorithms(self) -> tuple[str, ...]:
        # An MD5 a server announces is worth computing only where no sha256 is pinned.
        return ("sha256",) if self.spec.pinned else ("sha256", "md5")

    def _hash_up_to(self, have: int) -> _StreamHash:
        """The running hash of ``.part``, caught up to its first ``have`` bytes."""
        if self.hash is None or self.hash.fed != have:
            if self.hash is not None:
                self.hash.close()
            self.hash = _StreamHash(self._algorithms())
            if have:
                with open_read(self.part) as f:
                    while self.hash.fed < have and (chunk := f.read(min(CHUNK * 8, have - self.hash.fed))):
                        self.hash.update(chunk)
        return self.hash

    def _digests(self) -> dict[str, str]:
        size = self._part_size()
        if self.hash is not None and self.hash.fed == size:
            digests = self.hash.hexdigests()
        else:
            digests = hash_file(self.part, self._algorithms())
        self.hash = None
        return digests

    def _verify_part(self, announced: dict) -> str:
        size = self._part_size()
        if not self.spec.size_ok(size):
            raise _SourceFailed(f"gave {size:,} bytes, expected {self.spec.expected_size_text()}")
        digests = self._digests()
        sha256 = digests["sha256"]
        if self.spec.pinned and sha256 != self.spec.sha256:
            raise _SourceFailed(f"checksum mismatch: expected sha256 {self.spec.sha256}, got {sha256}",
                                got=sha256)
        if announced.get("sha256") and announced["sha256"] != sha256:
            raise _SourceFailed(f"checksum mismatch: the server announced sha256 {announced['sha256']}, "
                                f"got {sha256}", got=sha256)
        if announced.get("md5") and "md5" in digests and announced["md5"] != digests["md5"]:
            raise _SourceFailed(f"checksum mismatch: the server announced MD5 {announced['md5']}, "
                                f"got {digests['md5']}", got=sha256)
        if not self.spec.pinned:
            problem = check_manifest(self.spec, self.part)
            if problem:
                raise _SourceFailed(f"not the expected file: {problem}")
        return sha256

    def _part_size(self) -> int:
        try:
            return os.lstat(self.part).st_size if what_is(self.part) is None else 0
        except FileNotFoundError:
            return 0

    def _with_progress(self, outcome: str, have: int) -> str:
        gave_up = f"gave up after {self.retry.max_failures} tries in a row without progress"
        if have:
            return f"{outcome}; truncated at {have:,} of {self.spec.expected_size_text()}; {gave_up}"
        return f"{outcome}; {gave_up}"

    def _final_error(self) -> DownloadError:
        spec, path = self.spec, self.path
        tried = "\n".join(f"  {i}. {a.url}\n     {a.line()}" for i, a in enumerate(self.attempts, 1))
        check = (f"size {spec.expected_size_text()}, sha256 {spec.sha256}" if spec.pinned
                 else f"size {spec.expected_size_text()} and its tensor names and shapes")
        resumable = (f"Run the same command again later: the partial download ({self._part_size():,} bytes) at "
                     f"{self.part} is resumed.") if self._part_size() else None
        complete = [a.got for a in self.attempts if a.got]
        same = (f"Every source served the same file (sha256 {complete[0]}): if it is a newer release, the "
                "registry's hash may be out of date; see docs/downloads.md.") if len(complete) >= 2 and len(
                    set(complete)) == 1 else None
        hints = [h for h in (resumable,) if h] + [
            f"Download the file yourself from any URL above (a browser, or `wget -c URL`) and put it at\n"
            f"      {path}\n    It is checked ({check}) before use.",
            *GENERAL_HINTS,
        ] + [h for h in (same,) if h]
        title = (f"Could not download {spec.file} ({spec.description}; {spec.expected_size_text()}) "
                 f"for checkpoint '{spec.key}'.")
        message = (f"{title}\nSources tried, in order:\n{tried}\nWhat you can do:\n"
                   + "\n".join(f"  - {h}" for h in hints)
                   + "\nSee docs/downloads.md for every message and its remedy.")
        # The short account for a table of several files: one line per source, where the file goes
        report = "\n".join(
            [title]
            + [f"  {i}. {a.url} \u2014 {a.line()}" for i, a in enumerate(self.attempts, 1)]
            + [f"  by hand: put it at {path}"]
            + [f"  {h}" for h in (resumable, same) if h]
        )
        kind = ChecksumError if self.attempts and all(a.checksum for a in self.attempts) else DownloadError
        return kind(message, key=spec.key, path=path, attempts=[(a.url, a.line()) for a in self.attempts],
                    report=report, hints=(*GENERAL_HINTS, "See docs/downloads.md for every message and its remedy."))


GENERAL_HINTS = (
    "Try again later (a server may be down, or this machine offline); partial downloads are resumed.",
    f"Keep checkpoints in another folder, such as a Google Drive folder in Colab: set {CHECKPOINT_DIR_ENV}="
    "<folder> (each file then goes to <folder>/<subfolder>/<file>), or pass cache_dir=... (--dir on the command "
    "line).",
    "In Colab, the Files panel on the left uploads a file from your computer; move it to the path shown (or keep "
    f"it in a Google Drive folder and set {CHECKPOINT_DIR_ENV} to that folder).",
)


# -- small helpers ------------------------------------------------------------------------------


def _write(out, chunk: bytes) -> None:
    """Write a chunk to ``.part``; a full disk is not a network fault."""
    view = memoryview(chunk)
    try:
        while view:
            view = view[out.write(view):]  # an unbuffered file may take part of a chunk
    except OSError as err:
        if is_disk_full(err):
            raise _DiskFull() from err
        raise


class _RateFloor:
    """Cuts a connection whose rate stays below ``min_rate`` bytes/s over ``window`` seconds."""

    def __init__(self, min_rate: float, window: float, clock=time.monotonic):
        self.min_rate, self.window, self.clock = min_rate, window, clock
        self.start, self.bytes = clock(), 0

    def check(self, n: int) -> str | None:
        self.bytes += n
        elapsed = self.clock() - self.start
        if elapsed < self.window:
            return None
        if self.bytes < self.min_rate * elapsed:
            return (f"too slow: {self.bytes:,} bytes in the last {elapsed:.0f} s, below the floor of "
                    f"{format_size(self.min_rate)}/s")
        self.start, self.bytes = self.clock(), 0
        return None


def _read_json(path: Path):
    data = read_small(path)
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return None


def _body_chunks(response: requests.Response):
    """The body as it arrives, never holding back bytes already received.

    urllib3's ``read(n)`` waits for n bytes and drops what it gathered when the connection breaks
    first; ``read1`` hands over whatever has arrived, so a cut costs nothing that was received.
    """
    raw = response.raw
    if hasattr(raw, "read1"):
        while chunk := raw.read1(CHUNK):
            yield chunk
    else:  # urllib3 < 2: small reads bound what a cut can lose
        yield from response.iter_content(64 << 10)


def _new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "ddrm-demo checkpoint downloader (python-requests)"
    return session


def format_size(n: int) -> str:
    """Bytes for people: 454.8 MB, 2.21 GB, 10 KB."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_like_markup(data: bytes) -> bool:
    """An HTML, XML or JSON body. Checkpoints start with a zip (PK) or pickle (0x80) header."""
    text = data.lstrip()[:64].lower()
    return text.startswith((b"<", b"{", b"[")) or b"<html" in text or b"<!doctype" in text


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and value.strip().isdigit() else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _announced_sha256(response: requests.Response) -> str | None:
    """A sha256 in an ETag: Hugging Face answers LFS files with the file's sha256 as X-Linked-Etag."""
    for name in ("X-Linked-Etag", "ETag"):
        value = (response.headers.get(name) or "").strip().removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value
    return None


def _b64_md5(value: str | None) -> str | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 16 else None


def _http_error(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.reason}" + _body_hint(response)


def _body_hint(response: requests.Response, first: bytes | None = None) -> str:
    """What an error body says, in a few words (S3's <Code>, an HTML <title>)."""
    try:
        body = first if first is not None else response.raw.read(4096, decode_content=True)
    except Exception:
        return ""
    text = body.decode("utf-8", "replace")
    patterns = (r"<Code>([^<]{1,80})</Code>", r"<title>([^<]{1,80})</title>", r'"error"\s*:\s*"([^"]{1,80})"')
    for pattern in patterns:
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            return f": {found.group(1).strip()}"
    return ""


def _unreachable(err: BaseException) -> bool:
    """No address for the host, or no route to the network: retrying in seconds will not help."""
    text = str(err)
    signs = ("NameResolutionError", "Failed to resolve", "Name or service not known", "nodename nor servname",
             "getaddrinfo failed", "Temporary failure in name resolution", "Network is unreachable")
    return any(sign in text for sign in signs)


def _network_error(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.exceptions.ReadTimeout) or "Read timed out" in text:
        return "read timed out (the server stalled)"
    if "reset" in text.lower():
        return "connection reset"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "connection broken (body shorter than announced)"
    if isinstance(err, requests.exceptions.ConnectionError):
        return f"network error: {text[:160]}"
    return f"{type(err).__name__}: {text[:160]}"
