"""``mirror push``: stream a bundle into a registry in one pass, never unpacked.

plan (``mirror-bundle.json``, the bundle's first entry: which repository each
image goes to, what it needs) -> survey (what the registry has; mounts
across repositories) -> feed (one pass over the tar, blobs re-hashed and
uploaded within a byte window) -> deliver (manifests after their children,
tags last and only for complete images).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from ..attach.keys import Verifier
from ..bundle.reader import BundleReader
from ..errors import MirrorError
from ..progress import Progress
from ..registry.client import RegistryClient
from .attachments import report_signatures, tag_in_order
from .delta import base_warnings, require_base
from .deliver import Delivery, DeliveryReport, image_entry
from .plan import Target, plan_images
from ..units import MIB
from .bundle_feed import BundleFeed
from .survey import Presence, tagged_in_place


@dataclass
class PushRequest:
    bundle: Path
    target: Target
    jobs: int = 16
    window: int = 512 * MIB  # bytes of spool (memory + temp disk) at most
    spool_dir: Path | None = None
    dry_run: bool = False
    verify_keys: list[Verifier] = field(default_factory=list)  # --verify-key, keyless: tag only signed images
    http_transport: httpx.AsyncBaseTransport | None = None  # under every client: tests inject a fake registry


def dry_run(request: PushRequest) -> DeliveryReport:
    """What would go where, from the bundle's first entry alone; nothing is contacted."""
    with BundleReader(request.bundle) as reader:
        plans = plan_images(reader.manifest.images, request.target.prefix)
    report = DeliveryReport(registry=request.target.host)
    report.images = [image_entry(request.target, plan) for plan in plans]
    return report


async def push(request: PushRequest, progress: Progress) -> DeliveryReport:
    """Push a whole bundle. Per-image failures are in the report; setup errors raise."""
    if request.dry_run:
        return dry_run(request)
    reader = await anyio.to_thread.run_sync(BundleReader, request.bundle)
    try:
        async with RegistryClient(request.target.host, request.target.settings,
                                  http_transport=request.http_transport) as client:
            return await _push(request, reader, client, progress)
    finally:
        reader.close()


async def _push(request: PushRequest, reader: BundleReader, client: RegistryClient,
                progress: Progress) -> DeliveryReport:
    manifest = reader.manifest
    await client.ping()
    every_plan = plan_images(manifest.images, request.target.prefix)
    in_place = await tagged_in_place(client, every_plan, request.jobs)
    done = {id(plan) for plan in in_place}
    plans = [plan for plan in every_plan if id(plan) not in done]
    presence = Presence(plans)
    await presence.survey(client, request.jobs)
    sources = await require_base(client, manifest, plans, presence, request.jobs, progress)  # before any write
    delivery = Delivery(request.target, client, plans, presence, request.jobs)
    delivery.report.kind, delivery.report.base = manifest.kind, list(manifest.base)
    delivery.report.warnings = base_warnings(manifest, request.target) + sources.warnings
    delivery.report.present_blobs = len(presence.blob_repos) - len(presence.missing_blobs)
    delivery.report.mounted_blobs = await presence.mount_known(client, request.jobs, sources.blobs)
    to_upload = presence.missing_blobs
    _refuse_omitted(request, reader, presence, to_upload)
    copies = [await client.get_manifest(repository, digest) for digest, repository in sources.manifests.items()]
    if to_upload or presence.missing_manifests:
        spool_dir = Path(tempfile.mkdtemp(prefix="mirror-push-", dir=request.spool_dir))
        try:
            pending = sum(manifest.blobs.get(d, 0) for d in to_upload)
            with progress.bar(pending, "uploading") as bar:
                delivery.progress = bar.update
                async with anyio.create_task_group() as group:
                    for copy in copies:  # omitted manifests, from another repository of the target
                        delivery.manifest_arrived(copy, group)
                    await BundleFeed(reader, delivery, to_upload, request.window, spool_dir).run()
        finally:
            shutil.rmtree(spool_dir, ignore_errors=True)
    verdicts = await tag_in_order(delivery, manifest, every_plan, request.verify_keys)
    delivery.report.images += [{**image_entry(request.target, plan), "change": "unchanged"} for plan in in_place
                               if plan.record.source not in delivery.report.failures]
    report_signatures(delivery.report, manifest, verdicts)
    return delivery.report


def _refuse_omitted(request: PushRequest, reader: BundleReader, presence: Presence, to_upload: set[str]) -> None:
    """Blobs a delta bundle leaves out must already be in the registry; fail their images if not."""
    omitted = set(reader.manifest.omitted)
    for digest in to_upload & omitted:
        presence.fail_blob(digest, MirrorError(
            f"blob {digest} is left out of this delta bundle (its base is {', '.join(reader.manifest.base)}) "
            f"but {request.target.host} does not have it, and mounting it failed"))
    to_upload -= omitted
