"""Delta bundles at both ends: what a delta's base holds, and the check a delta push makes first.

Pull (``mirror pull --base FILE``): FILE is an inventory (``mirror inventory``),
a previous bundle, or a bundle's ``mirror-bundle.json``; several are united. A
bundle counts with everything its images reach, its own omitted digests
included: those were its base's, and a bundle is only pushed once its base is
in the registry.

Push: what a delta leaves to its base must already be in the target. Checked
after the survey and before any write. An omitted digest the plans need
counts as present when some repository of the target has it: a planned one
(the survey's HEADs), or, failing that, any repository of the catalog. Blobs
found are mounted where missing; manifests found are copied (GET, then PUT
once their children are there). Anything found nowhere stops the push with
exit 5, one line per digest, before a single byte or tag is written.
Repositories of the catalog the account may not read are skipped (and
counted in the message or a warning), not a reason to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bundle.format import BundleManifest
from ..bundle.reader import BundleReader
from ..errors import AuthError, DeltaBaseMissing, IntegrityError, MirrorError, UsageError
from ..progress import Progress
from ..registry.client import RegistryClient
from .inventory import Inventory, is_inventory, read_base_document
from .plan import ImagePlan, Target
from .survey import Presence
from .tasks import each

# -- pull: what the base holds ------------------------------------------------------------


@dataclass
class Base:
    ids: list[str] = field(default_factory=list)
    digests: set[str] = field(default_factory=set)
    registries: dict[str, str] = field(default_factory=dict)  # inventory id -> HOST[/PREFIX] (several: ", "-joined)
    names: dict[str, str] = field(default_factory=dict)  # id -> the name of the file given (have.json)
    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (created, digest), newest kept

    def add_inventory(self, inventory: Inventory) -> None:
        self._add(inventory.id, inventory.digests)
        self.registries[inventory.id] = inventory.address
        self._name(inventory.created, inventory.images)

    def add_bundle(self, manifest: BundleManifest) -> None:
        self._add(manifest.id, set(manifest.blobs) | {image.digest for image in manifest.images})
        self._name(manifest.created, {image.source: image.digest for image in manifest.images})

    def digest_of(self, source: str) -> str | None:
        """What the newest file given says ``source`` (a tagged reference) points at; None if none names it."""
        known = self.images.get(source)
        return known[1] if known else None

    def _name(self, created: str, images: dict[str, str]) -> None:
        for source, digest in images.items():
            if source not in self.images or self.images[source][0] <= created:
                self.images[source] = (created, digest)

    def _add(self, base_id: str, digests: set[str]) -> None:
        if base_id not in self.ids:
            self.ids.append(base_id)
        self.digests |= digests


def load_base(paths: list[Path], option: str = "--base") -> Base:
    """The union of every FILE; a file that is none of the three, or is damaged, is a UsageError naming
    ``option`` and the file (``mirror prune --keep`` reads the same files)."""
    base = Base()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
        known = len(base.ids)
        _add_file(base, path, option)
        base.names.update({base_id: path.name for base_id in base.ids[known:]})
    return base


def _add_file(base: Base, path: Path, option: str) -> None:
    """One --base (or --keep) FILE, whichever of the three it is, into ``base``."""
    with open(path, "rb") as handle:
        head = handle.read(1)
    if head not in (b"{", b" ", b"\n", b"\t", b"\r"):  # not JSON: a bundle (or its first part)
        try:
            with BundleReader(path) as reader:
                base.add_bundle(reader.manifest)
        except IntegrityError as exc:
            raise UsageError(f"{option} {path}: not an inventory, bundle or mirror-bundle.json ({exc})") from None
        return
    data, doc = read_base_document(path)
    if is_inventory(doc):
        base.add_inventory(Inventory.from_doc(doc, path))
        return
    try:
        base.add_bundle(BundleManifest.from_json(data))
    except IntegrityError as exc:
        raise UsageError(f"{option} {path}: not an inventory or mirror-bundle.json ({exc})") from None


# -- push: the base must be in the target ---------------------------------------------


@dataclass
class BaseSources:
    """Where omitted content not already in place can be taken from, inside the target."""

    blobs: dict[str, str] = field(default_factory=dict)  # blob in no planned repository -> one that has it
    # a manifest missing in some planned repository -> one that has it
    manifests: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the search of the catalog could not look at


def base_warnings(bundle: BundleManifest, target: Target) -> list[str]:
    """Base inventories taken of another registry or prefix than the one pushed to (or of several, none of them it)."""
    return [f"this delta's base inventory {base_id} was taken of {address}, not {target.address}: "
            "it may lack what the bundle leaves out" for base_id, address in sorted(bundle.base_registry.items())
            if str(target.address) not in address.split(", ")]  # an inventory of several names them all


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
