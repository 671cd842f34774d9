"""A real HTTP server on 127.0.0.1 that misbehaves on purpose, for the download tests.

Each path serves a payload. A queue of *faults* per path decides how the next requests are
answered; when the queue is empty the path answers correctly (honouring ``Range``). Every request
is logged with its Range header, status and the number of body bytes sent.

    server.add("/ckpt", payload, faults=[("reset", 1000), ("status", 500)])

Faults:
    ("status", code[, body[, headers]])   that status, with that body
    ("reset", k)                          the right headers, k body bytes, then a TCP reset
    ("short", k)                          the right headers, k body bytes, then a clean close
    ("stall", k, seconds)                 k body bytes, then silence for that long, then close
    ("hold", k)                           k body bytes, then silence until the next request to this path
                                          arrives (its log entry then says held_until "the next request"),
                                          or 60 s (held_until "60 s"), then close
    ("ignore_range",)                     200 with the whole file, whatever the Range
    ("body", data[, headers])             200 with other bytes than the payload
    ("redirect", location[, headers])     302 to location
    ("endless", framing)                  200 whose body never ends (up to 64 MiB, or until the client
                                          goes): framing "close" (no Content-Length) or "chunked"
    ("drip", k, seconds, n)               the right headers, then k bytes every `seconds`, n times, then close
    ("drip_head", seconds)                the status line and headers (padded to some 700 bytes) one byte
                                          every `seconds`, then the body; the log's "head_done" says whether
                                          the client waited for the last byte of the headers
    ("drip_error", code, seconds)         that status at once, then an error page of 4 KB one byte every `seconds`
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Route:
    payload: bytes
    faults: deque = field(default_factory=deque)
    headers: dict = field(default_factory=dict)  # sent with every answer of this route
    content_type: str = "application/octet-stream"
    ignore_range: bool = False  # a server that never honours Range
    rate: float | None = None  # bytes per second, to make a download last


class FaultyServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self._holds: dict[str, list[tuple[dict, threading.Event]]] = {}  # path -> answers held silent
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        # A short poll so that shutdown() at the end of each test does not wait half a second
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, payload: bytes, faults=(), **options) -> str:
        self.routes[path] = Route(payload, deque(faults), **options)
        return self.url(path)

    def requests_to(self, path: str) -> list[dict]:
        return [entry for entry in self.log if entry["path"] == path]

    def bytes_sent(self, path: str) -> int:
        return sum(entry["sent"] for entry in self.requests_to(path))

    def _next_fault(self, route: Route):
        with self._lock:
            return route.faults.popleft() if route.faults else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FaultyServer

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        state = self.server_state
        path = self.path.split("?")[0]
        entry = {"path": path, "range": self.headers.get("Range"), "status": None, "sent": 0}
        state.log.append(entry)
        with state._lock:  # a request that comes while an earlier answer is held silent ends the hold
            for held, release in state._holds.pop(path, []):
                held["held_until"] = "the next request"
                release.set()
        route = state.routes.get(path)
        if route is None:
            return self._plain(entry, 404, b"<html><title>404 Not Found</title></html>", {}, "text/html")
        fault = state._next_fault(route)
        kind = fault[0] if fault else "ok"
        if kind == "status":
            code, body, headers = (list(fault[1:]) + [b"", {}])[:3]
            return self._plain(entry, code, body, headers, headers.get("Content-Type", "text/plain"))
        if kind == "redirect":
            headers = {"Location": fault[1], **(fault[2] if len(fault) > 2 else {})}
            return self._plain(entry, 302, b"", headers, "text/plain")
        if kind == "body":
            headers = {**route.headers, **(fault[2] if len(fault) > 2 else {})}
            return self._plain(entry, 200, fault[1], headers, route.content_type)

        if kind == "endless":
            return self._endless(entry, route, fault[1])
        if kind == "drip_head":
            return self._drip_head(entry, route, fault[1])
        if kind == "drip_error":
            return self._drip_error(entry, *fault[1:])
        payload = route.payload
        start = 0
        wanted = self.headers.get("Range")
        if wanted and not route.ignore_range and kind != "ignore_range":
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(payload):
                headers = {"Content-Range": f"bytes */{len(payload)}"}
                return self._plain(entry, 416, b"", headers, "text/plain")
        body = payload[start:]
        self.send_response(206 if start else 200)
        entry["status"] = 206 if start else 200
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if kind == "drip":
            return self._drip(entry, body, *fault[1:])
        limit = fault[1] if kind in ("reset", "short", "stall", "hold") else len(body)
        if kind == "hold":
            release = threading.Event()
            with state._lock:
                state._holds.setdefault(path, []).append((entry, release))
        self._send(entry, body[:limit], route.rate)
        if kind == "stall":
            time.sleep(fault[2])
        if kind == "hold" and not release.wait(60):
            entry["held_until"] = "60 s"
        if kind == "reset":
            # Let the client read what was sent (a reset drops unread data), then reset:
            # SO_LINGER with a zero timeout turns close() into a TCP reset.
            time.sleep(0.3)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, entry: dict, data: bytes, rate: float | None) -> None:
        step = 64 << 10
        started = time.monotonic()
        try:
            for offset in range(0, len(data), step):
                piece = data[offset:offset + step]
                self.wfile.write(piece)
                entry["sent"] += len(piece)
                if rate:
                    ahead = entry["sent"] / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
        except OSError:
            pass  # the client went away (killed, or gave up): that is what some tests do

    def _endless(self, entry, route: Route, framing: str):
        """The payload, then zeros, for ever (bounded here so that a test can never fill the disk)."""
        entry["status"] = 200
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        block = 64 << 10
        data = route.payload + bytes(block)
        try:
            offset = 0
            while entry["sent"] < 64 << 20:
                piece = data[offset:offset + block] if offset < len(route.payload) else bytes(block)
                offset += len(piece)
                if framing == "chunked":
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                entry["sent"] += len(piece)
        except OSError:
            pass  # the client stopped reading: what the test wants
        self.close_connection = True

    def _drip(self, entry, body: bytes, k: int, seconds: float, n: int):
        try:
            for i in range(n):
                piece = body[i * k:(i + 1) * k]
                if not piece:
                    break
                self.wfile.write(piece)
                self.wfile.flush()
                entry["sent"] += len(piece)
                time.sleep(seconds)
        except OSError:
            pass
        self.close_connection = True

    def _drip_head(self, entry, route: Route, seconds: float):
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {route.content_type}\r\nContent-Length: {len(route.payload)}\r\n"
                f"X-Padding: {'.' * 600}\r\nConnection: close\r\n\r\n").encode()
        entry.update(status=200, head_done=False)
        try:
            for i in range(len(head)):
                self.wfile.write(head[i:i + 1])
                time.sleep(seconds)
            entry["head_done"] = True
            self._send(entry, route.payload, route.rate)
        except OSError:
            pass  # the client gave up waiting: what the test wants
        self.close_connection = True

    def _drip_error(self, entry, code: int, seconds: float):
        entry["status"] = code
        self.send_response(code)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "4096")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for _ in range(4096):
                self.wfile.write(b"x")
                entry["sent"] += 1
                time.sleep(seconds)
        except OSError:
            pass
        self.close_connection = True

    def _plain(self, entry, code, body, headers, content_type):
        entry["status"] = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            if name != "Content-Type":
                self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self._send(entry, body, None)
        self.close_connection = True

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
