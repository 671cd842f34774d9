"""The HTTP side of a download: one GET, its redirects, what its headers say, and its body.

Nothing here touches the disk. A request either yields the body's chunks or raises one of two
answers for the retry policy (:mod:`ddrm_helpers.fetch_policy`): :class:`Retry` (this may pass: a
reset, a stall, a 5xx, a body below the rate floor) or :class:`SourceFailed` (it will not: a 404,
an error page, another file's size or digest, a body longer than the file).

Every part of an answer is bounded in time. The read timeout bounds each wait for a byte; a
server that sends a byte just before it passes would hold a download for ever, so the status
line, the headers and the first words of an error page are also under a deadline for the whole
of them (:class:`~ddrm_helpers.http_deadline.ResponseDeadline`, which shuts the connection's
socket when it passes), and the body under the rate floor (:class:`RateFloor`). Name resolution
is the system's, before any of it.
"""

from __future__ import annotations

import base64
import email.utils
import re
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .http_deadline import ResponseDeadline
from .registry import CheckpointSpec, format_size, is_allowed_url

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# What a body stream raises when the connection breaks or stalls, through requests or urllib3.
STREAM_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)
MARKUP_TYPES = ("text/html", "application/xhtml", "text/xml", "application/xml", "application/json")


class SourceFailed(Exception):
    """This source cannot give the file: go to the next one.

    ``checksum`` marks bytes that are not the expected file; ``got`` is their sha256 when the
    whole file arrived. ``discard``: what was received from it is not the file either, so the
    ``.part`` is dropped.
    """

    def __init__(self, outcome: str, *, checksum: bool = False, got: str | None = None, discard: bool = False):
        super().__init__(outcome)
        self.outcome, self.checksum, self.got, self.discard = outcome, checksum or got is not None, got, discard


class Retry(Exception):
    """This attempt failed in a way that may succeed on another try.

    ``slow``: bytes did arrive, but below the rate floor; that counts as no progress.
    ``discard``: the ``.part`` cannot be resumed from this server (it says it is past the end).
    """

    def __init__(self, outcome: str, retry_after: float | None = None, slow: bool = False, discard: bool = False):
        super().__init__(outcome)
        self.outcome, self.retry_after, self.slow, self.discard = outcome, retry_after, slow, discard


@dataclass(frozen=True)
class Announced:
    """What the headers said about the whole file: the body's length, and digests of the file.

    ``complete``: the server says the partial file already holds every byte (a 416 to a resume).
    """

    length: int | None
    sha256: str | None = None
    md5: str | None = None
    complete: bool = False


class RateFloor:
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


def request(session: requests.Session, url: str, headers: dict, spec: CheckpointSpec, have: int,
            timeouts: tuple[float, float], response_timeout: float) -> tuple[requests.Response, Announced]:
    """GET ``url`` (resumed at ``have``), its redirects and its headers checked, all within
    ``response_timeout`` seconds; the response is left open for its body (:func:`body`)."""
    with ResponseDeadline(response_timeout) as deadline:
        try:
            response = _get_following_redirects(session, url, headers, spec, timeouts)
            try:
                return response, _check_response(response, spec, have)
            except BaseException:
                response.close()
                raise
        except Retry:
            if deadline.expired:
                raise Retry(deadline.outcome()) from None
            raise


