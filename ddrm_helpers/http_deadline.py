"""A deadline on a whole HTTP response head, for sessions made by :func:`new_session`.

requests' read timeout bounds each wait for a byte, not the status line and headers as a whole: a
server that sends them a byte every (read timeout - 1) seconds keeps a request waiting for ever.
:class:`ResponseDeadline` bounds the whole. Its sessions' connections hand their sockets to the
deadline of the request under way in their thread, which shuts them down when it passes, so that
the blocked read returns at once with an error.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection


class ResponseDeadline:
    """Shuts the sockets of the requests made inside it once ``seconds`` have passed.

    ``with ResponseDeadline(60) as deadline:`` around a request and the reading of its headers: the
    sockets that the session's connections open or reuse meanwhile (see :func:`new_session`) are
    shut down when the deadline passes, so that a blocked read returns at once; ``expired`` then
    says why the request failed. Leaving the block before that stops the watch.
    """

    _active = threading.local()

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._over = threading.Event()
        self._watch = threading.Thread(target=self._wait, name="ddrm-deadline", daemon=True)

    def __enter__(self) -> ResponseDeadline:
        ResponseDeadline._active.deadline = self
        self._watch.start()
        return self

    def __exit__(self, *exc) -> None:
        ResponseDeadline._active.deadline = None
        self._over.set()
        self._watch.join()

    def outcome(self) -> str:
        return f"no status line and headers within {self.seconds:g} s (the server sent them too slowly)"

    def _wait(self) -> None:
        if not self._over.wait(self.seconds):
            with self._lock:
                self.expired = True
                for sock in self._sockets:
                    _shut(sock)

    @classmethod
    def watch(cls, sock: socket.socket | None) -> None:
        """Put ``sock`` under the deadline of this thread's request, if there is one."""
        deadline = getattr(cls._active, "deadline", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            deadline._sockets.append(sock)
            if deadline.expired:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A urllib3 connection whose socket is watched by the current :class:`ResponseDeadline`: when it
    is made (before a TLS handshake) and whenever a response is read from it (a reused connection)."""

    def _new_conn(self):
        sock = super()._new_conn()
        ResponseDeadline.watch(sock)
        return sock

    def getresponse(self, *args, **kwargs):
        ResponseDeadline.watch(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with connections that a :class:`ResponseDeadline` can cut."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # a SOCKS proxy's pools are its own
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def new_session() -> requests.Session:
    """A requests session whose connections a :class:`ResponseDeadline` can cut."""
    session = requests.Session()
    session.headers["User-Agent"] = "ddrm-demo checkpoint downloader (python-requests)"
    for prefix in ("http://", "https://"):
        session.mount(prefix, _DeadlineAdapter())
    return session
