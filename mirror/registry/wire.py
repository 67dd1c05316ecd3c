"""HTTP/1.1 to registries at close to the protocol's own CPU cost: an httpx transport.

Measured on this project's machines, a HEAD through httpx's default transport
(httpcore, h11, anyio streams) costs 1.7 ms of CPU alone and over 3 ms with 16
pooled connections (the pool re-scans every connection, and polls each idle
socket, on every request and every response close); the same exchange on an
asyncio stream costs 0.16 ms. Pushing or resolving hundreds of small images
is thousands of such exchanges, so this module does the wire work for direct
connections: one asyncio stream per connection, idle ones kept per origin,
bodies framed by Content-Length or chunked encoding. httpx still builds the
requests and reads the responses; proxied requests keep httpx's own transport
(the client mounts it from the environment).

An idle connection the server closed is noticed for free: the event loop
already watches its socket, so the stream is at EOF before it is reused.
Only the asyncio backend is supported (mirror runs anyio on asyncio), so each wait's deadline is
asyncio's own ``timeout``: anyio's ``fail_after`` builds a cancel scope, twice the CPU, and a
blob's body is several waits.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from typing import AsyncIterator

import httpx

from ..model.numbers import ascii_int

READ_SIZE = 1 << 20  # at most this much of a body per read: what arrived since the last one
BUFFER = 1 << 20  # the stream stops reading the socket past twice this, until the body is taken
MAX_HEAD = 64 << 10  # status line and headers together; a larger head is refused
IDLE_FOR = 30.0  # seconds an idle connection is kept (servers close theirs after 60 s or more)
MAX_LINES = 100  # informational answers before the real one, or trailer lines after a chunked body
_FORBIDDEN_IN_HEADER = re.compile(rb"[\r\n\0]")
CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(;.*)?\r\n", re.DOTALL)

Origin = tuple[str, str, int]
NEW_CONNECTION = "mirror.new_connection"  # a response extension: its time includes opening the connection


class WireTransport(httpx.AsyncBaseTransport):
    """Direct HTTP/1.1 connections, at most ``max_idle`` kept idle per origin.

    The caller bounds how many requests run at once (Transport's limiter); this
    pool only keeps connections for reuse, so it never queues.
    """

    def __init__(self, ssl_context: ssl.SSLContext, max_idle: int):
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"{request.url.scheme!r} is not HTTP", request=request)
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        connection = self._reusable(origin)
        if connection is not None:
            try:
                return await connection.exchange(request, timeouts, self)
            except _StaleConnection:
                pass  # closed by the server as we reused it; nothing of the request was taken
        connection = await _Connection.open(origin, self._ssl_context, timeouts.get("connect"), request)
        try:
            response = await connection.exchange(request, timeouts, self)
            response.extensions[NEW_CONNECTION] = True
            return response
        except _StaleConnection as exc:
            raise httpx.RemoteProtocolError("the server closed the connection without answering",
                                            request=request) from exc.__cause__

    def _reusable(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable() and time.monotonic() - connection.idle_since < IDLE_FOR:
                connection.reused = True
                return connection
            connection.close()
        return None

    def give_back(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle or not connection.usable():
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class MalformedAnswer(httpx.RemoteProtocolError):
    """An answer that breaks HTTP/1.1 in a way asking again will not change (two different lengths)."""


class _StaleConnection(Exception):
    """A reused connection failed before the server took anything of the request."""


class _Connection:
    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.origin, self.reader, self.writer = origin, reader, writer
        self.reused = False
        self.idle_since = 0.0

    @classmethod
    async def open(cls, origin: Origin, context: ssl.SSLContext, timeout: float | None,
                   request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None, limit=BUFFER)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s",
                                       request=request) from exc
        except OSError as exc:  # ssl.SSLError included: the caller looks for it in the cause
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return cls(origin, reader, writer)

    def usable(self) -> bool:
        """Open, and nothing unread (a server that sent more than it framed is not trusted again)."""
        return (not self.writer.transport.is_closing() and not self.reader.at_eof()
                and not getattr(self.reader, "_buffer", b""))

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: httpx.Request, timeouts: dict[str, float | None],
                       pool: WireTransport) -> httpx.Response:
        # A reused connection the server has just closed fails before it answers; the request can
        # go again on a new one if its body is in memory (a streamed body is spent).
        retry_stale = self.reused and isinstance(request.stream, httpx.ByteStream)
        try:
            try:
                await self._send(request, timeouts.get("write"))
            except httpx.WriteError as exc:
                if retry_stale:
                    raise _StaleConnection() from exc
                raise
            status, reason, headers = await self._read_head(request, timeouts.get("read"), retry_stale)
            framing = _framing(request, status, headers)
        except BaseException:
            self.close()
            raise
        body = _Body(self, pool, request, framing, timeouts.get("read"))
        return httpx.Response(status, headers=headers, stream=body,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def _send(self, request: httpx.Request, timeout: float | None) -> None:
        url = request.url
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
        for name, value in request.headers.raw:
            if _FORBIDDEN_IN_HEADER.search(name + value):  # a token server's CRLF would add headers of its own
                raise httpx.LocalProtocolError(f"header {name[:40]!r} holds a line break or NUL", request=request)
            lines.append(b"%s: %s\r\n" % (name, value))
        head = b"".join(lines) + b"\r\n"
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        declared = request.headers.get("content-length")
        left = int(declared) if declared is not None else None
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):  # the whole body in hand: one write with the head
            body = b"".join([part async for part in stream])
            if left is not None and left != len(body):
                raise httpx.LocalProtocolError(f"a {len(body)}-byte body declared as {left} bytes", request=request)
            await self._write(head + (_chunk(body) if chunked and body else b"") + (b"0\r\n\r\n" if chunked else
                                                                                   body), timeout, request)
            return
        await self._write(head, timeout, request)
        async for part in stream:  # type: ignore[union-attr]
            if not part:
                continue
            if left is not None:
                left -= len(part)
                if left < 0:
                    raise httpx.LocalProtocolError("the body ran past its Content-Length", request=request)
            await self._write(_chunk(part) if chunked else part, timeout, request)
        if chunked:
            await self._write(b"0\r\n\r\n", timeout, request)
        elif left:
            raise httpx.LocalProtocolError(f"the body ended {left} bytes short of its Content-Length",
                                           request=request)

    async def _write(self, data: bytes, timeout: float | None, request: httpx.Request) -> None:
        """One piece out; the timeout is for this piece (a large upload takes as long as it takes)."""
        try:
            self.writer.write(data)
            async with asyncio.timeout(timeout):
                await self.writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout(f"the server took nothing for {timeout} s", request=request) from exc
        except (ConnectionError, OSError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

    async def _read_head(self, request: httpx.Request, timeout: float | None,
                         retry_stale: bool) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        for _ in range(MAX_LINES):
            try:
                async with asyncio.timeout(timeout):
                    head = await self.reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    raise asyncio.LimitOverrunError("head too long", len(head))
            except TimeoutError as exc:
                raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request) from exc
            except asyncio.IncompleteReadError as exc:
                if retry_stale and not exc.partial:
                    raise _StaleConnection() from exc
                raise httpx.RemoteProtocolError("the server closed the connection without a complete answer",
                                                request=request) from exc
            except asyncio.LimitOverrunError as exc:
                raise httpx.RemoteProtocolError(f"the answer's headers exceed {MAX_HEAD} bytes",
                                                request=request) from exc
            except (ConnectionError, OSError) as exc:
                if retry_stale:
                    raise _StaleConnection() from exc
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            status, reason, headers = _parse_head(head, request)
            if not 100 <= status < 200 or status == 101:
                return status, reason, headers
        raise httpx.RemoteProtocolError(f"more than {MAX_LINES} informational answers", request=request)


def _parse_head(head: bytes, request: httpx.Request) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or ascii_int(code) is None:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}", request=request)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}", request=request)
        headers.append((name, value.strip()))
    if version == b"HTTP/1.0":
        headers.append((b"x-mirror-http-1.0", b"1"))  # read as "close after this answer" by _framing
    return int(code), reason, headers


class _Framing:
    def __init__(self, length: int | None, chunked: bool, keep_alive: bool):
        self.length, self.chunked, self.keep_alive = length, chunked, keep_alive


def _framing(request: httpx.Request, status: int, headers: list[tuple[bytes, bytes]]) -> _Framing:
    """How the body ends (RFC 9112 section 6.3) and whether the connection stays open after it.

    Content-Length values that differ (``5, 6``, or two header lines) or are no
    number end the exchange in MalformedAnswer: which one frames the body is
    exactly what request smuggling plays on. Identical repeats count as one.
    """
    lengths: set[int | None] = set()
    coded, chunked, close = False, False, False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(ascii_int(part) for part in value.split(b","))
        elif lower == b"transfer-encoding":
            coded = True
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            close = close or not chunked  # a body that runs until the connection closes
        elif lower == b"connection":
            close = close or b"close" in value.lower()
        elif lower == b"x-mirror-http-1.0":
            close = True
    if None in lengths or len(lengths) > 1:
        shown = b", ".join(value for name, value in headers if name.lower() == b"content-length")
        raise MalformedAnswer(f"Content-Length {shown[:80]!r} is not one length", request=request)
    if lengths and coded:
        close = True  # both framings: Transfer-Encoding wins, and the connection is not trusted again
    if request.method == "HEAD" or status in (204, 304):
        return _Framing(0, False, not close)
    if chunked:
        return _Framing(None, True, not close)
    if lengths:
        return _Framing(lengths.pop(), False, not close)
    return _Framing(None, False, False)


class _Body(httpx.AsyncByteStream):
    """A response body; its connection goes back to the pool once the body was read to its end."""

    def __init__(self, connection: _Connection, pool: WireTransport, request: httpx.Request, framing: _Framing,
                 timeout: float | None):
        self._connection: _Connection | None = connection
        self._pool, self._request, self._framing, self._timeout = pool, request, framing, timeout
        self._complete = framing.length == 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._connection is None or self._complete:
            return
        parts = self._chunked() if self._framing.chunked else self._sized(self._framing.length)
        async for part in parts:
            yield part
        self._complete = True
        await self.aclose()

    async def _read(self, size: int, exact: bool = False) -> bytes:
        assert self._connection is not None
        reader = self._connection.reader
        try:
            async with asyncio.timeout(self._timeout):
                return await (reader.readexactly(size) if exact else reader.read(size))
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no data for {self._timeout} s", request=self._request) from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError("the server closed the connection before the body's end",
                                            request=self._request) from exc
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc

    async def _line(self) -> bytes:
        assert self._connection is not None
        try:
            async with asyncio.timeout(self._timeout):
                return await self._connection.reader.readuntil(b"\r\n")
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no data for {self._timeout} s", request=self._request) from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise httpx.RemoteProtocolError("malformed chunked body", request=self._request) from exc
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc

    async def _sized(self, length: int | None) -> AsyncIterator[bytes]:
        left = length
        while left is None or left > 0:
            part = await self._read(READ_SIZE if left is None else min(READ_SIZE, left))
            if not part:
                if left is None:
                    return  # the body ran until the connection closed
                raise httpx.RemoteProtocolError(f"the server closed the connection {left} bytes before the "
                                                "body's end", request=self._request)
            if left is not None:
                left -= len(part)
            yield part

    async def _chunked(self) -> AsyncIterator[bytes]:
        while True:
            line = await self._line()
            match = CHUNK_SIZE_LINE.fullmatch(line)
            if not match:
                raise httpx.RemoteProtocolError(f"bad chunk size line {line[:20]!r}", request=self._request)
            size = int(match[1], 16)
            if size == 0:
                for _ in range(MAX_LINES):  # trailers, ignored
                    if await self._line() == b"\r\n":
                        return
                raise httpx.RemoteProtocolError(f"more than {MAX_LINES} trailer lines", request=self._request)
            while size:
                part = await self._read(min(READ_SIZE, size))
                if not part:
                    raise httpx.RemoteProtocolError("the server closed the connection inside a chunk",
                                                    request=self._request)
                size -= len(part)
                yield part
            if await self._read(2, exact=True) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk without its CRLF", request=self._request)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._complete and self._framing.keep_alive:
            self._pool.give_back(connection.origin, connection)
        else:
            connection.close()


def _chunk(part: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(part), part)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)
