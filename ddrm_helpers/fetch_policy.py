"""How one checkpoint is fetched: the lock, the sources in order, the retries, and the one report.

1. A file already in place counts once it is verified (size, then sha256; a record of a good
   verification spares the re-hash, see :mod:`ddrm_helpers.verify`).
2. Otherwise, holding a lock (``.<file>.lock``) so that two processes never write the same file,
   each source of the registry is tried in order (:mod:`ddrm_helpers.http_protocol`), into the
   ``.part`` file (:mod:`ddrm_helpers.part_writer`). What can succeed on retry (a reset, a stall,
   408/429/5xx, honouring ``Retry-After``) is retried with capped exponential backoff, and for as
   long as bytes keep arriving; a 403 or 404, an error page, or a file of the wrong size moves on
   to the next source at once.
3. Only a file whose size and sha256 match the registry (for the unpinned classifier: its size
   range, every digest the server announced, and its tensor manifest) is moved into place, with
   an atomic ``os.replace``. A cut or corrupt download never stands under the final name;
   Ctrl-C leaves ``<file>.part`` for the next call to resume. When every source failed, one
   :class:`~ddrm_helpers.errors.DownloadError` says what each answered and what to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from . import http_protocol as http
from .errors import ChecksumError, DownloadError
from .http_deadline import new_session
from .part_writer import DiskFull, PartFile
from .paths import CHECKPOINT_DIR_ENV
from .registry import CheckpointSpec, format_size
from .safefs import PathBlockedError, StoreLock, is_disk_full, is_read_only, require_plain, set_aside, side_name
from .verify import BLOCKED, CORRUPT, UNREADABLE, check_manifest, verify_file, write_record


@dataclass
class RetryPolicy:
    """How hard to try one source before moving to the next.

    ``max_failures`` counts consecutive attempts that brought no new bytes; an attempt that
    brings bytes resets it, so a slow but working connection is never abandoned.
    ``read_timeout`` bounds each wait for a byte; ``response_timeout`` the time from sending a
    request to its last header (and an error page's first words), so that a server sending its
    headers a byte at a time is cut like a stall. ``min_rate`` (bytes per second) over
    ``rate_window`` seconds is the floor below which a body that still trickles is cut and counted
    as a failure, like a stall.
    ``sleep`` is injectable so that tests record waits instead of waiting.
    """

    max_failures: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 600.0
    connect_timeout: float = 20.0
    read_timeout: float = 60.0
    response_timeout: float = 60.0
    min_rate: float = 10_000.0
    rate_window: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int) -> float:
        return min(self.backoff * 2 ** max(failures - 1, 0), self.backoff_max)


class Reporter:
    """One line per event, prefixed with the file name."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet = name, quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.name}: {message}", flush=True)


def lock_path(path: Path) -> Path:
    """The lock that lets one process at a time download the checkpoint at ``path``."""
    return path.with_name(side_name(path.name, ".", ".lock"))


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
    lock = StoreLock(lock_path(path), say)
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


