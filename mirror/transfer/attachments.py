"""Attachments on pull and push: found alongside each image, verified before anything is written.

Pull: as each image resolves, its attachments are looked up concurrently (``attach.discover``)
and become records of their own, linked to their subject (``attached_to``), fetched and
carried like images. With ``--verify-key`` an image none of whose signatures verifies fails
(exit 4) before the bundle is written. Push: images are tagged first, their attachments
after them (cosign's tags as tags, referrers indexed where the target does not index them),
and with ``--verify-key`` an image is tagged only once a signature read back from the target
verifies. docs/signatures.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio

from ..attach.cosign import MAX_PAYLOAD
from ..attach.discover import Found, TagListings, find, payloads
from ..attach.keys import ABSENT, INVALID, PRESENT, VERIFIED, Verdict, Verifier, judge, verdict_reason
from ..attach.referrers import index_referrers
from ..bundle.format import Attached, BundleManifest, ImageRecord, attachments_of, is_cosign_signature
from ..bundle.store import BlobStore
from ..errors import IntegrityError, MirrorError, worst_exit_code
from ..model import graph
from ..model.oci import Manifest
from ..model.reference import Reference
from ..model.upstream import Location, SourceMap
from ..registry.client import BlobSource, RegistryClient
from ..registry.pool import ClientPool
from .budget import Budget, RateLimited
from .deliver import Delivery, DeliveryReport
from .plan import ImagePlan, Target
from .resolve import Resolution, ResolvedImage, stored_manifest
from .survey import Presence
from .tasks import each


def subjects_of(image: ResolvedImage | ImageRecord) -> set[str]:
    """The digests a signature of the image may name: its own, or the index's before --platform narrowed it."""
    if isinstance(image, ResolvedImage):
        return {image.narrowed_from or image.top.digest}
    return {image.narrowed_from or image.digest}


class PullAttachments:
    """One pull's attachment lookups, started as images resolve, settled once all have."""

    def __init__(self, pool: ClientPool, store: BlobStore, want: Callable[[ResolvedImage], None],
                 enabled: bool, keys: list[Verifier], budget: Budget | None = None):
        self.pool, self.store, self.want, self.enabled, self.keys = pool, store, want, enabled, keys
        self.budget = budget  # each manifest GET a pull from its registry's rate limit, as the images' are
        self.found: dict[int, list[ResolvedImage]] = {}  # id(image) -> its attachments
        self.failed: dict[int, MirrorError] = {}
        self.deferred: dict[int, str] = {}  # id(image) -> the rate limit that left its attachments for later
        self.verdicts: dict[str, Verdict] = {}  # image source -> its signatures
        self.listings = TagListings()  # each repository's tags listed once, for all its images' lookups

    def look_up(self, image: ResolvedImage, group: Any) -> None:
        if self.enabled:
            group.start_soon(self._look_up, image)

    async def _look_up(self, image: ResolvedImage) -> None:
        try:
            client = await self.pool.get(image.location.host)
            repository = image.location.repository
            subjects = [*subjects_of(image), *(child.digest for child in image.children)]
            found = await find(client, repository, subjects, get=functools.partial(self._manifest, client),
                               listings=self.listings)
            attachments = [_as_image(image.ref, image.location, item) for item in found]
            for item, attachment in zip(found, attachments):
                if self.keys and item.tag is not None and item.kind == "signature":
                    for digest, data in (await payloads(client, repository, item.manifest)).items():
                        self.store.put_bytes(digest, data)
                self.want(attachment)
            self.found[id(image)] = attachments
        except RateLimited as exc:
            self.deferred[id(image)] = str(exc)
        except MirrorError as exc:
            failed = MirrorError(f"{image.ref}: looking up its signatures and attachments: {exc}")
            failed.exit_code = exc.exit_code  # an error class's own arguments (a host, a directory) are not ours
            self.failed[id(image)] = failed

    async def _manifest(self, client: RegistryClient, repository: str, digest: str) -> Manifest:
        return await stored_manifest(client, repository, digest, self.store, self.budget, digest)

    def settle(self, resolution: Resolution) -> None:
        """Each image followed by its attachments; images whose lookup failed, or (with keys) whose
        signatures do not verify, move to the failures."""
        images = []
        for image in resolution.images:
            if id(image) in self.deferred:  # with the image: a bundle without its signature would mislead
                resolution.deferred[str(image.ref)] = self.deferred[id(image)]
                continue
            attachments = self.found.get(id(image), [])
            error = self.failed.get(id(image))
            if error is None and self.enabled:
                verdict = self._judge(image, attachments)
                self.verdicts[image.record().source] = verdict
                if self.keys and verdict.status != VERIFIED:
                    error = unsigned(verdict)
            if error is not None:
                resolution.failures[str(image.ref)] = str(error)
                resolution.causes[str(image.ref)] = error
                continue
            images += [image, *attachments]
        resolution.images = images

    def _judge(self, image: ResolvedImage, attachments: list[ResolvedImage]) -> Verdict:
        signatures = [(a.top, {d: self.store.read(d) for d, size in a.blobs.items()
                               if size <= MAX_PAYLOAD and self.store.has(d)})
                      for a in attachments if is_cosign_signature(a.record())]
        return judge(subjects_of(image), image.ref.name, signatures, self.keys)


