"""Fetch: download every blob not yet in the work dir, while the bundle writer waits for each.

The work dir (a BlobStore) is the resume point: a blob is promoted into it
only once its sha256 matched. ``Arrivals`` tells the writer's thread which
blobs are there; a failed download abandons the bundle being written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


from ..bundle.store import BlobStore
from ..errors import MirrorError
from ..model.upstream import Location
from ..progress import Progress
from ..registry.pool import ClientPool
from .tasks import each


LARGE_BLOB = 16 << 20  # blobs from this size on start before the rest


class Abandoned(Exception):
    """The bundle being written is given up because a download failed."""


class Arrivals:
    """Which blobs are in the store: downloads announce them, the bundle writer waits for them.

    Shared between the event loop (downloads) and the writer's thread.
    """

    def __init__(self, present: set[str]):
        self._ready = set(present)
        self._abandoned = False
        self._condition = threading.Condition()

    def arrived(self, digest: str) -> None:
        with self._condition:
            self._ready.add(digest)
            self._condition.notify_all()

    def abandon(self) -> None:
        with self._condition:
            self._abandoned = True
            self._condition.notify_all()

    def wait_for(self, digest: str) -> None:
        with self._condition:
            while digest not in self._ready and not self._abandoned:
                self._condition.wait()
            if self._abandoned:
                raise Abandoned(digest)


@dataclass
class Fetch:
    """Downloads of every blob not yet in the store, in the order the bundle writes them."""

    store: BlobStore
    pool: ClientPool
    jobs: int
    wanted: dict[str, tuple[int, Location]]  # digest -> size and where to get it
    order: list[str]
    failed: dict[str, MirrorError] = field(default_factory=dict)
    downloaded: int = 0
    verified: set[str] = field(default_factory=set)  # hashed on the way in by this process

    @property
    def missing(self) -> list[str]:
        """What to download, in the order to start it: large blobs first, then the bundle's order.

        Over a real network each connection is capped (a CDN gives one
        connection ~10 MB/s), so the largest blob alone can outlast all the
        rest: started last, it sets the tail. The writer, which takes blobs
        in bundle order, is far faster than the network and catches up.
        """
        missing = [d for d in self.order if d in self.wanted and not self.store.has(d)]
        large = sorted((d for d in missing if self.wanted[d][0] >= LARGE_BLOB), key=lambda d: -self.wanted[d][0])
        first = set(large)
        return large + [d for d in missing if d not in first]

    @property
    def reused(self) -> int:
        return sum(size for d, (size, _) in self.wanted.items() if d not in self.verified)

    async def run(self, arrivals: Arrivals, progress: Progress, abandon_on_failure: bool) -> None:
        async def one(digest: str) -> None:
            size, location = self.wanted[digest]
            client = await self.pool.get(location.host)
            partial = self.store.partial_path(digest)
            already = partial.stat().st_size if partial.exists() else 0
            bar.update(already)
            try:
                await client.download_blob(location.repository, digest, partial, size=size,
                                           progress=bar.update)
                self.store.promote(digest)
            except OSError as exc:  # the work dir, not the registry: full disk, permissions
                self.failed[digest] = MirrorError(f"blob {digest}: cannot write to the work dir "
                                                  f"{self.store.root}: {exc}")
            except MirrorError as exc:
                self.failed[digest] = exc
            if digest in self.failed:
                if abandon_on_failure:
                    arrivals.abandon()
                return
            self.downloaded += size - already
            self.verified.add(digest)
            arrivals.arrived(digest)

        missing = self.missing
        try:
            with progress.bar(sum(self.wanted[d][0] for d in missing), "downloading") as bar:
                await each(missing, one, self.jobs)
        finally:
            if not all(self.store.has(d) for d in missing):
                arrivals.abandon()  # cancelled or failed: the writer thread must not wait for ever
