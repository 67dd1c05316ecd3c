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

``remote_registry`` puts a token-auth docker-registry (tests/support/testbed.py) and
its token server behind such a link. Everything binds 127.0.0.1 only; a
connection idle for ``IDLE_TIMEOUT`` seconds is closed.

    with WanLink(Network(rtt=0.040, connection_rate=10e6, site_rate=100e6)) as link:
        with remote_registry(work / "wan", seeded_storage, link) as host:
            ... pull from http://host/... ...

    python3 scripts/wan.py proxy 127.0.0.1:5000 [--rtt-ms 40] [--connection-mb 10] [--site-mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' support package

from support import testbed  # noqa: E402

CHUNK = 64 * 1024
IDLE_TIMEOUT = 300.0


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


class WanLink:
    """A loop in a daemon thread running proxies that share one site cap (one bucket per direction)."""

    def __init__(self, network: Network = Network()):
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
        try:
            await asyncio.gather(self._pump(client_reader, upstream_writer, self.site["up"], established),
                                 self._pump(upstream_reader, client_writer, self.site["down"], established))
        except (OSError, asyncio.TimeoutError):
            pass  # one side went away or fell silent
        finally:
            self.open -= writers
            for writer in writers:
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, site: TokenBucket,
                    established: float) -> None:
        """Read, wait for both buckets, deliver RTT/2 later; forward end-of-stream.

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
            self.loop.call_at(due, deliver, data)
            await writer.drain()  # a far side slow to take data stops the reading here
        self.loop.call_at(max(due, self.loop.time() + self.rtt / 2), deliver, None)


@contextlib.contextmanager
def remote_registry(directory: Path, storage: Path, link: WanLink) -> Iterator[str]:
    """A docker-registry serving ``storage`` (another registry's, already seeded) behind ``link``,
    requiring a bearer token per repository from a token server also behind ``link``, as Docker Hub
    does (anonymous pulls get a pull-only token). Yields the registry's address through the link."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "storage").symlink_to(storage.resolve(), target_is_directory=True)
    tokens = testbed.TokenServer(directory / "signer", users={}, refresh_tokens={})
    try:
        realm = f"http://{link.proxy(tokens.url.removeprefix('http://'))}/token"
        registry = testbed.start_registry(directory, token_auth=tokens.auth_config(realm))
        try:
            yield link.proxy(registry.host)
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
