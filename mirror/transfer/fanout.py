"""One read of a source, several registries written: a Delivery's face over one Delivery per target.

A feed (pipeline.py) reads its source once and hands each blob and manifest
to what it thinks is one Delivery; FanOut passes it to every target that
still needs it, concurrently. A target that fails (its registry gone, a
refused upload) fails alone: the others go on, and reading stops only once
every target is gone. A stream that must be read once for every target (a
blob too large for push's spool window, marked ``once``; a blob streamed
from a source registry, marked ``tee``) is copied to each target's own
bounded stream, so the slowest target sets the pace and a failed one is
dropped; a target retrying a ``tee`` blob reads its source again.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import anyio

from ..errors import MirrorError
from ..model.oci import Manifest
from ..registry.client import BlobSource
from .deliver import Delivery

TEE_BUFFER = 4  # chunks queued per target for a streamed blob


class _Wanted:
    """What the feed asks of ``delivery.presence``: is a manifest wanted; a blob failed everywhere."""

    def __init__(self, fan: "FanOut"):
        self.fan = fan
        # Asked for every entry of the tar: computed once (the plans do not change while reading).
        self.manifest_repos = {d for delivery in fan.deliveries for d in delivery.presence.manifest_repos}

    def fail_blob(self, digest: str, error: MirrorError) -> None:
        for delivery in self.fan.needing(digest):
            delivery.presence.fail_blob(digest, error)


class FanOut:
    def __init__(self, deliveries: list[Delivery], uploads: list[set[str]]):
        self.deliveries = deliveries
        self.uploads = dict(zip(map(id, deliveries), uploads))  # blobs each target still needs
        self.presence = _Wanted(self)

    @property
    def wanted(self) -> set[str]:
        return set().union(*self.uploads.values())

    def needing(self, digest: str) -> list[Delivery]:
        return [d for d in self.deliveries if digest in self.uploads[id(d)] and d.fatal is None]

    @property
    def fatal(self) -> MirrorError | None:
        """Set once every target is gone: then reading on is pointless."""
        errors = [d.fatal for d in self.deliveries]
        return errors[0] if errors and all(errors) else None

    @fatal.setter
    def fatal(self, error: MirrorError) -> None:  # the bundle itself failed: every target stops
        for delivery in self.deliveries:
            delivery.fatal = delivery.fatal or error

    def claim(self, digest: str) -> None:
        for delivery in self.needing(digest):
            delivery.claim(digest)

    def manifest_arrived(self, manifest: Manifest, group: Any) -> None:
        for delivery in self.deliveries:
            if manifest.digest in delivery.presence.manifest_repos:
                delivery.manifest_arrived(manifest, group)

    def fail_unreached(self, never_came: Callable[[str], MirrorError]) -> None:
        for delivery in self.deliveries:
            delivery.fail_unreached(never_came)

    async def place_blob(self, digest: str, size: int, source: BlobSource) -> None:
        targets = self.needing(digest)
        for delivery in self.deliveries:  # claimed, and gone since: its manifests must not wait for the blob
            if digest in delivery.uploading and delivery not in targets and delivery.fatal is not None:
                delivery.uploading.discard(digest)
                delivery.presence.fail_blob(digest, delivery.fatal)
        once = getattr(source, "once", False)
        if len(targets) == 1 or not (once or getattr(source, "tee", False)):
            async with anyio.create_task_group() as group:
                for delivery in targets:
                    group.start_soon(delivery.place_blob, digest, size, source)
            return
        await self._tee(digest, size, source, targets, again=None if once else source)

    async def _tee(self, digest: str, size: int, source: Any, targets: list[Delivery], again: Any) -> None:
        """One read of ``source`` copied into one bounded stream per target; a retry reads ``again``."""
        streams = [anyio.create_memory_object_stream[Any](TEE_BUFFER) for _ in targets]

        async def pump() -> None:
            senders = [send for send, _ in streams]
            try:
                async for chunk in source():
                    for send in list(senders):
                        try:
                            await send.send(chunk)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            senders.remove(send)  # that target's upload is over
                    if not senders:
                        return
            except MirrorError as exc:
                for send in senders:
                    try:
                        await send.send(exc)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass
            finally:
                for send, _ in streams:
                    send.close()

        async def deliver(delivery: Delivery, receive: Any) -> None:
            with receive:
                await delivery.place_blob(digest, size, one_shot(digest, receive, again))

        async with anyio.create_task_group() as group:
            group.start_soon(pump)
            for delivery, (_, receive) in zip(targets, streams):
                group.start_soon(deliver, delivery, receive)


def one_shot(digest: str, receive: Any, again: Callable[[], AsyncIterator[bytes]] | None = None) -> BlobSource:
    """A source read from ``receive`` once; marked ``once`` so a fan-out copies it rather than re-reading.

    A second attempt (an upload retried) reads ``again`` when there is one (a source registry), and lets
    ``receive`` go so whoever feeds it is not held up; else it fails (a bundle is read in one pass).
    """
    used = False

    def source() -> AsyncIterator[bytes]:
        nonlocal used
        if used and again is not None:
            receive.close()
            return again()
        if used:
            raise MirrorError(f"blob {digest} is larger than the spool window and cannot be "
                              "retried in this pass; re-run push (or raise --window)")
        used = True
        return _chunks_from(receive)

    source.once = again is None  # type: ignore[attr-defined]
    return source


async def _chunks_from(receive: Any) -> AsyncIterator[bytes]:
    async for item in receive:
        if isinstance(item, BaseException):
            raise item
        yield item