def attachment_report(image: ImageRecord, records: list[ImageRecord], signatures: dict[str, str]) -> dict[str, Any]:
    """An image's entry in a ``--json`` report: its signatures' status and the attachments carried."""
    attached = [{"source": r.source, "digest": r.digest, "kind": r.attached_to.kind,
                 "artifact_type": r.attached_to.artifact_type, "subject": r.attached_to.subject}
                for r in attachments_of(image, records) if r.attached_to is not None]
    return {"signatures": signatures.get(image.source), "attachments": attached}


def unsigned(verdict: Verdict) -> IntegrityError:
    """The failure of an image no signature vouches for (the report names the image)."""
    return IntegrityError(f"no valid signature: {verdict_reason(verdict)}")


def _as_image(subject: Reference, location: Location, item: Found) -> ResolvedImage:
    """An attachment as an image of its own: in its subject's repository, under cosign's tag or its digest."""
    ref = Reference(subject.registry, subject.repository, tag=item.tag,
                    digest=None if item.tag else item.manifest.digest)
    return ResolvedImage(ref, location, item.manifest, [], graph.layer_blobs([item.manifest]), [],
                         attached_to=Attached(item.subject, item.kind, item.artifact_type))


# -- push ---------------------------------------------------------------------------------------


async def tag_in_order(delivery: Delivery, bundle: BundleManifest, every_plan: list[ImagePlan],
                       keys: list[Verifier]) -> dict[str, Verdict]:
    """Tag the images (with keys: only those a signature at the target verifies), then their
    attachments, then index the referrers; returns each image's verdict (source -> Verdict)."""
    client = delivery.client
    images = [plan for plan in delivery.plans if not plan.record.is_attachment]
    attached = [plan for plan in delivery.plans if plan.record.is_attachment]
    verdicts: dict[str, Verdict] = {}

    async def check(plan: ImagePlan) -> None:
        verdicts[plan.record.source] = verdict = await _verdict_at_target(client, bundle, plan, keys)
        if keys and verdict.status != VERIFIED:
            delivery.refuse(plan, unsigned(verdict))

    async with anyio.create_task_group() as group:
        for plan in every_plan:
            if not plan.record.is_attachment:
                group.start_soon(check, plan)
    await delivery.tag_all(images)
    for plan in every_plan:  # tagged already (in place), but refused now: a failure all the same
        error = delivery.refused.get(id(plan))
        if error is not None and plan not in delivery.plans:
            delivery.report.fail(plan, error)
    written = {(plan.repository, digest) for plan in every_plan
               if plan.record.source not in delivery.report.failures and not plan.record.is_attachment
               for digest in subjects_of(plan.record) | plan.manifests}
    for plan in attached:
        assert plan.record.attached_to is not None
        if (plan.repository, plan.record.attached_to.subject) not in written:
            delivery.refuse(plan, MirrorError(f"not written: the image it is attached to "
                                              f"({plan.record.attached_to.subject}) was not"))
    await delivery.tag_all(attached)
    await _index_referrers(delivery, attached)
    if delivery.report.causes:
        delivery.report.exit_code = worst_exit_code(delivery.report.causes.values())
    return verdicts


def report_signatures(report: DeliveryReport, bundle: BundleManifest, verdicts: dict[str, Verdict]) -> None:
    """Each image's entry names its signatures' status; each attachment's entry what it is attached to."""
    records = {record.source: record for record in bundle.images}
    for entry in report.images:
        record = records.get(entry["source"])
        if record is not None and record.attached_to is not None:
            entry["attached_to"] = record.attached_to.subject
            entry["kind"] = record.attached_to.kind
        elif entry["source"] in verdicts:
            entry["signatures"] = verdicts[entry["source"]].status


async def _verdict_at_target(client: RegistryClient, bundle: BundleManifest, plan: ImagePlan,
                             keys: list[Verifier]) -> Verdict:
    """The image's signatures as the target holds them now (manifests and payloads read back by digest)."""
    records = [r for r in bundle.attachments_of(plan.record) if is_cosign_signature(r)]
    if not keys:
        return Verdict(PRESENT if records else ABSENT)
    signatures = []
    for record in records:
        try:
            manifest = await client.get_manifest(plan.repository, record.digest)
            signatures.append((manifest, await payloads(client, plan.repository, manifest)))
        except MirrorError:
            continue  # not at the target: judged as absent below, named if nothing else verifies
    return judge(subjects_of(plan.record), Reference.parse(plan.record.source).name, signatures, keys)


