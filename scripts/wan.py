"""A wide-area network on loopback, for the benchmark: latency, throughput caps, a token server.

A connected host pulls from Docker Hub or Quay tens of milliseconds away; the
CDN caps each connection's throughput and the site's uplink caps all of them
together; every repository needs its own bearer token from a token server
that is just as far away. ``WanLink`` models the network as a TCP proxy:

- a new connection costs one round trip (the TCP handshake) before data flows;
- each direction's data arrives RTT/2 after the proxy read it, in order;
- each direction of each connection is capped at ``connection_rate`` bytes/s,
  and all connections through the link's proxies together at ``site_rate``
  bytes/s per direction (token buckets);
- TCP slow start and loss are not modelled.

The link also reads what it carries (plain HTTP/1.1): ``Traffic`` counts the
requests by kind (token, HEAD, manifest, blob, ...) and their answers' status,
and keeps the bytes delivered downstream per 100 ms, so a benchmark can say
how many round trips an image cost and how long the link sat idle
(``WanLink.watch()`` around a step).

``remote_registry`` puts a token-auth docker-registry (tests/support/testbed.py) and
its token server behind such a link. Everything binds 127.0.0.1 only; a
connection idle for ``IDLE_TIMEOUT`` seconds is closed.

    with WanLink(Network(rtt=0.040, connection_rate=10e6, site_rate=100e6)) as link:
        with remote_registry(work / "wan", seeded_storage, link) as remote:
            ... pull from http://{remote.host}/... ...

    python3 scripts/wan.py proxy 127.0.0.1:5000 [--rtt-ms 40] [--connection-mb 10] [--site-mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' support package

from support import testbed  # noqa: E402
from support.fake_registry import request_kind  # noqa: E402

CHUNK = 64 * 1024
IDLE_TIMEOUT = 300.0
BIN = 0.1  # seconds: the granularity of the link's record of bytes over time
IDLE_BELOW = 0.01  # an interval carrying less than this share of the site's capacity counts as idle
KINDS = ("token", "HEAD", "manifest", "blob", "referrers", "tags", "redirect", "other")


@dataclass(frozen=True)
class Network:
    """Issue 11's model of the internet as a connected host sees a big registry."""

    rtt: float = 0.040  # seconds
    connection_rate: float = 10e6  # bytes/s per connection and direction
    site_rate: float = 100e6  # bytes/s for all connections together, per direction

    def describe(self) -> str:
        return (f"RTT {self.rtt * 1000:.0f} ms, {self.connection_rate / 1e6:.0f} MB/s per connection, "
                f"{self.site_rate / 1e6:.0f} MB/s site")


class TokenBucket:
    """``rate`` bytes/s with bursts of up to ``burst`` bytes; used from one asyncio loop only."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.free_at = rate, burst, 0.0

    def reserve(self, size: int, now: float) -> float:
        """Take ``size`` bytes; returns the time they may pass (``now`` or later)."""
        self.free_at = max(self.free_at, now - self.burst / self.rate) + size / self.rate
        return self.free_at


def kind_of(method: str, path: str, status: int) -> str:
    """What an exchange was, for counting round trips: a redirect by its answer, the rest by the request
    (as the tests' fake registry counts them)."""
    return "redirect" if 300 <= status < 400 else request_kind(method, path)


@dataclass
class Counts:
    """Exchanges by kind and answers by status, over some span of a link's life."""

    kinds: collections.Counter = field(default_factory=collections.Counter)
    statuses: collections.Counter = field(default_factory=collections.Counter)

    def __sub__(self, earlier: "Counts") -> "Counts":
        return Counts(self.kinds - earlier.kinds, self.statuses - earlier.statuses)

    def per_image(self, images: int) -> str:
        """``token 0.1, HEAD 3.0, ...; 11.2 in all (401: 0.1, 404: 3.0)``, each divided by ``images``."""
        parts = [f"{kind} {self.kinds[kind] / images:.2f}" for kind in KINDS if self.kinds[kind]]
        refusals = [f"{status}: {self.statuses[status] / images:.2f}" for status in (401, 404, 429)
                    if self.statuses[status]]
        return (f"{', '.join(parts) or 'none'}; {sum(self.kinds.values()) / images:.2f} in all"
                + (f" (answered {', '.join(refusals)})" if refusals else ""))


class _Exchanges:
    """One connection's HTTP/1.1 exchanges, read from its bytes in each direction; bodies are skipped.

    Each direction is a small state machine: a head up to its blank line, then a body of
    Content-Length bytes, chunked, or (an answer with neither) to the end of the connection."""

    _LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)
    _CHUNKED = re.compile(rb"^transfer-encoding:.*chunked", re.I | re.M)

    def __init__(self, counts: Counts):
        self.counts = counts
        self.asked: collections.deque[tuple[str, str]] = collections.deque()  # (method, path) awaiting answers
        self.up, self.down = _Stream(self._request), _Stream(self._answer)

    def _request(self, head: bytes) -> int | None:
        method, _, rest = head.partition(b" ")
        self.asked.append((method.decode("latin-1"), rest.split(b" ", 1)[0].decode("latin-1")))
        return self._body(head, bodyless=False, request=True)

    def _answer(self, head: bytes) -> int | None:
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        method, path = self.asked.popleft() if self.asked else ("?", "?")
        self.counts.kinds[kind_of(method, path, status)] += 1
        self.counts.statuses[status] += 1
        return self._body(head, bodyless=method == "HEAD" or status in (204, 304) or status < 200, request=False)

    def _body(self, head: bytes, bodyless: bool, request: bool) -> int | None:
        """Bytes of body after ``head``: a number, -1 for chunked, None for up to the end of the connection."""
        if bodyless:
            return 0
        if self._CHUNKED.search(head):
            return -1
        length = self._LENGTH.search(head)
        return int(length[1]) if length else (0 if request else None)  # a request without either has none


