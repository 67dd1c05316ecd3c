"""The one delivery pipeline push and sync share: one read of a source, a Delivery per target, tags last.

    feed -> FanOut -> a Delivery per target -> per target, once the feed is done: ``before_tags``,
                                                the images' tags, their attachments' tags, the referrers indexed

A feed reads its source once and hands every blob and manifest over:
``bundle_feed.BundleFeed`` a bundle (push), ``registry_feed.RegistryFeed``
source registries (sync). FanOut passes each to every target still needing
it, concurrently; a target that fails fails alone. Each Delivery uploads a
blob once and mounts it into its other repositories, and puts a manifest
once its children are in. Then each target is tagged on its own: only
complete images, never a refused one (a signature that did not verify, a
backup that failed), and an attachment only after its image's tag and only
if that image was written (or was in place already).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Iterable, Protocol

import anyio

from ..errors import MirrorError, worst_exit_code
from ..progress import Progress
from .attachments import index_referrers_of, subjects_of
from .deliver import Delivery
from .fanout import FanOut
from .plan import ImagePlan
from .tasks import task_group


class Feed(Protocol):
    def size(self, digest: str) -> int:
        """A blob's size, for the progress bar."""

    async def run(self, sink: FanOut) -> None:
        """Hand ``sink`` every manifest and the blobs in ``sink.wanted``, each read once."""


async def deliver(deliveries: list[Delivery], feed: Feed, progress: Progress, label: str = "uploading", *,
                  before_tags: Callable[[Delivery], Awaitable[None]] | None = None,
                  in_place: Callable[[Delivery], Iterable[tuple[str, str]]] | None = None) -> None:
    """Write what each Delivery plans from one run of ``feed``, then tag every target.

    ``before_tags(delivery)`` runs first for each target (sync's retag backups, push's signature check);
    ``in_place(delivery)`` names images already at that target, as (repository, digest) pairs
    (``subjects_written``), whose attachments may follow them.
    """
    uploads = [delivery.presence.missing_blobs if delivery.to_upload is None else delivery.to_upload
               for delivery in deliveries]
    if any(uploads) or any(d.in_hand or d.presence.missing_manifests for d in deliveries):
        fan = FanOut(deliveries, uploads)
        with progress.bar(sum(feed.size(digest) for blobs in uploads for digest in blobs), label) as bar:
            async with task_group() as group:  # a spool dir refused is an OSError, as before any write
                for delivery in deliveries:
                    delivery.progress = bar.update
                    for manifest in delivery.in_hand:
                        delivery.manifest_arrived(manifest, group)
                await feed.run(fan)

    async def tag(delivery: Delivery) -> None:
        if before_tags is not None:
            await before_tags(delivery)
        await tag_in_order(delivery, in_place(delivery) if in_place else ())

    async with anyio.create_task_group() as group:
        for delivery in deliveries:
            group.start_soon(tag, delivery)


async def tag_in_order(delivery: Delivery, in_place: Iterable[tuple[str, str]] = ()) -> None:
    """The images' tags, then their attachments' (refused where the image was not written, nor
    ``in_place``), then the referrers indexed."""
    images = [plan for plan in delivery.plans if not plan.record.is_attachment]
    attached = [plan for plan in delivery.plans if plan.record.is_attachment]
    await delivery.tag_all(images)
    written = subjects_written(images, delivery.report.failures) | set(in_place)
    for plan in attached:
        assert plan.record.attached_to is not None
        if (plan.repository, plan.record.attached_to.subject) not in written:
            delivery.refuse(plan, MirrorError(f"not written: the image it is attached to "
                                              f"({plan.record.attached_to.subject}) was not"))
    await delivery.tag_all(attached)
    await index_referrers_of(delivery, attached)
    if delivery.report.causes:
        delivery.report.exit_code = worst_exit_code(delivery.report.causes.values())


def subjects_written(plans: Iterable[ImagePlan], failures: dict[str, str]) -> set[tuple[str, str]]:
    """(repository, digest) pairs an attachment of these images may name, of those that did not fail."""
    return {(plan.repository, digest) for plan in plans
            if plan.record.source not in failures and not plan.record.is_attachment
            for digest in subjects_of(plan.record) | plan.manifests}
