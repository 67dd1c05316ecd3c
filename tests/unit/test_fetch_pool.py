"""A pull's blobs waiting to download: entries a fixed pool of workers takes, the largest of a registry first,
whatever the bundle's size (through the fake registry)."""

from __future__ import annotations

import asyncio
import random

import anyio
import httpx
import pytest

from mirror.bundle.store import PACKED_MAX, BlobStore
from mirror.model.upstream import Location
from mirror.progress import Progress
from mirror.registry import unfinished
from mirror.registry.pool import ClientPool
from mirror.registry.settings import (SMALL_BLOBS_CAP, RegistrySettings, small_blobs_window, tasks_for,
                                      transfers_window)
from mirror.transfer.fetch import Arrivals, Fetch
from support.fake_registry import FakeRegistry, by_host

pytestmark = pytest.mark.anyio

BLOBS = 300  # a release has thousands


class Counted(httpx.AsyncByteStream):
    """A body that ends once ``hold()`` returns, counted in ``open_`` (now, at most) until it does."""

    def __init__(self, data: bytes, hold, open_: list[int]):
        self.data, self.hold, self.open_ = data, hold, open_

    async def __aiter__(self):
        self.open_[0] += 1
        self.open_[1] = max(self.open_[1], self.open_[0])
        try:
            yield self.data
            await self.hold()
        finally:
            self.open_[0] -= 1


def holding(registry: FakeRegistry, hold, open_: list[int] | None = None, holds=lambda size: True):
    """``registry``'s fault: the bodies of the blobs ``holds`` names by size end once ``hold()`` returns,
    counted in ``open_`` (now, at most) until they do."""
    open_ = [0, 0] if open_ is None else open_

    def fault(request: httpx.Request):
        if "/blobs/" not in request.url.path:
            return None
        data = registry.blobs[request.url.path.rsplit("/", 1)[1]]
        if not holds(len(data)):
            return None
        return httpx.Response(200, headers={"Content-Length": str(len(data))}, stream=Counted(data, hold, open_))

    return fault


def blob_requests(registry: FakeRegistry) -> list[str]:
    return [line.rsplit("/", 1)[1] for line in registry.requests if "/blobs/" in line]


async def test_queued_blobs_take_no_task_each_and_the_largest_starts_first(tmp_path):
    """Thousands of blobs queue as an image list resolves; each waiting as a task of its own grew the
    pull's memory with the bundle's size (~7 KB a blob), not with -j."""
    go = anyio.Event()
    registry = FakeRegistry()
    registry.fault = holding(registry, go.wait)
    sizes = {registry.add_blob("lib/app", bytes([i % 251]) * (100 + i)): 100 + i for i in range(BLOBS)}
    shuffled = list(sizes.items())
    random.Random(7).shuffle(shuffled)
    settings = lambda host: RegistrySettings(plain_http=True, retries=0, max_connections=1)  # noqa: E731

    async with ClientPool(settings, registry) as pool, anyio.create_task_group() as group:
        fetch = Fetch(BlobStore(tmp_path / "store"), pool, jobs=1)
        before = len(asyncio.all_tasks())
        for digest, size in shuffled:
            fetch.want({digest: size}, Location("src.test", "lib/app"))
        group.start_soon(fetch.run, Arrivals(), Progress(quiet=True), False)
        await anyio.wait_all_tasks_blocked()  # the first downloads are in, held; every other one waits
        waiting_tasks = len(asyncio.all_tasks()) - before
        go.set()
        fetch.no_more()
    assert waiting_tasks <= tasks_for(1) + 1  # the pool and fetch.run itself, not a task per blob
    assert blob_requests(registry) == sorted(sizes, key=sizes.__getitem__, reverse=True)
    assert all(fetch.store.has(digest) for digest in sizes)


async def test_a_registry_with_downloads_waiting_for_room_does_not_hold_back_another_registry(tmp_path):
    """The pool's workers do not all queue for one registry's next free place while another has room."""
    go = anyio.Event()
    busy, other = FakeRegistry(), FakeRegistry()
    busy.fault = holding(busy, go.wait)
    large = {busy.add_blob("lib/app", bytes([i % 251]) * (10_000 + i)): 10_000 + i for i in range(BLOBS)}
    small = other.add_blob("lib/app", b"small" * 20)
    settings = lambda host: RegistrySettings(plain_http=True, retries=0, max_connections=1)  # noqa: E731

    async with ClientPool(settings, by_host({"busy.test": busy, "other.test": other})) as pool, \
            anyio.create_task_group() as group:
        fetch = Fetch(BlobStore(tmp_path / "store"), pool, jobs=1)
        fetch.want(large, Location("busy.test", "lib/app"))
        fetch.want({small: 100}, Location("other.test", "lib/app"))
        group.start_soon(fetch.run, Arrivals(), Progress(quiet=True), False)
        await anyio.wait_all_tasks_blocked()  # busy's downloads held, its place taken: the rest wait
        small_done = fetch.store.has(small)
        go.set()
        fetch.no_more()
    assert small_done
    assert blob_requests(busy) == sorted(large, key=large.__getitem__, reverse=True)


