"""Pushing a delta bundle: what it leaves to its base must already be in the target.

Checked after the survey and before any write. An omitted digest the plans
need counts as present when some repository of the target has it: a planned
one (the survey's HEADs), or, failing that, any repository of the catalog.
Blobs found are mounted where missing; manifests found are copied (GET, then
PUT once their children are there). Anything found nowhere stops the push
with exit 5, one line per digest, before a single byte or tag is written.
Repositories of the catalog the account may not read are skipped (and
counted in the message or a warning), not a reason to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bundle.format import BundleManifest
from ..errors import AuthError, DeltaBaseMissing, MirrorError
from ..progress import Progress
from ..registry.client import RegistryClient
from .plan import ImagePlan, Target
from .survey import Presence
from .tasks import each


@dataclass
class BaseSources:
    """Where omitted content not already in place can be taken from, inside the target."""

    blobs: dict[str, str] = field(default_factory=dict)  # blob in no planned repository -> one that has it
    # a manifest missing in some planned repository -> one that has it
    manifests: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the search of the catalog could not look at


def base_warnings(bundle: BundleManifest, target: Target) -> list[str]:
    """Base inventories taken of another registry or prefix than the one pushed to."""
    return [f"this delta's base inventory {base_id} was taken of {address}, not {target.address}: "
            "it may lack what the bundle leaves out" for base_id, address in sorted(bundle.base_registry.items())
            if address != str(target.address)]


async def require_base(client: RegistryClient, bundle: BundleManifest, plans: list[ImagePlan],
                       presence: Presence, jobs: int, progress: Progress) -> BaseSources:
    """Find every omitted digest the plans need in the target, or raise DeltaBaseMissing."""
    sources = BaseSources()
    unresolved: list[tuple[str, bool]] = []
    for digest in sorted(set(bundle.omitted)):
        is_manifest = digest in presence.manifest_repos
        repositories = presence.manifest_repos[digest] if is_manifest else presence.blob_repos.get(digest, [])
        have = [r for r in repositories if presence[digest, r].ok]
        if not repositories or len(have) == len(repositories):
            continue
        if not have:
            unresolved.append((digest, is_manifest))
        elif is_manifest:
            sources.manifests[digest] = have[0]
        # a blob in some planned repository is mounted into the rest by Presence.mount_known
    unreadable: set[str] = set()
    if unresolved:
        found = await _search_catalog(client, unresolved, {p.repository for p in plans}, unreadable, jobs,
                                      progress)
        for digest, is_manifest in unresolved:
            if digest in found:
                (sources.manifests if is_manifest else sources.blobs)[digest] = found[digest]
    skipped = f"this account may not read {len(unreadable)} of its catalog's repositories: skipped" \
        if unreadable else ""
    missing = [digest for digest, _ in unresolved if digest not in sources.blobs and digest not in sources.manifests]
    if missing:
        base = bundle.describe_base()
        reasons = {digest: f"needed by {', '.join(_users(plans, digest))}; expected from base {base}"
                   for digest in missing}
        raise DeltaBaseMissing(
            f"{len(missing)} digest(s) this delta bundle leaves to its base {base} are not in {client.host}"
            f"{f' ({skipped})' if skipped else ''}: nothing was written; push the base (or a full bundle) first, "
            "or pull a delta against an inventory of this registry", reasons)
    if skipped:
        sources.warnings.append(f"searching {client.host} for what this delta leaves to its base: {skipped}")
    return sources


async def _search_catalog(client: RegistryClient, wanted: list[tuple[str, bool]], searched: set[str],
                          unreadable: set[str], jobs: int, progress: Progress) -> dict[str, str]:
    """Which repository outside ``searched`` holds each digest.

    One digest at a time, its HEADs ``jobs`` at once: once one is missing everywhere the push is
    refused anyway, so the search stops there (bounded on a large registry of the wrong base). The
    likeliest repositories go first: the planned ones' names under another prefix (a base pushed
    with --prefix old), then where the last digest was found. A catalog lists repositories the
    account may not read: those refusing it (AuthError) go to ``unreadable`` and are asked nothing
    more.
    """
    try:
        repositories = [r for r in await client.catalog() if r not in searched]
    except MirrorError:
        return {}  # a registry may refuse its catalog: then only the planned repositories count
    names = {repository.rsplit("/", 1)[-1] for repository in searched}
    repositories.sort(key=lambda r: (not any(r == s or r.endswith("/" + s) for s in searched),
                                     r.rsplit("/", 1)[-1] not in names))
    found: dict[str, str] = {}
    with progress.bar(len(wanted), f"searching {client.host}'s catalog for what the base holds", "digests") as bar:
        for digest, is_manifest in wanted:
            if found:  # bases cluster: where the last one was is likely where this one is
                last = next(reversed(found.values()))
                repositories.remove(last)
                repositories.insert(0, last)
            holder = await _holder(client, digest, is_manifest, repositories, unreadable, jobs)
            if holder is None:
                return found
            found[digest] = holder
            bar.update(1)
    return found


async def _holder(client: RegistryClient, digest: str, is_manifest: bool, repositories: list[str],
                  unreadable: set[str], jobs: int) -> str | None:
    """The first of ``repositories`` (asked ``jobs`` at a time) that holds ``digest``, or None."""
    async def holds(repository: str) -> bool:
        try:
            if is_manifest:
                return await client.head_manifest(repository, digest) is not None
            return await client.blob_size(repository, digest) is not None
        except AuthError:
            unreadable.add(repository)
            return False

    readable = [r for r in repositories if r not in unreadable]
    for start in range(0, len(readable), jobs):
        batch = readable[start:start + jobs]
        answers: dict[str, bool] = {}

        async def ask(repository: str) -> None:
            answers[repository] = await holds(repository)

        await each(batch, ask, jobs)
        holders = [r for r in batch if answers[r]]
        if holders:
            return holders[0]
    return None


def _users(plans: list[ImagePlan], digest: str) -> list[str]:
    return sorted({plan.record.source for plan in plans if digest in plan.blobs or digest in plan.manifests})