def _get_following_redirects(session: requests.Session, url: str, headers: dict, spec: CheckpointSpec,
                            timeouts: tuple[float, float]) -> requests.Response:
    """GET, following redirects by hand so that each hop is checked before it is contacted.

    Hugging Face ``resolve`` URLs redirect to a CDN; the redirect carries the file's sha256
    (``X-Linked-Etag``), so the hops are kept in ``response.history`` for :func:`_check_response`.
    """
    history: list[requests.Response] = []
    first_scheme = urlsplit(url).scheme
    for _ in range(10):
        if not is_allowed_url(url) or (first_scheme == "https" and urlsplit(url).scheme != "https"):
            raise SourceFailed(f"refused {url}: checkpoints are fetched over https only")
        try:
            response = session.get(url, headers=headers, stream=True, allow_redirects=False, timeout=timeouts)
        except requests.exceptions.InvalidURL as err:
            raise SourceFailed(f"invalid URL: {err}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            if _unreachable(err):
                host = urlsplit(url).hostname
                raise SourceFailed(f"cannot reach {host} (no internet connection, or the host is gone)") from None
            raise Retry(network_error(err)) from None
        if not (response.is_redirect and response.headers.get("Location")):
            response.history = history
            return response
        history.append(response)
        response.close()
        refuse_announced_mismatch(spec, _announced_sha256(response))
        url = urljoin(url, response.headers["Location"])
    raise SourceFailed("too many redirects")


def _check_response(response: requests.Response, spec: CheckpointSpec, have: int) -> Announced:
    """Refuse what cannot be the file; return the length and digests the server announced."""
    chain = [*response.history, response]
    status = response.status_code
    if status in RETRYABLE_STATUS:
        raise Retry(f"HTTP {status} {response.reason}", _retry_after(response))
    if status == 416 and have:
        if spec.size_ok(have):
            return Announced(length=0, complete=True)
        raise Retry("HTTP 416 Range Not Satisfiable (partial file discarded)", discard=True)
    if status not in (200, 206):
        raise SourceFailed(_http_error(response))
    content_type = response.headers.get("Content-Type", "").lower()
    if any(content_type.startswith(t) for t in MARKUP_TYPES):
        raise SourceFailed(f"served a {content_type.split(';')[0]} page instead of the file" + body_hint(response))

    length = _int_header(response, "Content-Length")
    if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
        length = None  # a length of the encoded body says nothing about the file
    if status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            raise Retry(f"answered a resume at {have:,} with Content-Range {response.headers.get('Content-Range')!r}")
        whole = int(match.group(3)) if match.group(3) != "*" else None
    else:
        whole = length
    if whole is not None and not spec.size_ok(whole):
        raise SourceFailed(f"offers {whole:,} bytes, expected {spec.expected_size_text()} (a different file)")

    sha256 = md5 = None
    for r in chain:
        sha256 = sha256 or _announced_sha256(r)
        if status == 200 and r is response:
            md5 = md5 or _b64_md5(r.headers.get("Content-MD5"))
        md5 = md5 or _b64_md5(r.headers.get("x-ms-blob-content-md5"))
    refuse_announced_mismatch(spec, sha256)
    if md5 and spec.md5 and md5 != spec.md5:
        raise SourceFailed(f"announces MD5 {md5}, but the known MD5 is {spec.md5} (a different file)", checksum=True)
    return Announced(length=length, sha256=sha256, md5=md5)


def refuse_announced_mismatch(spec: CheckpointSpec, sha256: str | None) -> None:
    if sha256 and spec.pinned and sha256 != spec.sha256:
        raise SourceFailed(f"announces sha256 {sha256}, but the registry pins {spec.sha256} (a different file)",
                           checksum=True)


def body(response: requests.Response, have: int, limit: int, floor: RateFloor, total: int | None):
    """The body's chunks as they arrive, for a file of at most ``limit`` bytes resumed at ``have``.

    Never yields a byte past ``limit``, whatever the server announced: a body that goes on fails
    this source. A text page where the file should start fails it too. A break, a stall or a rate
    below ``floor`` raises :class:`Retry`, as does a body that ends before ``total``.
    """
    received = have
    try:
        for chunk in _body_chunks(response):
            if received == have == 0 and _looks_like_markup(chunk[:512]):
                raise SourceFailed("served a text page instead of the file" + body_hint(response, chunk),
                                   discard=True)
            if received + len(chunk) > limit:
                raise SourceFailed(f"sent more than the {limit:,} bytes of the file (stopped reading there)",
                                   discard=True)
            yield chunk
            received += len(chunk)
            slow = floor.check(len(chunk))
            if slow:
                raise Retry(slow, slow=True)
    except STREAM_ERRORS as err:
        raise Retry(network_error(err)) from None
    if total is not None and received < total:
        raise Retry(f"connection closed early at {received:,} of {total:,} bytes")


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
    return f"HTTP {response.status_code} {response.reason}" + body_hint(response)


def body_hint(response: requests.Response, first: bytes | None = None) -> str:
    """What an error body says, in a few words (S3's <Code>, an HTML <title>)."""
    try:
        data = first if first is not None else response.raw.read(4096, decode_content=True)
    except Exception:
        return ""
    text = data.decode("utf-8", "replace")
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


def network_error(err: BaseException) -> str:
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