async def test_small_blobs_come_while_large_ones_hold_every_transfer(tmp_path):
    """A registry's small blobs (a release's hundreds of configs and small layers) have a window of their
    own: they do not wait behind large layers that hold every transfer's place for seconds."""
    go, open_ = anyio.Event(), [0, 0]
    registry = FakeRegistry()
    registry.fault = holding(registry, go.wait, open_, holds=lambda size: size > PACKED_MAX)
    large = {registry.add_blob("lib/app", bytes([i]) * (PACKED_MAX + 1 + i)): PACKED_MAX + 1 + i for i in range(4)}
    small = {registry.add_blob("lib/app", bytes([i]) * (1_000 + i)): 1_000 + i for i in range(30)}
    settings = lambda host: RegistrySettings(plain_http=True, retries=0, max_connections=1)  # noqa: E731

    async with ClientPool(settings, registry) as pool, anyio.create_task_group() as group:
        fetch = Fetch(BlobStore(tmp_path / "store"), pool, jobs=1)
        fetch.want(large, Location("src.test", "lib/app"))
        fetch.want(small, Location("src.test", "lib/app"))
        group.start_soon(fetch.run, Arrivals(), Progress(quiet=True), False)
        await anyio.wait_all_tasks_blocked()  # the large ones held, in every transfer's place
        small_done = [fetch.store.has(digest) for digest in small]
        large_open = open_[0]
        go.set()
        fetch.no_more()
    assert large_open == transfers_window(1)[1]
    assert all(small_done)
    assert all(fetch.store.has(digest) for digest in large)


async def test_small_blobs_in_flight_grow_past_the_transfers_and_stop_at_their_cap(tmp_path):
    """Each small blob in flight is held whole in memory: their window bounds that memory, whatever -j."""
    open_ = [0, 0]
    registry = FakeRegistry()
    registry.fault = holding(registry, lambda: anyio.sleep(0.002), open_)
    small = {registry.add_blob("lib/app", bytes([i % 251]) * (1_000 + i)): 1_000 + i for i in range(BLOBS)}
    settings = lambda host: RegistrySettings(plain_http=True, retries=0, max_connections=1)  # noqa: E731

    async with ClientPool(settings, registry) as pool:
        fetch = Fetch(BlobStore(tmp_path / "store"), pool, jobs=1)
        fetch.want(small, Location("src.test", "lib/app"))
        fetch.no_more()
        await fetch.run(Arrivals(), Progress(quiet=True), False)
    assert transfers_window(1)[1] < open_[1] == small_blobs_window(1)[1]
    assert small_blobs_window(16)[1] == SMALL_BLOBS_CAP
    assert all(fetch.store.has(digest) for digest in small)


async def test_small_blobs_held_in_memory_are_capped_across_registries(tmp_path, monkeypatch):
    """Each registry has its window of small blobs; memory is one: all registries' small blobs in flight
    together stay within SMALL_BLOBS_CAP (here made 6), however many registries a list names."""
    monkeypatch.setattr(unfinished, "SMALL_BLOBS_CAP", 6)
    open_ = [0, 0]
    registries = {f"r{n}.test": FakeRegistry() for n in range(3)}
    wanted = {}
    for host, registry in registries.items():
        registry.fault = holding(registry, lambda: anyio.sleep(0.002), open_)
        bodies = [f"{host} {i}".encode() * 50 for i in range(60)]
        wanted[host] = {registry.add_blob("lib/app", data): len(data) for data in bodies}
    settings = lambda host: RegistrySettings(plain_http=True, retries=0, max_connections=4)  # noqa: E731

    async with ClientPool(settings, by_host(registries)) as pool:
        fetch = Fetch(BlobStore(tmp_path / "store"), pool, jobs=4)
        for host, blobs in wanted.items():
            fetch.want(blobs, Location(host, "lib/app"))
        fetch.no_more()
        await fetch.run(Arrivals(), Progress(quiet=True), False)
    assert open_[1] == 6 < 3 * small_blobs_window(4)[1]
    assert all(fetch.store.has(digest) for blobs in wanted.values() for digest in blobs)
