"""A fault-injecting reverse proxy for tests, in front of a real loopback registry.

    with FaultProxy(registry.host) as proxy:           # registry: plain HTTP
        proxy.fail(r"/manifests/", 503, times=2)       # two 503s, then the real answer
        proxy.fail(r"/blobs/", 429, headers={"Retry-After": "1"})
        proxy.corrupt(r"/blobs/sha256:")               # forward, but flip one byte of the body
        proxy.drop(r"/blobs/sha256:", after=1000)      # send 1000 body bytes, then cut the connection
        proxy.redirect(r"/blobs/sha256:", "http://127.0.0.1:OTHER")   # 307 to OTHER + same path
        proxy.serve(r"/manifests/old$", body, headers={...})  # answer with these bytes instead
        proxy.strip(r"/blobs/sha256:", "Range")        # forward without that request header
        proxy.add_headers(r"/manifests/", {"RateLimit-Remaining": "3;w=21600"}, method="HEAD")  # forward, add these
        proxy.limit_pulls(8, window=2)                 # Docker Hub in small: 8 manifest GETs per 2 s, 429 beyond
        ... RegistryClient(proxy.host, RegistrySettings(plain_http=True)) ...
        proxy.requests("GET", r"/blobs/")              # what arrived: method, path, headers, status, bytes sent,
                                                       # and when it arrived and was answered (one counter)
        proxy.writes()                                 # every POST, PUT, PATCH and DELETE that arrived
        proxy.max_in_flight                            # most requests it was handling at once

Each fault matches a method (None: any) and a regex searched in the path
(with query); ``times`` is how many requests it hits (None: every one), in
the order faults were added. The Host header is passed through, so the
registry's absolute Location URLs point back at the proxy. Bodies are
buffered whole, so keep test blobs to tens of MiB.
"""

from __future__ import annotations

import http.client
import itertools
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server",
               "proxy-connection", "te", "trailer", "upgrade"}


@dataclass
class Seen:
    method: str
    path: str  # with query string
    headers: dict[str, str]  # lower-case names
    status: int = 0
    body_bytes: int = 0  # response body bytes written to the client
    arrived: int = 0  # when the request arrived, on the proxy's own clock (a counter, not time)
    answered: int | None = None  # when the client began to get the answer; None: it never did

    def query(self, name: str) -> str | None:
        """A query parameter of the request, decoded (``digest`` of a blob PUT, ``mount`` of a POST)."""
        values = parse_qs(urlsplit(self.path).query).get(name)
        return values[0] if values else None


@dataclass
class Fault:
    method: str | None
    path: str
    times: int | None = 1
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    corrupt: bool = False
    drop_after: int | None = None
    redirect: str | None = None
    strip: tuple[str, ...] = ()  # request headers (lower case) not forwarded
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method) and re.search(self.path, path) is not None
                and (self.times is None or self.hits < self.times))


