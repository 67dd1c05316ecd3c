"""Fetch: download every blob not yet in the work dir, while images resolve and the writer waits.

The work dir (a BlobStore) is the resume point: a blob is promoted into it
only once its sha256 matched. ``Arrivals`` tells the writer's thread which
blobs are there; a failed download abandons the bundle being written.
"""

from __future__ import annotations

import threading
from typing import Callable, Collection

import anyio

from ..bundle.store import BlobStore
from ..errors import MirrorError
from ..model.upstream import Location
from ..progress import Progress
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.settings import tasks_for
from ..registry.unfinished import Unfinished


PARALLEL_RANGES = 16  # a large blob comes as ranges of 8 MiB, up to this many at once (registry/download.py)


async def download_into(store: BlobStore, client: RegistryClient, repository: str, digest: str, size: int, *,
                        progress: Callable[[int], None] | None = None, unfinished: Unfinished | None = None) -> int:
    """The blob into the work dir: a small one whole into memory, then one record of its pack; a large one
    into its partial file, resumed, then promoted. The bytes a partial file already held (counted as
    progress at once). OSError is the work dir's (full disk, permissions)."""
    if store.packs(size):
        store.put_checked(digest, await client.download_small_blob(repository, digest, size=size, progress=progress,
                                                                   unfinished=unfinished))
        return 0
    partial = store.partial_path(digest)
    already = partial.stat().st_size if partial.exists() else 0
    if progress is not None:
        progress(already)
    await client.download_blob(repository, digest, partial, size=size, progress=progress, segments=PARALLEL_RANGES,
                               unfinished=unfinished)
    store.promote(digest)
    return already


class Abandoned(Exception):
    """The bundle being written is given up because a download failed."""


class Arrivals:
    """Which blobs are in the store: downloads announce them, the bundle writer waits for them.

    Shared between the event loop (downloads) and the writer's thread.
    """

    def __init__(self) -> None:
        self._unclaimed: set[str] = set()  # in the store, not yet returned by ``among``
        self._abandoned = False
        self._condition = threading.Condition()

    def arrived(self, digest: str) -> None:
        with self._condition:
            self._unclaimed.add(digest)
            self._condition.notify_all()

    def abandon(self) -> None:
        with self._condition:
            self._abandoned = True
            self._condition.notify_all()

    def among(self, digests: set[str]) -> set[str]:
        """Those of ``digests`` in the store and not returned before, once one at least is (Abandoned if
        the bundle was given up).

        Each is returned once: the writer asks with every blob it has not written yet (thousands) after
        each arrival, and the intersection then costs what arrived since, not what arrived in all."""
        with self._condition:
            while not (ready := digests & self._unclaimed) and not self._abandoned:
                self._condition.wait()
            if self._abandoned:
                raise Abandoned()
            self._unclaimed -= ready
            return ready


class Fetch:
    """Downloads into the work dir, fed image by image as they resolve; each blob once.

    Downloads start with the first resolved image instead of after the last:
    over a real network, resolving hundreds of images is mostly round trips,
    and the link would otherwise idle through them. Of the blobs waiting to
    start, the largest go first, in ranges (registry/download.py): with each
    connection capped (a CDN gives one connection ~10 MB/s), the largest blob
    alone can outlast the rest, and started last it sets the tail. The bundle
    writer, far faster than such a link, takes each blob as it arrives.
    A blob waiting is an entry in ``Unfinished``'s heaps, taken by a fixed
    pool of ``tasks_for(jobs)`` workers: memory stays bounded by -j, not by
    how many blobs a release has.
    """

    def __init__(self, store: BlobStore, pool: ClientPool, jobs: int, skip: Collection[str] = ()):
        self.store, self.pool, self.jobs = store, pool, jobs
        self.skip = set(skip)  # left to a delta's base: never downloaded
        self.wanted: dict[str, tuple[int, Location]] = {}  # digest -> size and where to get it
        self.failed: dict[str, MirrorError] = {}
        self.downloaded = 0
        self.verified: set[str] = set()  # hashed on the way in by this process
        self._workers = tasks_for(jobs)  # downloads in progress at most: -j's cap
        self._unfinished = Unfinished(at_once=self._workers)  # each registry's window: how many move
        self._no_more = anyio.Event()

    def new(self, blobs: dict[str, int]) -> dict[str, int]:
        """Of ``blobs``, those ``want`` would add: not queued yet, not left to the base."""
        return {digest: size for digest, size in blobs.items() if digest not in self.wanted and digest not in self.skip}

    def want(self, blobs: dict[str, int], location: Location) -> None:
        """Queue blobs (digest -> size) unless present, queued already or left to the base."""
        for digest, size in blobs.items():
            if digest in self.wanted or digest in self.skip:
                continue
            self.wanted[digest] = (size, location)
            if not self.store.has(digest):
                self._unfinished.queue(location.host, size, digest, small=self.store.packs(size))

    def no_more(self) -> None:
        """Every image is resolved: the downloads end once the queue is empty."""
        self._unfinished.close()
        self._no_more.set()

    def reused(self, digests: Collection[str]) -> int:
        """Bytes of these blobs taken from the work dir rather than downloaded by this run."""
        return sum(self.wanted[d][0] for d in digests if d in self.wanted and d not in self.verified)

    async def run(self, arrivals: Arrivals, progress: Progress, abandon_on_failure: bool) -> None:
        async def one(digest: str) -> None:
            size, location = self.wanted[digest]
            client = await self.pool.get(location.host)
            already = 0
            try:
                already = await download_into(self.store, client, location.repository, digest, size,
                                              progress=bar.update, unfinished=unfinished)
            except OSError as exc:  # the work dir, not the registry: full disk, permissions
                self.failed[digest] = self.store.write_failed(exc, digest)
            except MirrorError as exc:
                self.failed[digest] = exc
            if digest in self.failed:
                if abandon_on_failure:
                    arrivals.abandon()
                return
            self.downloaded += size - already
            self.verified.add(digest)
            arrivals.arrived(digest)

        async def worker() -> None:
            while (digest := await unfinished.next()) is not None:  # of its registry's, the largest
                await one(digest)

        async def helper() -> None:
            while await unfinished.help():  # nothing left to start: take over half of a large blob's rest
                pass

        unfinished = self._unfinished
        try:
            with progress.bar(None, "downloading") as bar:
                async with anyio.create_task_group() as group:
                    for _ in range(self._workers):
                        group.start_soon(worker)
                    await self._no_more.wait()
                    for _ in range(self._workers):
                        group.start_soon(helper)
        finally:
            if not all(self.store.has(d) for d in self.wanted):
                arrivals.abandon()  # cancelled or failed: the writer thread must not wait for ever
