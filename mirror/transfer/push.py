"""``mirror push``: stream a bundle into a registry in one pass, never unpacked.

plan (``mirror-bundle.json``, the bundle's first entry: which repository each
image goes to, what it needs) -> survey (what each registry has; mounts
across repositories) -> the delivery pipeline (pipeline.py), fed by one pass
over the tar (bundle_feed.py: blobs re-hashed and uploaded within a byte
window), every registry at once: manifests after their children, tags last
and only for complete images, attachments after their images.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from ..attach.keys import Verdict, Verifier
from ..bundle.format import BundleManifest
from ..bundle.reader import BundleReader
from ..diskspace import Space
from ..errors import MirrorError
from ..progress import Progress
from ..registry.client import RegistryClient
from ..units import MIB
from .attachments import judge_at_target, report_signatures
from .bundle_feed import BundleFeed
from .deliver import Delivery, DeliveryReport, image_entry
from .delta import base_warnings, require_base
from .pipeline import deliver, subjects_written
from .plan import ImagePlan, Target, plan_images
from .survey import Presence, tagged_in_place
from .tasks import each


@dataclass
class PushRequest:
    bundle: Path
    target: Target
    jobs: int = 16
    window: int = 512 * MIB  # bytes of spool (memory + temp disk) at most
    spool_dir: Path | None = None
    dry_run: bool = False
    space_check: bool = True  # False: --no-space-check
    registry_data_dir: Path | None = None  # the target is the registry `up` manages: its data dir
    verify_keys: list[Verifier] = field(default_factory=list)  # --verify-key, keyless: tag only signed images
    http_transport: httpx.AsyncBaseTransport | None = None  # under every client: tests inject a fake registry
    also: tuple[Target, ...] = ()  # more registries written from the same read of the bundle (docs/ha.md)

    @property
    def targets(self) -> list[Target]:
        return [self.target, *self.also]


@dataclass
class _Prepared:
    """One target surveyed and ready for the bundle's bytes."""

    delivery: Delivery  # its in_hand: manifests a delta omits, from another repository of the target
    in_place: list[ImagePlan]  # tagged already: nothing to do
    every_plan: list[ImagePlan]  # the bundle's records, in place or not: signatures are checked on all


def dry_run(request: PushRequest, target: Target) -> DeliveryReport:
    """What would go where, from the bundle's first entry alone; nothing is contacted."""
    with BundleReader(request.bundle) as reader:
        plans = plan_images(reader.manifest.images, target.prefix)
    report = DeliveryReport(registry=target.host)
    report.images = [image_entry(target, plan) for plan in plans]
    return report


async def push(request: PushRequest, progress: Progress) -> DeliveryReport:
    """Push a whole bundle to ``request.target``. Per-image failures are in the report; setup errors raise."""
    return (await push_all(request, progress))[0]


async def push_all(request: PushRequest, progress: Progress) -> list[DeliveryReport]:
    """Push a whole bundle to every target, reading it once; a report per target, in order.

    With one target, setup errors (refused login, unreachable registry) raise; with several, they end
    that target's report and the others go on.
    """
    if request.dry_run:
        return [dry_run(request, target) for target in request.targets]
    reader = await anyio.to_thread.run_sync(BundleReader, request.bundle)
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(
                RegistryClient(target.host, target.settings, http_transport=request.http_transport))
                for target in request.targets]
            return await _push(request, reader, clients, progress)
    finally:
        reader.close()


async def _push(request: PushRequest, reader: BundleReader, clients: list[RegistryClient],
                progress: Progress) -> list[DeliveryReport]:
    targets = request.targets
    prepared: list[_Prepared | DeliveryReport] = [DeliveryReport(registry=t.host) for t in targets]

    async def prepare(index: int) -> None:
        try:
            prepared[index] = await _prepare(request, targets[index], reader, clients[index], progress)
        except MirrorError as exc:
            if len(targets) == 1:
                raise
            prepared[index] = _failed(targets[index], reader, exc)

    await each(range(len(targets)), prepare, len(targets))
    ready = {id(p.delivery): p for p in prepared if isinstance(p, _Prepared)}
    verdicts: dict[int, dict[str, Verdict]] = {}

    async def judge(delivery: Delivery) -> None:
        verdicts[id(delivery)] = await judge_at_target(delivery, reader.manifest, ready[id(delivery)].every_plan,
                                                       request.verify_keys)

    def in_place(delivery: Delivery) -> set[tuple[str, str]]:
        return subjects_written(ready[id(delivery)].in_place, delivery.report.failures)

    await deliver([p.delivery for p in ready.values()], BundleFeed(reader, request.window, request.spool_dir),
                  progress, before_tags=judge, in_place=in_place)
    for p in ready.values():  # the ones in place listed; every image's signatures said
        report = p.delivery.report
        report.images += [{**image_entry(p.delivery.target, plan), "change": "unchanged"} for plan in p.in_place
                          if plan.record.source not in report.failures]
        report_signatures(report, reader.manifest, verdicts[id(p.delivery)])
    return [p.delivery.report if isinstance(p, _Prepared) else p for p in prepared]