@dataclass
class PullLimit:
    """Docker Hub's pull limit in small: ``count`` manifest GETs per ``window`` seconds, 429 beyond.

    The window is fixed, from the first GET it counts. Every manifest answer (HEADs too, which are
    free) says what is left as Docker Hub does, unless not ``stated``; a 429's Retry-After says when
    the window reopens, or ``retry_after`` seconds.
    """

    count: int
    window: int
    stated: bool = True
    retry_after: int | None = None
    opened: float | None = None  # time.monotonic() of the window's first GET
    used: int = 0

    def admit(self, method: str, path: str) -> tuple[bool, dict[str, str]]:
        """Whether the request may go on, and the headers its answer gets."""
        if "/manifests/" not in path:
            return True, {}
        now = time.monotonic()
        if self.opened is not None and now - self.opened >= self.window:
            self.opened, self.used = None, 0
        admitted = method != "GET" or self.used < self.count
        if method == "GET" and admitted:
            self.opened = now if self.opened is None else self.opened
            self.used += 1
        headers = {"RateLimit-Limit": f"{self.count};w={self.window}",
                   "RateLimit-Remaining": f"{self.count - self.used};w={self.window}"} if self.stated else {}
        if not admitted:
            reopens = math.ceil(self.opened + self.window - now) if self.opened is not None else 0
            headers["Retry-After"] = str(reopens if self.retry_after is None else self.retry_after)
        return admitted, headers


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.pull_limit: PullLimit | None = None
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._clock = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(self, path: str, status: int, *, method: str | None = None, times: int | None = 1,
             headers: dict[str, str] | None = None) -> Fault:
        return self.add(Fault(method, path, times, status=status, headers=dict(headers or {})))

    def serve(self, path: str, body: bytes, *, status: int = 200, method: str | None = "GET",
              times: int | None = None, headers: dict[str, str] | None = None) -> Fault:
        return self.add(Fault(method, path, times, status=status, headers=dict(headers or {}), body=body))

    def strip(self, path: str, *headers: str, method: str | None = "GET", times: int | None = 1) -> Fault:
        return self.add(Fault(method, path, times, strip=tuple(h.lower() for h in headers)))

    def corrupt(self, path: str, *, method: str | None = "GET", times: int | None = 1) -> Fault:
        return self.add(Fault(method, path, times, corrupt=True))

    def drop(self, path: str, after: int, *, method: str | None = "GET", times: int | None = 1) -> Fault:
        return self.add(Fault(method, path, times, drop_after=after))

    def redirect(self, path: str, to: str, *, method: str | None = None, times: int | None = None) -> Fault:
        return self.add(Fault(method, path, times, redirect=to.rstrip("/")))

    def add_headers(self, path: str, headers: dict[str, str], *, method: str | None = None,
                    times: int | None = None) -> Fault:
        return self.add(Fault(method, path, times, headers=dict(headers)))

    def limit_pulls(self, count: int, *, window: int, stated: bool = True, retry_after: int | None = None) -> PullLimit:
        self.pull_limit = PullLimit(count, window, stated, retry_after)
        return self.pull_limit

    def _admit(self, method: str, path: str) -> tuple[bool, dict[str, str]]:
        with self._lock:
            return self.pull_limit.admit(method, path) if self.pull_limit else (True, {})

    def requests(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (method is None or s.method == method)
                    and (path is None or re.search(path, s.path))]

    def writes(self) -> list[Seen]:
        """Every request that could change the registry, in the order they arrived."""
        return [s for s in self.requests() if s.method not in ("GET", "HEAD")]

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            seen.arrived = next(self._clock)
            self.seen.append(seen)

    def _answering(self, seen: Seen, status: int) -> None:
        with self._lock:
            seen.status, seen.answered = status, next(self._clock)

    def _count(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        proxy._count(+1)
        try:
            self._forward(proxy)
        finally:
            proxy._count(-1)

    def _forward(self, proxy: FaultProxy) -> None:
        try:
            body = self._read_body()
        except EOFError:  # the client gave up mid-body: forward nothing, as a real proxy would
            self.close_connection = True
            return
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        proxy._record(seen)
        admitted, limit_headers = proxy._admit(self.command, self.path)
        if not admitted:
            self._answer(seen, 429, limit_headers, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have '
                                                   b'reached your pull rate limit."}]}')
            return
        fault = proxy._take(self.command, self.path)
        if fault and fault.status:
            self._answer(seen, fault.status, fault.headers, fault.body)
            return
        if fault and fault.redirect:
            self._answer(seen, 307, {"Location": fault.redirect + self.path})
            return
        conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
        try:
            dropped = _HOP_BY_HOP | set(fault.strip if fault else ())
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
            length = upstream.getheader("content-length") if self.command == "HEAD" else str(len(data))
            reply = [(k, v) for k, v in upstream.getheaders() if k.lower() not in _HOP_BY_HOP]
            reply += list(fault.headers.items()) if fault else []
            reply += list(limit_headers.items())
            status = upstream.status
        finally:
            conn.close()
        if fault and fault.corrupt and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        proxy._answering(seen, status)
        self.send_response(status)
        for key, value in reply:
            self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault and fault.drop_after is not None:
            data = data[:fault.drop_after]
        # counted before it is sent: a client that has read it all may look before this thread goes on
        seen.body_bytes = len(data)
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            seen.body_bytes = 0  # how much got out before the client hung up is not known
            return
        if fault and fault.drop_after is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(self, seen: Seen, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.server.proxy._answering(seen, status)  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            seen.body_bytes = len(body)  # before it is sent, as in _forward
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._read_exactly_line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._read_exactly_line().strip():
                        pass
                    return b"".join(parts)
                parts.append(self._read_exactly(size))
                self._read_exactly_line()
        return self._read_exactly(int(self.headers.get("Content-Length") or 0))

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size) if size else b""
        if len(data) != size:
            raise EOFError
        return data

    def _read_exactly_line(self) -> bytes:
        line = self.rfile.readline()
        if not line.endswith(b"\n"):
            raise EOFError
        return line
