"""Download the kit's items into pull's work dir, a few at once, and make each an artifact there."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from ..bundle.store import BlobStore
from ..errors import MirrorError
from .artifact import Artifact, build
from .fetcher import KitFetcher
from .items import KitItem

PARALLEL = 4  # items at once: beside the image blobs, which hold most connections


@dataclass
class Collected:
    artifacts: list[Artifact] = field(default_factory=list)  # in the order the items came
    failures: dict[str, str] = field(default_factory=dict)  # item -> why
    causes: dict[str, MirrorError] = field(default_factory=dict)


async def collect(items: list[KitItem], store: BlobStore, fetcher: KitFetcher) -> Collected:
    """Every item downloaded (checked against its digest) and built; a failed one is in ``failures``."""
    built: dict[int, Artifact] = {}
    result = Collected()
    limiter = anyio.CapacityLimiter(PARALLEL)

    def download(item: KitItem) -> tuple[str, int]:
        return fetcher.download(item.url, item.describe(), store, item.max_size, item.sha256, item.checked_by)

    async def run(index: int, item: KitItem) -> None:
        try:
            layer, size = await anyio.to_thread.run_sync(download, item, limiter=limiter)
            # built here, one at a time: artifacts share blobs (every file's empty config)
            built[index] = build(item, layer, size, store)
        except MirrorError as exc:
            result.failures[item.describe()], result.causes[item.describe()] = str(exc), exc

    async with anyio.create_task_group() as group:
        for index, item in enumerate(items):
            group.start_soon(run, index, item)
    result.artifacts = [built[i] for i in sorted(built)]
    return result
