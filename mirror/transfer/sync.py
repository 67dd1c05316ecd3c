"""``mirror sync``: copy images from their sources straight into target registries.

check (HEAD the tag at every target and once at the source: HEADs do not
count against Docker Hub's rate limit; an image whose tag already has the
source's digest costs those HEADs and nothing else) -> resolve (GET the
manifests of what changed, once for every target, with the Resolver pull
uses; on a source that stated ``ratelimit-remaining`` each GET is a pull
paid through budget.py, its images in the job's order: what does not fit is
deferred to the next run) -> deliver (the delivery pipeline, pipeline.py: one
Presence per target over its plans; each blob streamed once from its source
into every target that lacks it, re-hashed on the way and never on disk
(registry_feed.py), uploaded once per target and mounted into its other
repositories; manifests after their children; retag backups; tags last,
only on complete images) -> attachments (sync_attachments.py) -> prune
(entries with ``prune: true``: the tags of their repositories no entry
selects any more, with ``transfer/prune.py``; only where every wanted image
of the repository is in, so a failed copy never leaves a repository with
fewer versions than before).

Each target has its own result (sync_target.py); one that fails (out of
reach, refusing writes) fails alone and the others go on.
"""

from __future__ import annotations

import contextlib
import uuid

from ..attach.discover import Listings
from ..attach.keys import VERIFIED
from ..clock import utc_now
from ..errors import MirrorError, NotFoundError
from ..progress import Progress
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.ratelimit import RateLimit
from ..model.reference import Reference
from .attachments import unsigned
from .budget import Budget, RateLimited
from .pipeline import deliver
from .registry_feed import RegistryFeed
from .resolve import ResolvedImage, Resolver
from .selection import SkippedTags, SyncImage
from .sync_attachments import copy_attachments, signatures_at_source
from .sync_kit import sync_kit
from .sync_result import ImageResult, SyncRequest, SyncResult, Wanted
from .sync_target import TargetRun
from .tasks import each


async def wanted_images(request: SyncRequest, pool: ClientPool) -> Wanted:
    """The job's images: those it names, then each selection's tags as listed now."""
    images: dict[Reference, SyncImage] = {}
    for image in request.images:
        images.setdefault(image.ref, image)
    unlisted: list[tuple[Reference, MirrorError]] = []
    skipped: list[SkippedTags] = []
    listings = Listings()
    for selection in request.selections:
        try:
            listed = await selection.list_tags(pool, request.sources)
        except MirrorError as exc:
            unlisted.append((selection.repository, exc))
            continue
        location = request.sources.locate(selection.repository)
        listings.record(location.host, location.repository, listed)
        chosen, bad = selection.select(listed)  # a config mistake found on these tags ends the run (exit 2)
        for image in chosen:
            images.setdefault(image.ref, image)
        skipped += [bad] if bad else []
    return Wanted(list(images.values()), unlisted, skipped, listings)


async def sync(request: SyncRequest, progress: Progress) -> SyncResult:
    """One run into ``request.target``. Per-image outcomes are in the result; setup errors (target
    unreachable, auth) raise."""
    return (await sync_all(request, progress))[0]


async def sync_all(request: SyncRequest, progress: Progress) -> list[SyncResult]:
    """One run into every target of the request, the sources read once for all; a result per target, in order.

    With one target, setup errors raise; with several, they fail that target's images and the others go on.
    """
    targets = request.targets
    assert targets, "a job without a target registry writes bundles (sync_bundle)"
    run_id, started = uuid.uuid4().hex, utc_now()
    async with ClientPool(request.settings_for, request.http_transport) as pool, \
            contextlib.AsyncExitStack() as stack:
        runs = [TargetRun(request, target, await stack.enter_async_context(
                    RegistryClient(target.host, target.settings, http_transport=request.http_transport)),
                    SyncResult(str(target.address), run_id, started, config_sha256=request.config_sha256,
                               dry_run=request.dry_run))
                for target in targets]
        unreached = await _reach(runs)
        wanted = await wanted_images(request, pool)
        for run in runs:
            run.add(wanted)
            if id(run) in unreached:
                run.fail_pending(unreached[id(run)])
        await SyncRun(request, [run for run in runs if id(run) not in unreached], pool, progress).run(wanted)
        await sync_kit(request, runs, unreached, progress)  # the charts and files after the images (sync_kit.py)
    for run in runs:
        run.result.ended = utc_now()
    return [run.result for run in runs]