async def _prepare(request: PushRequest, target: Target, reader: BundleReader, client: RegistryClient,
                   progress: Progress) -> _Prepared:
    """Survey one target: what it has, what it can mount, what the bundle must still send it."""
    manifest = reader.manifest
    await client.ping()
    every_plan = plan_images(manifest.images, target.prefix)
    in_place = await tagged_in_place(client, every_plan, request.jobs)
    done = {id(plan) for plan in in_place}
    plans = [plan for plan in every_plan if id(plan) not in done]
    presence = Presence(plans)
    await presence.survey(client, request.jobs)
    sources = await require_base(client, manifest, plans, presence, request.jobs, progress)  # before any write
    delivery = Delivery(target, client, plans, presence, request.jobs)
    delivery.report.kind, delivery.report.base = manifest.kind, list(manifest.base)
    delivery.report.warnings = base_warnings(manifest, target) + sources.warnings
    delivery.report.present_blobs = len(presence.blob_repos) - len(presence.missing_blobs)
    delivery.report.mounted_blobs = await presence.mount_known(client, request.jobs, sources.blobs)
    to_upload = presence.missing_blobs
    _refuse_omitted(target, reader, presence, to_upload)
    if request.space_check:  # before any upload; the data dir is the first target's (the registry `up` manages)
        _check_space(request, manifest, to_upload, presence,
                     request.registry_data_dir if target is request.target else None)
    delivery.to_upload = to_upload
    delivery.in_hand = [await client.get_manifest(repository, digest)
                        for digest, repository in sources.manifests.items()]
    return _Prepared(delivery, in_place, every_plan)


def _failed(target: Target, reader: BundleReader, error: MirrorError) -> DeliveryReport:
    """The report of a target that failed before anything was written: every image, one reason."""
    report = DeliveryReport(registry=target.host, exit_code=error.exit_code)
    for plan in plan_images(reader.manifest.images, target.prefix):
        report.fail(plan, error)
    return report


def _check_space(request: PushRequest, manifest: BundleManifest, to_upload: set[str], presence: Presence,
                 registry_data_dir: Path | None) -> None:
    """NoRoom (exit 2) when the spool cannot hold what it may hold at once (the window, or the blobs it will
    spool when they are fewer; larger ones are streamed through), or the data dir of the registry `up`
    manages what will be uploaded into it."""
    sizes = [manifest.blobs.get(digest, 0) for digest in to_upload]
    space = Space("this push")
    spool = request.spool_dir or Path(tempfile.gettempdir())
    space.where(spool, "the push spool", "free some, or pass --spool-dir elsewhere or a smaller --window").add(
        min(request.window, sum(size for size in sizes if size <= request.window)))
    if registry_data_dir is not None:
        manifests = [digest for digest, repositories in presence.manifest_repos.items()
                     if any(not presence[digest, repository].ok for repository in repositories)]
        space.where(registry_data_dir, "the registry's data dir", "free some there").add_files(
            [*sizes, *(manifest.blobs.get(digest, 0) for digest in manifests)])
    space.check()


def _refuse_omitted(target: Target, reader: BundleReader, presence: Presence, to_upload: set[str]) -> None:
    """Blobs a delta bundle leaves out must already be in the registry; fail their images if not."""
    omitted = set(reader.manifest.omitted)
    for digest in to_upload & omitted:
        presence.fail_blob(digest, MirrorError(
            f"blob {digest} is left out of this delta bundle (its base is {', '.join(reader.manifest.base)}) "
            f"but {target.host} does not have it, and mounting it failed"))
    to_upload -= omitted