class _Stream:
    """One direction of a connection: heads handed to ``on_head`` (which says how much body follows), bodies skipped."""

    def __init__(self, on_head):
        self.on_head, self.buffer, self.skip, self.chunked = on_head, b"", 0, False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.skip:  # inside a body of known length
                taken = min(self.skip, len(self.buffer))
                self.skip -= taken
                self.buffer = self.buffer[taken:]
            elif self.skip is None:  # to the end of the connection
                self.buffer = b""
            elif self.chunked:
                line, found, rest = self.buffer.partition(b"\r\n")
                if not found:
                    return
                self.buffer = rest
                size = int(line.split(b";")[0] or b"0", 16)
                if size:
                    self.skip = size + 2  # the chunk and its CRLF
                else:
                    self.chunked, self.skip = False, 2  # a last chunk, no trailers (what Go sends)
            else:
                head, found, rest = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return
                self.buffer = rest
                body = self.on_head(head)
                self.chunked, self.skip = body == -1, (0 if body == -1 else body)


class Traffic:
    """What crossed a link: exchanges by kind, and per BIN seconds (loop time) the bytes delivered
    downstream and the connections that delivered them."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.down: collections.Counter = collections.Counter()  # int(time / BIN) -> bytes
        self.busy: collections.defaultdict = collections.defaultdict(set)  # int(time / BIN) -> connections

    def delivered(self, when: float, size: int, connection: int) -> None:
        self.down[int(when / BIN)] += size
        self.busy[int(when / BIN)].add(connection)

    def snapshot(self) -> Counts:
        return Counts(collections.Counter(self.counts.kinds), collections.Counter(self.counts.statuses))


@dataclass
class Watched:
    """A step's share of a link's traffic (``WanLink.watch``): its exchanges, the link's idle share, and
    per BIN interval the share of the site's rate it carried and how many connections carried it."""

    counts: Counts
    idle_share: float  # of the step's BIN intervals, those carrying under IDLE_BELOW of the site's capacity
    bytes_down: int
    use: list[float] = field(default_factory=list)  # per interval: bytes down / what the site could carry
    connections: list[int] = field(default_factory=list)  # per interval: connections that delivered bytes

    def describe(self, images: int) -> str:
        return (f"requests per image: {self.counts.per_image(images)}; link idle {self.idle_share:.0%} of the time "
                f"(intervals of {BIN * 1000:.0f} ms under {IDLE_BELOW:.0%} of the site's rate)")

    def timeline(self) -> str:
        """A line a second: per interval the percent of the site's rate used / the connections moving it
        ('.' for an idle interval), to see when the link sat idle: before the first blob, between, or after."""
        cells = [" ." if use < IDLE_BELOW else f"{min(99, round(use * 100)):>2}/{count:<2}"
                 for use, count in zip(self.use, self.connections)]
        per_line = round(1 / BIN)
        return "\n".join(f"  {line * per_line * BIN:5.1f}s " + " ".join(f"{cell:<5}" for cell in cells[at:at + per_line])
                         for line, at in enumerate(range(0, len(cells), per_line)))


