"""Feed a delivery from source registries: blobs streamed through, re-hashed, never on disk.

sync's feed (pipeline.py): the manifests are in hand (resolved); each blob a
target lacks is streamed from its source registry, largest first (they end
last), ``jobs`` at a time. With several targets one read of the source is
copied to all of them (FanOut's ``tee``); an upload retried reads it again.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, AsyncIterator, Callable

import anyio

from ..errors import IntegrityError, MirrorError
from ..model.oci import Manifest
from ..model.upstream import Location
from ..registry.pool import ClientPool
from .tasks import each

if TYPE_CHECKING:
    from .fanout import FanOut


class RegistryFeed:
    def __init__(self, pool: ClientPool, manifests: list[Manifest], origins: dict[str, tuple[Location, int]],
                 jobs: int):
        self.pool, self.manifests, self.jobs = pool, manifests, jobs
        self.origins = origins  # blob digest -> a source that has it, and its size

    def size(self, digest: str) -> int:
        return self.origins[digest][1]

    async def run(self, sink: FanOut) -> None:
        async def place(digest: str) -> None:
            location, size = self.origins[digest]
            await sink.place_blob(digest, size, self.streamed(location, digest, size))

        missing = sorted(sink.wanted, key=lambda digest: -self.size(digest))
        handed: set[str] = set()
        async with anyio.create_task_group() as group:
            for manifest in self.manifests:
                if manifest.digest not in handed:
                    handed.add(manifest.digest)
                    sink.manifest_arrived(manifest, group)
            await each(missing, place, self.jobs)
            sink.fail_unreached(lambda digest: MirrorError(f"{digest}: no source named it"))

    def streamed(self, location: Location, digest: str, size: int) -> Callable[[], AsyncIterator[bytes]]:
        """A fresh source stream per upload attempt, hashed as it goes through."""
        pool = self.pool

        async def stream() -> AsyncIterator[bytes]:
            source = await pool.get(location.host)
            async with source.open_blob(location.repository, digest) as chunks:
                async for chunk in verified(chunks, digest, size, f"blob {digest} of {location.host}/"
                                                                    f"{location.repository}"):
                    yield chunk

        stream.tee = True  # type: ignore[attr-defined]  # several targets: one read for all (FanOut)
        return stream


async def verified(chunks: AsyncIterator[bytes], digest: str, size: int, what: str) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, holding the last one back until the whole content hashes to ``digest``.

    An upload with a declared length is committed by its last byte: raising
    before that byte leaves the target without the bad blob.
    """
    hasher = hashlib.sha256()
    seen = 0
    held: bytes | None = None
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise IntegrityError(f"{what}: the source sent more than its {size} bytes")
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    actual = "sha256:" + hasher.hexdigest()
    if seen != size or actual != digest:
        raise IntegrityError(f"{what}: the source sent {seen} bytes hashing to {actual}; nothing was "
                             "written for it")
    if held is not None:
        yield held
