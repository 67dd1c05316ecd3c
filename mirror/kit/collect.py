"""Download the kit's items into pull's work dir, a few at once, each made an artifact as soon as it can be.

A file whose digest is published (a release's sha256sum file, ``--file
URL#sha256=``) is described, its config and manifest built, as soon as the
first answer gives its size: a pull's bundle lists it while its body still
downloads, and the writer takes the body when it arrives, as it takes an
image's blob. A chart (its config is its Chart.yaml, inside the body) and a
file whose digest only its body tells (``install.sh``,
``cert-manager.crds.yaml``, ``--file URL`` without a digest) are described
once their body is in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import anyio
import anyio.from_thread
import anyio.to_thread

from ..bundle.store import BlobStore
from ..errors import MirrorError
from .artifact import Artifact, build
from .fetcher import KitFetcher
from .items import FILE, KitItem

PARALLEL = 4  # items at once: beside the image blobs, which hold most connections


@dataclass
class Collected:
    artifacts: list[Artifact] = field(default_factory=list)  # in the order the items came
    failures: dict[str, str] = field(default_factory=dict)  # item -> why
    causes: dict[str, MirrorError] = field(default_factory=dict)


class KitDownloads:
    """The items downloading; ``described`` is set once each is an artifact (its body perhaps still coming) or failed.

    ``take`` hands the artifacts to a bundle writer: from then on one that
    fails gives the bundle up (``abandon``). A layer is announced
    (``arrived``) once no item described before its body came still
    downloads it: two items may share one, and the writer must not finish
    with it while the other can still fail.
    """

    def __init__(self, items: list[KitItem], store: BlobStore, fetcher: KitFetcher,
                 arrived: Callable[[str], None] = lambda digest: None, abandon: Callable[[], None] = lambda: None):
        self.items, self.store, self.fetcher = items, store, fetcher
        self.arrived, self.abandon = arrived, abandon
        self.failures: dict[str, str] = {}  # item -> why
        self.causes: dict[str, MirrorError] = {}
        self.described = anyio.Event()
        self._built: dict[int, Artifact] = {}  # item index -> its artifact
        self._early: set[int] = set()  # described before their body is in, still downloading it
        self._coming: Counter[str] = Counter()  # layer -> how many of those download it
        self._failed: set[int] = set()
        self._taken: set[int] = set()
        self._waiting = len(items)  # neither described nor failed
        if not items:
            self.described.set()

    @property
    def artifacts(self) -> list[Artifact]:
        """Those described and not failed, in the order the items came."""
        return [self._built[i] for i in sorted(self._built) if i not in self._failed]

    def take(self) -> list[Artifact]:
        """The artifacts, for a bundle: one of them failing from now on abandons it."""
        self._taken = set(self._built) - self._failed
        return self.artifacts

    def lost(self) -> list[Artifact]:
        """Those taken for a bundle whose download failed since."""
        return [self._built[i] for i in sorted(self._taken & self._failed)]

    def coming(self, layer: str) -> bool:
        """An item described before its body still downloads ``layer``: not to be written yet, even if a copy is in."""
        return self._coming[layer] > 0

    async def run(self) -> None:
        limiter = anyio.CapacityLimiter(PARALLEL)
        try:
            async with anyio.create_task_group() as group:
                for index, item in enumerate(self.items):
                    group.start_soon(self._one, index, item, limiter)
        finally:
            self.described.set()
            if self._taken & self._early:
                self.abandon()  # cancelled, or an error no download should raise: the writer must not wait for ever

    async def _one(self, index: int, item: KitItem, limiter: anyio.CapacityLimiter) -> None:
        published = f"sha256:{item.sha256}" if item.kind == FILE and item.sha256 else None  # a file's config is {}

        def sized(size: int) -> None:  # in the download's thread: the first answer is in, its body not yet
            anyio.from_thread.run_sync(self._describe, index, item, published, size, True)

        def download() -> tuple[str, int]:
            return self.fetcher.download(item.url, item.describe(), self.store, item.max_size, item.sha256,
                                         item.checked_by, sized if published else None)

        try:
            layer, size = await anyio.to_thread.run_sync(download, limiter=limiter)
            if index not in self._built:
                self._describe(index, item, layer, size, False)
        except MirrorError as exc:
            self.failures[item.describe()], self.causes[item.describe()] = str(exc), exc
            self._failed.add(index)
            if index not in self._built:
                self._count_down()
            elif index in self._taken:
                self.abandon()
        if index in self._early:
            self._early.discard(index)
            self._coming[published] -= 1
        if index in self._built:  # in the store, unless it failed and no other item has its layer
            layer = self._built[index].record.layer
            if not self.coming(layer) and self.store.has(layer):
                self.arrived(layer)

    def _describe(self, index: int, item: KitItem, layer: str, size: int, early: bool) -> None:
        """In the event loop, one at a time: artifacts share blobs (every file's empty config)."""
        self._built[index] = build(item, layer, size, self.store)
        if early:
            self._early.add(index)
            self._coming[layer] += 1
        self._count_down()

    def _count_down(self) -> None:
        self._waiting -= 1
        if not self._waiting:
            self.described.set()


async def collect(items: list[KitItem], store: BlobStore, fetcher: KitFetcher) -> Collected:
    """Every item downloaded (checked against its digest) and built; a failed one is in ``failures``."""
    downloads = KitDownloads(items, store, fetcher)
    await downloads.run()
    return Collected(downloads.artifacts, downloads.failures, downloads.causes)