class _Download:
    """One file: the sources in order, each with retries, into ``<file>.part``, then verify."""

    def __init__(self, spec, path, say, progress, retry, session):
        self.spec, self.path, self.say, self.progress, self.retry = spec, path, say, progress, retry
        self.session = session or new_session()
        self.part = PartFile(spec, path, say)
        self.attempts: list[_Attempt] = []

    def run(self) -> Path:
        try:
            return self._run()
        except DiskFull as full:
            raise self.part.disk_full_error(full.__cause__ or full) from None
        except KeyboardInterrupt:
            if self.part.size():
                self.say(f"interrupted; the partial download ({self.part.size():,} bytes) is kept at "
                         f"{self.part.part} and is resumed next time")
            raise
        finally:
            self.part.close()

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
        self.part.adopt()
        self.part.check_disk_space()
        failed_sources: list[str] = []
        for source in self.spec.urls:
            attempt = _Attempt(source.url)
            self.attempts.append(attempt)
            try:
                sha256 = self._from_source(source.url, attempt)
            except http.SourceFailed as failure:
                attempt.outcome, attempt.checksum, attempt.got = failure.outcome, failure.checksum, failure.got
                note = f" [{source.note}]" if source.note else ""
                # Said only if a later source succeeds; if none does, the final report lists them all.
                failed_sources.append(f"{source.url}: {failure.outcome}{note}")
                continue
            for line in failed_sources:
                self.say(f"{line} (then the next source served the file)")
            require_plain(self.path, key=self.spec.key)
            os.replace(self.part.part, self.path)
            self.part.forget()
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

    # -- one source ----------------------------------------------------------------------------

    def _from_source(self, url: str, attempt: _Attempt) -> str:
        """Download from one URL with retries; return the sha256 of the verified ``.part``."""
        failures = 0
        started_with = self.part.size()
        best = started_with
        restarted = False
        while True:
            attempt.tries += 1
            try:
                announced = self._one_request(url)
            except http.Retry as retry:
                if retry.discard:
                    self.part.drop()
                have = self.part.size()
                if have > best and not retry.slow:
                    best, failures = have, 0
                else:
                    failures += 1
                best = max(best, have)
                if failures >= self.retry.max_failures:
                    raise http.SourceFailed(self._with_progress(retry.outcome, have)) from None
                wait = retry.retry_after if retry.retry_after is not None else self.retry.delay(failures)
                if wait > self.retry.max_retry_after:
                    raise http.SourceFailed(
                        f"{retry.outcome}; asked to retry after {wait:.0f} s, longer than we wait"
                    ) from None
                self.say(f"{retry.outcome}; retrying in {wait:g} s")
                attempt.waits.append(wait)
                self.retry.sleep(wait)
                continue
            except http.SourceFailed as failure:
                if failure.discard:
                    self.part.drop()
                raise
            try:
                return self._verify_part(announced)
            except http.SourceFailed as failure:
                self.part.drop()
                if failure.checksum and started_with and not restarted:
                    # The bytes of an older partial may be at fault, not this source: once, start over.
                    restarted, started_with, best, failures = True, 0, 0, 0
                    self.say(f"{failure.outcome} after resuming an earlier partial file; starting over")
                    continue
                raise

    def _one_request(self, url: str) -> http.Announced:
        """One GET, resumed from ``.part``; returns what is known about the whole file's digests."""
        have = self.part.size()
        if have > self.spec.max_size:
            self.part.drop()
            have = 0
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        timeouts = (self.retry.connect_timeout, self.retry.read_timeout)
        response, announced = http.request(self.session, url, headers, self.spec, have, timeouts,
                                           self.retry.response_timeout)
        with response:
            if announced.complete:
                return announced  # the partial file is already whole; verify it
            if response.status_code == 200 and have:
                self.say("the server ignored the resume request; starting over")
                have = 0
            size = format_size(self.spec.max_size) if self.spec.pinned else f"about {format_size(self.spec.max_size)}"
            self.say(f"{'downloading' if not have else f'resuming at {format_size(have)} of'} {size} from {url}")
            total = have + announced.length if announced.length is not None else None
            self._stream(response, have, total)
        return announced

    def _stream(self, response: requests.Response, have: int, total: int | None) -> None:
        """Append the body to ``.part`` (from ``have``), with a progress bar."""
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total or self.spec.max_size, initial=have, unit="B", unit_scale=True,
            unit_divisor=1024, desc=self.spec.file, disable=not self.progress, leave=False,
            mininterval=0.5,
        )
        floor = http.RateFloor(self.retry.min_rate, self.retry.rate_window)
        try:
            self.part.append(http.body(response, have, self.spec.max_size, floor, total), have, bar.update)
        finally:
            bar.close()

    # -- after downloading ---------------------------------------------------------------------

    def _verify_part(self, announced: http.Announced) -> str:
        size = self.part.size()
        if not self.spec.size_ok(size):
            raise http.SourceFailed(f"gave {size:,} bytes, expected {self.spec.expected_size_text()}")
        digests = self.part.digests()
        sha256 = digests["sha256"]
        if self.spec.pinned and sha256 != self.spec.sha256:
            raise http.SourceFailed(f"checksum mismatch: expected sha256 {self.spec.sha256}, got {sha256}",
                                    got=sha256)
        if announced.sha256 and announced.sha256 != sha256:
            raise http.SourceFailed(f"checksum mismatch: the server announced sha256 {announced.sha256}, "
                                    f"got {sha256}", got=sha256)
        if announced.md5 and "md5" in digests and announced.md5 != digests["md5"]:
            raise http.SourceFailed(f"checksum mismatch: the server announced MD5 {announced.md5}, "
                                    f"got {digests['md5']}", got=sha256)
        if not self.spec.pinned:
            problem = check_manifest(self.spec, self.part.part)
            if problem:
                raise http.SourceFailed(f"not the expected file: {problem}")
        return sha256

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
        have = self.part.size()
        resumable = (f"Run the same command again later: the partial download ({have:,} bytes) at "
                     f"{self.part.part} is resumed.") if have else None
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