async def _index_referrers(delivery: Delivery, attached: list[ImagePlan]) -> None:
    """The referrers written (no tag: pushed by digest) listed where clients look for them."""
    by_subject: dict[tuple[str, str], list[ImagePlan]] = {}
    for plan in attached:
        if plan.tag is None and plan.record.source not in delivery.report.failures:
            assert plan.record.attached_to is not None
            by_subject.setdefault((plan.repository, plan.record.attached_to.subject), []).append(plan)

    async def one(key: tuple[str, str]) -> None:
        repository, subject = key
        try:
            manifests = [delivery.manifests.get(p.record.digest)
                         or await delivery.client.get_manifest(repository, p.record.digest) for p in by_subject[key]]
            await index_referrers(delivery.client, repository, subject, manifests)
        except MirrorError as exc:
            for plan in by_subject[key]:
                delivery.report.failures[plan.record.source] = f"listing it as a referrer of {subject}: {exc}"
                delivery.report.causes[plan.record.source] = exc

    async with anyio.create_task_group() as group:
        for key in by_subject:
            group.start_soon(one, key)


# -- sync ---------------------------------------------------------------------------------------


@dataclass
class Subject:
    """An image sync has in place at the target, whose attachments are to follow it."""

    ref: Reference
    repository: str  # at the target
    digests: list[str]  # what its attachments may be about: its digest (the source's), its platform manifests
    written: list[str] = field(default_factory=list)  # the attachments copied for it (tag, or digest)
    error: MirrorError | None = None


async def signatures_at_source(images: list[ResolvedImage], pool: ClientPool, keys: list[Verifier],
                               jobs: int) -> list[Verdict]:
    """Each image's cosign signatures as its source holds them, judged (a failed lookup is ``invalid``)."""
    verdicts: dict[int, Verdict] = {}

    async def one(item: tuple[int, ResolvedImage]) -> None:
        index, image = item
        signed, repository = subjects_of(image), image.location.repository
        try:
            client = await pool.get(image.location.host)
            found = [f for f in await find(client, repository, sorted(signed)) if f.tag and f.kind == "signature"]
            signatures = [(f.manifest, await payloads(client, repository, f.manifest)) for f in found]
            verdicts[index] = judge(signed, image.ref.name, signatures, keys)
        except MirrorError as exc:
            verdicts[index] = Verdict(INVALID, f"its signatures could not be read: {exc}")

    await each(enumerate(images), one, jobs)
    return [verdicts[i] for i in range(len(images))]


async def copy_attachments(subjects: list[Subject], sources: SourceMap, pool: ClientPool, client: RegistryClient,
                           target: Target, jobs: int,
                           streamed: Callable[[Location, str, int], BlobSource]) -> None:
    """Copy each subject's attachments the target lacks (``streamed`` gives a blob's bytes from its source);
    each subject's ``written`` and ``error`` say what happened."""
    found: list[tuple[Subject, ResolvedImage]] = []
    seen: set[tuple[str, str]] = set()  # (repository, digest): two tags of one image share its attachments

    async def look(subject: Subject) -> None:
        async def have(reference: str, digest: str) -> bool:
            there = await client.head_manifest(subject.repository, reference)
            return there is not None and there.digest == digest

        try:
            location = sources.locate(subject.ref)
            source = await pool.get(location.host)
            for item in await find(source, location.repository, subject.digests, have):
                if (subject.repository, item.manifest.digest) not in seen:
                    seen.add((subject.repository, item.manifest.digest))
                    found.append((subject, _as_image(subject.ref, location, item)))
        except MirrorError as exc:
            subject.error = exc

    await each(subjects, look, jobs)
    if not found:
        return
    plans = [ImagePlan.of(attachment.record(), target.prefix) for _, attachment in found]
    presence = Presence(plans)
    await presence.survey(client, jobs)
    await presence.mount_known(client, jobs)
    delivery = Delivery(target, client, plans, presence, jobs)
    origins = {digest: (attachment.location, size)
               for _, attachment in found for digest, size in attachment.blobs.items()}

    async def place(digest: str) -> None:
        location, size = origins[digest]
        await delivery.place_blob(digest, size, streamed(location, digest, size))

    async with anyio.create_task_group() as group:
        for _, attachment in found:
            if attachment.top.digest not in delivery.manifests:
                delivery.manifest_arrived(attachment.top, group)
        group.start_soon(each, sorted(presence.missing_blobs), place, jobs)
    await delivery.tag_all(plans)
    await _index_referrers(delivery, plans)
    for (subject, attachment), plan in zip(found, plans):
        failure = delivery.report.failures.get(plan.record.source)
        if failure is not None:
            subject.error = subject.error or MirrorError(f"its attachment {plan.target} was not copied: {failure}")
        else:
            subject.written.append(attachment.ref.tag or attachment.top.digest)