class WanLink:
    """A loop in a daemon thread running proxies that share one site cap (one bucket per direction)."""

    def __init__(self, network: Network = Network()):
        self.network = network
        self.traffic = Traffic()
        self.rtt, self.connection_rate = network.rtt, network.connection_rate
        self.site = {direction: TokenBucket(network.site_rate, 4 * CHUNK) for direction in ("up", "down")}
        self.loop = asyncio.new_event_loop()
        self.servers: list[asyncio.Server] = []
        self.open: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wan-link", daemon=True)

    def __enter__(self) -> "WanLink":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
            for writer in self.open:
                writer.close()  # every pump then reads end-of-stream or fails to write, and returns
            if tasks := asyncio.all_tasks() - {asyncio.current_task()}:
                await asyncio.wait(tasks, timeout=5)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _in_loop(self, call):
        async def run():
            return call()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[Watched]]:
        """The traffic of the block: a list that holds one ``Watched`` once the block ends."""
        before, started = self._in_loop(self.traffic.snapshot), time.monotonic()  # the loop's clock
        seen: list[Watched] = []
        yield seen
        ended = time.monotonic()
        after = self._in_loop(self.traffic.snapshot)
        bins = range(int(started / BIN), int(ended / BIN) + 1)
        down = self._in_loop(lambda: [self.traffic.down.get(b, 0) for b in bins])
        busy = self._in_loop(lambda: [len(self.traffic.busy.get(b, ())) for b in bins])
        capacity = self.network.site_rate * BIN
        idle = sum(size < IDLE_BELOW * capacity for size in down)
        seen.append(Watched(after - before, idle / max(1, len(down)), sum(down), [size / capacity for size in down],
                            busy))

    def proxy(self, upstream: str) -> str:
        """Start a proxy to ``upstream`` (host:port) for the link's lifetime; returns its 127.0.0.1:port."""
        host, port = upstream.rsplit(":", 1)

        async def start() -> asyncio.Server:
            return await asyncio.start_server(
                lambda reader, writer: self._connection(reader, writer, host, int(port)), "127.0.0.1", 0)

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                          host: str, port: int) -> None:
        established = self.loop.time() + self.rtt  # the handshake's round trip
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        writers = {client_writer, upstream_writer}
        self.open |= writers
        exchanges = _Exchanges(self.traffic.counts)
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, self.site["up"], established, exchanges.up.feed),
                self._pump(upstream_reader, client_writer, self.site["down"], established, exchanges.down.feed,
                           lambda when, size: self.traffic.delivered(when, size, id(exchanges))))
        except (OSError, asyncio.TimeoutError):
            pass  # one side went away or fell silent
        finally:
            self.open -= writers
            for writer in writers:
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, site: TokenBucket,
                    established: float, read: Callable[[bytes], None],
                    delivered: Callable[[float, int], None] | None = None) -> None:
        """Read, wait for both buckets, deliver RTT/2 later; forward end-of-stream. ``read`` sees every
        byte as it is read; ``delivered(when, size)`` hears of each delivery.

        Delivery times only grow (the connection's bucket adds to them), so data arrives in order."""
        connection = TokenBucket(self.connection_rate, CHUNK)
        due = 0.0

        def deliver(data: bytes | None) -> None:
            if writer.is_closing():
                return
            if data is not None:
                writer.write(data)
            elif writer.can_write_eof():
                writer.write_eof()

        while data := await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT):
            now = self.loop.time()
            passes = max(connection.reserve(len(data), now), site.reserve(len(data), now), established)
            if passes > now:
                await asyncio.sleep(passes - now)
            due = passes + self.rtt / 2
            read(data)
            if delivered is not None:
                delivered(due, len(data))
            self.loop.call_at(due, deliver, data)
            await writer.drain()  # a far side slow to take data stops the reading here
        self.loop.call_at(max(due, self.loop.time() + self.rtt / 2), deliver, None)


@dataclass(frozen=True)
class Remote:
    host: str  # the registry's address through the link
    registry: testbed.Registry  # its process, on loopback: what it spends serving is measured by the benchmark


@contextlib.contextmanager
def remote_registry(directory: Path, storage: Path, link: WanLink) -> Iterator[Remote]:
    """A docker-registry serving ``storage`` (another registry's, already seeded) behind ``link``,
    requiring a bearer token per repository from a token server also behind ``link``, as Docker Hub
    does (anonymous pulls get a pull-only token)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "storage").symlink_to(storage.resolve(), target_is_directory=True)
    tokens = testbed.TokenServer(directory / "signer", users={}, refresh_tokens={})
    try:
        realm = f"http://{link.proxy(tokens.url.removeprefix('http://'))}/token"
        registry = testbed.start_registry(directory, token_auth=tokens.auth_config(realm))
        try:
            yield Remote(link.proxy(registry.host), registry)
        finally:
            registry.stop()
    finally:
        tokens.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="run one proxy to UPSTREAM until interrupted")
    proxy.add_argument("upstream", help="host:port")
    proxy.add_argument("--rtt-ms", type=float, default=Network.rtt * 1000)
    proxy.add_argument("--connection-mb", type=float, default=Network.connection_rate / 1e6,
                       help="MB/s per connection and direction")
    proxy.add_argument("--site-mb", type=float, default=Network.site_rate / 1e6,
                       help="MB/s for all connections, per direction")
    args = parser.parse_args()
    with WanLink(Network(args.rtt_ms / 1000, args.connection_mb * 1e6, args.site_mb * 1e6)) as link:
        print(link.proxy(args.upstream), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
