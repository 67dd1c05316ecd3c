"""``mirror sync run --to-bundle``: a sync job for a true air gap, as one delta bundle per run.

The images are chosen as a registry-to-registry run chooses them (the same
``wanted_images``: listed tags through the entries' rules). What the bastion
holds is known only from what came out of it (inventories, bundles: the
``Base``); pull's delta writer then makes ONE bundle of the images, leaving
out every manifest and blob the base has, or writes nothing when the base
holds them all. Per image the report says what the bundle brings the
bastion: ``copied`` (the base lacks the tag), ``updated`` (the base has the
tag on another image) or ``unchanged``. A tag matching its entry's
``immutable`` patterns that the base already has is not asked upstream at
all, and so is not in the bundle.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..clock import utc_now
from ..errors import ImagesFailed, MirrorError
from ..model.reference import Reference
from ..model.target import RegistryAddress, target_repository
from ..progress import Progress
from ..registry.pool import ClientPool
from ..runlock import RunLock
from .delta import Base, load_base
from .pull import PullRequest, pull
from .resolve import Resolver
from .sync import wanted_images
from .sync_result import ImageResult, SyncRequest, SyncResult

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"


def bad_name(name: str) -> bool:
    """Whether ``name`` cannot begin a bundle's file name: a '/' or '..' would write outside DIR."""
    return not _NAME.fullmatch(name)


@dataclass(frozen=True)
class BundleTarget:
    """Where a bundle job writes (``DIR/<name>-<UTC time>.tar.zst``) and what it is a delta against."""

    directory: Path
    base: list[Path]  # inventories or bundles of the bastion; the newest says what each tag points at
    name: str = "mirror"

    def output(self) -> Path:
        stamp = utc_now().replace("-", "").replace(":", "")  # 20261130T020000Z
        return (self.directory / f"{self.name}-{stamp}.tar.zst").absolute()

    def lock(self) -> RunLock:
        """One run at a time per bundle directory, whichever config or flags name it."""
        return RunLock(f"sync -> bundles in {self.directory.resolve()}", f"sync to {self.directory}")


def _source(ref: Reference) -> str:
    """The reference as inventories and bundles name it (a tag without its digest)."""
    return str(ref.with_digest(None)) if ref.tag else str(ref)


async def sync_to_bundle(request: SyncRequest, bundle: BundleTarget, progress: Progress,
                         topology: dict[str, Any] | None = None) -> SyncResult:
    """One run. Per-image outcomes are in the result; a bad base or an unreachable source raises."""
    base = load_base(bundle.base)
    result = SyncResult(str(bundle.directory), uuid.uuid4().hex, utc_now(), config_sha256=request.config_sha256,
                        dry_run=request.dry_run)
    result.delta = {"path": None, "size": None, "sha256": None, "parts": [], "base": list(base.ids), "omitted": 0}
    where = _landing(base)
    async with ClientPool(request.settings_for, request.http_transport) as pool:
        wanted = await wanted_images(request, pool)
    result.skipped_tags = wanted.skipped
    for repository, exc in wanted.unlisted:
        entry = ImageResult(repository.name, where(repository))
        entry.fail(exc)
        result.images.append(entry)
    pending: list[ImageResult] = []
    for image in wanted.images:
        entry = ImageResult(str(image.ref), where(image.ref), image=image)
        entry.old_digest = base.digest_of(_source(image.ref)) if image.ref.tag else None
        if entry.old_digest is not None and image.immutable:
            entry.action, entry.new_digest = "unchanged", entry.old_digest
        else:
            pending.append(entry)
        result.images.append(entry)
    if wanted.unlisted and not request.keep_going:
        _not_written(pending)
    elif pending and request.dry_run:
        await _resolve_only(request, pending, progress)
    elif pending:
        await _write(request, bundle, base, pending, result, progress, topology)
    result.ended = utc_now()
    return result


def _landing(base: Base) -> Callable[[Reference], str]:
    """Where an image lands when the bundle is pushed to the registry the base came from (if it names one)."""
    registries = {address for named in base.registries.values() for address in named.split(", ")}  # several: each
    if len(registries) != 1:
        return _source
    address = RegistryAddress.parse(registries.pop(), "--base")

    def where(ref: Reference) -> str:
        identifier = f":{ref.tag}" if ref.tag else f"@{ref.digest}" if ref.digest else ""
        return f"{address.host}/{target_repository(ref, address.prefix)}{identifier}"

    return where


def _judge(entry: ImageResult, digest: str) -> None:
    entry.new_digest = digest
    entry.action = "unchanged" if entry.old_digest == digest else "updated" if entry.old_digest else "copied"


def _not_written(pending: list[ImageResult]) -> None:
    for entry in pending:
        if entry.action == "pending":
            entry.fail("not written: another image failed before the bundle was made (--keep-going writes the rest)")


async def _resolve_only(request: SyncRequest, pending: list[ImageResult], progress: Progress) -> None:
    """--dry-run: the manifests say what the bundle would bring; nothing is downloaded or written."""
    async with ClientPool(request.settings_for, request.http_transport) as pool:
        resolver = Resolver(pool, request.sources, request.platforms, request.jobs)
        resolution = await resolver.resolve_all([e.image.ref for e in pending if e.image], progress)
    digests = {_source(image.ref): image.top.digest for image in resolution.images}
    for entry in pending:
        assert entry.image is not None
        key = str(entry.image.ref)
        if key in resolution.causes:
            entry.fail(resolution.causes[key])
        else:
            _judge(entry, digests[_source(entry.image.ref)])


async def _write(request: SyncRequest, bundle: BundleTarget, base: Base, pending: list[ImageResult],
                 result: SyncResult, progress: Progress, topology: dict[str, Any] | None) -> None:
    refs = [entry.image.ref for entry in pending if entry.image]
    pulled = PullRequest(images=refs, output=bundle.output(), sources=request.sources,
                         settings_for=request.settings_for, platforms=request.platforms, jobs=request.jobs,
                         keep_going=request.keep_going, topology=topology, base=base, only_if_changed=True,
                         attachments=request.attachments, verify_keys=request.verify_keys,
                         http_transport=request.http_transport)
    try:
        written = await pull(pulled, progress)
    except ImagesFailed as exc:  # without --keep-going: nothing was written
        failures, causes, digests = exc.failures, exc.causes, {}
    else:
        failures, causes = written.failures, {}
        digests = {record.source: record.digest for record in written.images}
        if written.bundle is not None:
            assert result.delta is not None
            result.delta.update(written.bundle.to_json(), omitted=written.omitted)
    for entry in pending:
        assert entry.image is not None
        key = str(entry.image.ref)
        if key in failures:
            entry.fail(causes.get(key) or MirrorError(failures[key]))
            entry.error = failures[key]
        elif _source(entry.image.ref) in digests:
            _judge(entry, digests[_source(entry.image.ref)])
    _not_written(pending)
