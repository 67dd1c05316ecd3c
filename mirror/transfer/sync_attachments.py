"""sync's attachments: signatures checked at the source, and what the targets lack copied after the images.

An image's attachments (cosign's signatures, attestations and SBOMs, OCI 1.1
referrers; docs/signatures.md) are looked up at its source once its tags
are in place at every target; what a target lacks goes through the
delivery pipeline (pipeline.py) like the images did: one read of each blob
for every target, tags after manifests, referrers indexed last.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..attach.discover import Listings, find, payloads
from ..attach.keys import INVALID, Verdict, Verifier, judge
from ..errors import MirrorError
from ..model.reference import Reference
from ..model.upstream import Location, SourceMap
from ..progress import Progress
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from .attachments import as_image, subjects_of
from .budget import Budget, RateLimited
from .deliver import Delivery
from .pipeline import deliver
from .plan import ImagePlan, Target
from .registry_feed import RegistryFeed
from .resolve import ResolvedImage
from .survey import Presence
from .tasks import each


@dataclass
class Subject:
    """An image sync has in place at a target, whose attachments are to follow it."""

    ref: Reference
    repository: str  # at the target
    digests: list[str]  # what its attachments may be about: its digest (the source's), its platform manifests
    written: list[str] = field(default_factory=list)  # the attachments copied for it (tag, or digest)
    error: MirrorError | None = None
    deferred: str | None = None  # why its attachments wait for the next run: a source's rate limit is spent


@dataclass
class AttachTo:
    """One target's subjects, and the attachments found for them that it lacks."""

    target: Target
    client: RegistryClient
    subjects: list[Subject]
    found: list[tuple[Subject, ResolvedImage]] = field(default_factory=list)


async def signatures_at_source(images: list[ResolvedImage], pool: ClientPool, keys: list[Verifier],
                               jobs: int, budget: Budget) -> list[Verdict | RateLimited]:
    """Each image's cosign signatures as its source holds them, judged (a failed lookup is ``invalid``);
    each manifest GET a pull from ``budget``, and RateLimited for an image it could not pay for."""
    verdicts: dict[int, Verdict | RateLimited] = {}
    listings = Listings()  # each repository's tags listed once

    async def one(item: tuple[int, ResolvedImage]) -> None:
        index, image = item
        signed, repository = subjects_of(image), image.location.repository
        try:
            client = await pool.get(image.location.host)
            paid = functools.partial(budget.get_manifest, client)
            found = [f for f in await find(client, repository, sorted(signed), get=paid, listings=listings)
                     if f.tag and f.kind == "signature"]
            signatures = [(f.manifest, await payloads(client, repository, f.manifest)) for f in found]
            verdicts[index] = judge(signed, image.ref.name, signatures, keys)
        except RateLimited as exc:
            verdicts[index] = exc
        except MirrorError as exc:
            verdicts[index] = Verdict(INVALID, f"its signatures could not be read: {exc}")

    await each(enumerate(images), one, jobs)
    return [verdicts[i] for i in range(len(images))]


async def copy_attachments(targets: list[AttachTo], sources: SourceMap, pool: ClientPool, jobs: int,
                           listings: Listings, budget: Budget) -> None:
    """Copy each subject's attachments its target lacks, every target from one read of each blob;
    each subject's ``written``, ``error`` and ``deferred`` say what happened. ``listings``: the sources'
    tags, listed once for every target (and not again where the job's selections listed them);
    ``budget``: each manifest GET at a source is a pull from it, as the images' were."""
    await each(targets, lambda to: _look_up(to, sources, pool, jobs, listings, budget), len(targets) or 1)
    alone = len(targets) == 1
    deliveries: list[Delivery] = []
    for to in [to for to in targets if to.found]:
        plans = [ImagePlan.of(attachment.record(), to.target.prefix) for _, attachment in to.found]
        presence = Presence(plans)
        try:
            await presence.survey(to.client, jobs)
            await presence.mount_known(to.client, jobs)
        except MirrorError as exc:
            if alone:
                raise
            for subject, _ in to.found:  # this target is gone: the others go on
                subject.error = subject.error or exc
            continue
        deliveries.append(Delivery(to.target, to.client, plans, presence, jobs))
    targets = [to for to in targets if any(d.client is to.client for d in deliveries)]
    if not targets:
        return
    found = [attachment for to in targets for _, attachment in to.found]
    origins: dict[str, tuple[Location, int]] = {
        digest: (attachment.location, size) for attachment in found for digest, size in attachment.blobs.items()}
    subjects = {id(delivery): {(s.repository, d) for s in to.subjects for d in s.digests}
                for to, delivery in zip(targets, deliveries)}
    await deliver(deliveries, RegistryFeed(pool, [a.top for a in found], origins, jobs), Progress(True),
                  in_place=lambda delivery: subjects[id(delivery)])
    for to, delivery in zip(targets, deliveries):
        for (subject, attachment), plan in zip(to.found, delivery.plans):
            failure = delivery.report.failures.get(plan.record.source)
            if failure is not None:
                subject.error = subject.error or MirrorError(
                    f"its attachment {plan.target} was not copied: {failure}")
            else:
                subject.written.append(attachment.ref.tag or attachment.top.digest)


async def _look_up(to: AttachTo, sources: SourceMap, pool: ClientPool, jobs: int, listings: Listings,
                   budget: Budget) -> None:
    """The attachments of ``to``'s subjects that its target lacks (what it has is not fetched)."""
    seen: set[tuple[str, str]] = set()  # (repository, digest): two tags of one image share its attachments

    async def look(subject: Subject) -> None:
        async def have(reference: str, digest: str) -> bool:
            there = await to.client.head_manifest(subject.repository, reference)
            return there is not None and there.digest == digest

        try:
            location = sources.locate(subject.ref)
            source = await pool.get(location.host)
            paid = functools.partial(budget.get_manifest, source)
            for item in await find(source, location.repository, subject.digests, have, paid, listings):
                if (subject.repository, item.manifest.digest) not in seen:
                    seen.add((subject.repository, item.manifest.digest))
                    to.found.append((subject, as_image(subject.ref, location, item)))
        except RateLimited as exc:
            subject.deferred = f"its attachments wait: {exc}"
        except MirrorError as exc:
            subject.error = exc

    await each(to.subjects, look, jobs)