async def _reach(runs: list[TargetRun]) -> dict[int, MirrorError]:
    """Each target answering, or why not (id(run) -> error); one target alone raises."""
    if len(runs) == 1:
        await runs[0].client.ping()
        return {}
    unreached: dict[int, MirrorError] = {}

    async def one(run: TargetRun) -> None:
        try:
            await run.client.ping()
        except MirrorError as exc:
            unreached[id(run)] = exc

    await each(runs, one, len(runs))
    return unreached


class SyncRun:
    """The sources' side of one run, read once for every target; ``runs`` are the targets reached."""

    def __init__(self, request: SyncRequest, runs: list[TargetRun], pool: ClientPool, progress: Progress):
        self.request, self.runs, self.pool, self.progress = request, runs, pool, progress
        self.count = len(runs[0].result.images) if runs else 0
        self.ratelimits: dict[str, RateLimit] = {}  # shared by every target's result
        self.listings = Listings()  # the sources' tags, as the job's selections listed them (run)
        self.probes: dict[str, tuple[str, str]] = {}  # host -> the HEAD that stated its lowest ratelimit
        # the sources' rate limits: the images' manifests pay from it, then their attachments'
        self.budget = Budget(pool, wait=request.wait_for_limit, log=request.log)
        for run in runs:
            run.result.ratelimits = self.ratelimits

    def entries(self, index: int) -> list[ImageResult]:
        """The image's entry at every target."""
        return [run.result.images[index] for run in self.runs]

    def pending(self, index: int) -> list[tuple[TargetRun, ImageResult]]:
        return [(run, entry) for run, entry in zip(self.runs, self.entries(index)) if entry.action == "pending"]

    async def run(self, wanted: Wanted) -> None:
        request = self.request
        self.listings = wanted.listings
        await self.check()
        if not request.dry_run:
            await self.resolve()
            if request.verify_keys:
                await self.verify()
            writing = [run for run in self.runs
                       if request.keep_going or not any(i.action == "failed" for i in run.result.images)]
            for run in self.runs:
                if run not in writing:
                    run.fail_pending("not copied: another image failed before anything was written "
                                     "(--keep-going copies the rest)")
            await self.deliver(writing)
            if request.attachments:
                await self.attach(writing)
        await each(self.runs, lambda run: run.prune(wanted), len(self.runs) or 1)

    # -- check: a HEAD per image at each end ---------------------------------------

    async def check(self) -> None:
        async def one(index: int) -> None:
            entries = self.entries(index)
            if entries[0].image is None:  # an entry whose tags could not be listed
                return
            for run, entry in zip(self.runs, entries):
                try:
                    await run.head(entry)
                except MirrorError as exc:
                    entry.fail(exc)
            checking = [entry for entry in entries if entry.action == "pending"]
            try:
                if checking:
                    await self._head_source(checking)
            except MirrorError as exc:
                for entry in checking:
                    entry.fail(exc)
            for run, entry in self.pending(index):
                run.judge(entry)
            bar.update(1)

        with self.progress.bar(self.count, "checking", unit="img") as bar:
            await each(range(self.count), one, self.request.jobs)
        if self.request.dry_run:
            for run in self.runs:
                for image in run.result.images:
                    if image.action == "pending":
                        image.action = "updated" if image.old_digest else "copied"

    async def _head_source(self, entries: list[ImageResult]) -> None:
        image = entries[0].image
        assert image is not None
        ref = image.ref
        location = self.request.sources.locate(ref)
        source = await self.pool.get(location.host)
        upstream = await source.head_manifest(location.repository, ref.identifier)
        limit = RateLimit.parse(source.last_ratelimit)
        if limit is not None:
            allowed = RateLimit.parse(source.last_ratelimit_limit)
            limit.limit = allowed.remaining if allowed else None
            known = self.ratelimits.get(location.host)
            if known is None or limit.remaining < known.remaining:
                self.ratelimits[location.host] = limit
                self.probes[location.host] = (location.repository, ref.identifier)
        if upstream is None:
            raise NotFoundError(f"{ref}: not found at {location.host}/{location.repository}")
        for entry in entries:
            entry.source_head, entry.new_digest = upstream, upstream.digest

    # -- resolve: GET the manifests of what changed, once ------------------------------

    async def resolve(self) -> None:
        """Each manifest GET a pull from its source's budget (budget.py), the job's images in order."""
        request = self.request
        budget = self.budget
        for host, stated in self.ratelimits.items():
            budget.stated(host, self.probes[host], stated)
        resolver = Resolver(self.pool, request.sources, request.platforms, request.jobs, store=None, budget=budget)

        def host_of(index: int) -> str:
            image = self.entries(index)[0].image
            assert image is not None
            return request.sources.locate(image.ref).host

        async def one(index: int) -> None:
            pending = self.pending(index)
            if not pending:
                return
            image = pending[0][1].image
            assert image is not None
            try:
                resolved = await resolver.resolve(image.ref)
            except RateLimited as exc:
                for _, entry in pending:
                    entry.action, entry.error = "deferred", _deferral(budget, exc.host)
                return
            except MirrorError as exc:
                for _, entry in pending:
                    entry.fail(exc)
                return
            for run, entry in pending:
                run.resolved(entry, resolved)

        changed = [i for i in range(self.count) if self.pending(i)]
        await budget.in_order(changed, host_of, one, request.jobs)

    async def verify(self) -> None:
        """An image about to be copied or updated must carry a signature a verifier vouches for, read
        from its source (by digest); one that does not fails before anything of it is written."""
        waiting = [[entry for _, entry in self.pending(i) if entry.resolved] for i in range(self.count)]
        waiting = [entries for entries in waiting if entries]
        images: list[ResolvedImage] = [entries[0].resolved for entries in waiting if entries[0].resolved]
        verdicts = await signatures_at_source(images, self.pool, self.request.verify_keys, self.request.jobs,
                                              self.budget)
        for entries, verdict in zip(waiting, verdicts):
            for entry in entries:
                if isinstance(verdict, RateLimited):  # its signatures could not be read: neither copied nor failed
                    entry.action, entry.error = "deferred", _deferral(self.budget, verdict.host)
                    continue
                entry.signatures = verdict.status
                if verdict.status != VERIFIED:
                    entry.fail(unsigned(verdict))

    # -- deliver: every target from one read of the sources -----------------------------

    async def deliver(self, runs: list[TargetRun]) -> None:
        deliveries = []
        for run in runs:
            try:
                delivery = await run.prepare()
            except MirrorError as exc:
                if len(self.runs) == 1:
                    raise
                run.fail_pending(exc)  # this target is gone: the others go on
                continue
            if delivery is not None:
                deliveries.append(delivery)
        if not deliveries:
            return
        images = {id(entry.resolved): entry.resolved for run in runs for entry in run.to_copy() if entry.resolved}
        origins = {}
        for image in images.values():
            for digest, size in image.blobs.items():
                origins.setdefault(digest, (image.location, size))
        manifests = [manifest for image in images.values() for manifest in image.manifests]
        by_delivery = {id(run.delivery): run for run in runs if run.delivery is not None}
        await deliver(deliveries, RegistryFeed(self.pool, manifests, origins, self.request.jobs), self.progress,
                      "copying", before_tags=lambda delivery: by_delivery[id(delivery)].backups(delivery))
        for run in runs:
            run.delivered()

    async def attach(self, runs: list[TargetRun]) -> None:
        """After the images' tags: the attachments each target lacks of every image in place there
        (docs/signatures.md); an unchanged image that gained one is ``attached``."""
        await copy_attachments([run.attach_to() for run in runs], self.request.sources, self.pool,
                               self.request.jobs, self.listings, self.budget)
        for run in runs:
            run.attached()


def _deferral(budget: Budget, host: str) -> str:
    """Why an image waits: ``HOST's rate limit is spent (its window is W s); the next run copies it``."""
    allowance = budget.allowances.get(host)
    window = allowance.stated.window if allowance and allowance.stated else None
    return f"{host}'s rate limit is spent" + (f" (its window is {window} s)" if window else "") + \
        "; the next run copies it"
