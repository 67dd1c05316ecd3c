"""``mirror inventory``: what a registry really holds, as a small file to carry back across the gap.

The disconnected side writes it; the connected side's ``mirror pull --base``
reads it and leaves out of the next bundle every blob and manifest it lists.
The id is a sha256 over the content (registry, prefix, images, digests), so
two inventories of the same registry state have the same id whenever they
were taken; a file whose id does not match its content is refused.

Without a selection every repository of the catalog is read; its name is
mapped back to the source image (``model.target.source_name``), and
repositories that mirror did not lay out (outside the prefix, or names
``target_repository`` never produces) are left out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..clock import utc_now
from ..errors import MirrorError, NotFoundError, UsageError
from ..model import graph
from ..model.oci import Descriptor, digest_hex
from ..model.reference import Reference
from ..model.target import RegistryAddress, source_name, target_repository
from ..registry.client import RegistryClient
from .plan import Target
from .tasks import each

INVENTORY_FORMAT = 1
INVENTORY_KIND = "mirror-inventory"


@dataclass
class Inventory:
    registry: str  # HOST[:PORT] it was taken of
    prefix: str
    images: dict[str, str]  # source reference (with tag, or @digest) -> top manifest digest
    digests: set[str]  # every manifest and blob those images reach
    created: str = field(default_factory=utc_now)
    tool_version: str = __version__

    @property
    def address(self) -> str:
        return str(RegistryAddress(self.registry, self.prefix))

    def _content(self) -> dict[str, Any]:
        return {"registry": self.registry, "prefix": self.prefix,
                "images": [{"source": s, "digest": d} for s, d in sorted(self.images.items())],
                "digests": sorted(self.digests)}

    @property
    def id(self) -> str:
        text = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> bytes:
        doc = {"kind": INVENTORY_KIND, "format_version": INVENTORY_FORMAT, "id": self.id,
               "created": self.created, "tool_version": self.tool_version, **self._content()}
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_doc(cls, doc: dict[str, Any], path: Path) -> "Inventory":
        """Parse and check a loaded inventory; anything wrong is a UsageError naming ``path``."""
        if doc.get("format_version") != INVENTORY_FORMAT:
            raise UsageError(f"inventory {path}: format version {doc.get('format_version')!r} is not supported "
                             f"(mirror {__version__} reads version {INVENTORY_FORMAT})")
        try:
            inventory = cls(
                registry=str(doc["registry"]), prefix=str(doc.get("prefix") or ""),
                images={str(i["source"]): str(i["digest"]) for i in doc["images"]},
                digests={str(d) for d in doc["digests"]},
                created=str(doc["created"]), tool_version=str(doc.get("tool_version", "")),
            )
            for digest in [*inventory.images.values(), *inventory.digests]:
                digest_hex(digest)
        except (KeyError, TypeError, ValueError, AttributeError, MirrorError) as exc:
            raise UsageError(f"inventory {path} is malformed: {type(exc).__name__}: {exc}") from None
        if doc.get("id") != inventory.id:
            raise UsageError(f"inventory {path}: its id does not match its content (edited or damaged)")
        return inventory


async def take_inventory(client: RegistryClient, target: Target, selection: list[Reference] | None,
                         jobs: int, keep: Callable[[str], bool] = lambda source: True) -> Inventory:
    """Every image present (``selection``, or the whole catalog) and everything it reaches.

    ``keep(source)`` drops catalog images (``--exclude`` without a list).
    """
    if selection is None:
        repositories = await client.catalog()
        wanted: list[tuple[str, str, str]] = []  # (repository, tag, source name)

        async def tags_of(repository: str) -> None:
            name = source_name(repository, target.prefix)
            if name is not None:
                tags = await client.list_tags(repository)
                wanted.extend((repository, tag, f"{name}:{tag}") for tag in tags if keep(f"{name}:{tag}"))

        await each(repositories, tags_of, jobs)
    else:
        wanted = [(target_repository(ref, target.prefix), ref.identifier, str(ref)) for ref in selection]

    inventory = Inventory(target.host, target.prefix, {}, set())

    async def one(item: tuple[str, str, str]) -> None:
        repository, reference, source = item
        try:
            top = await client.get_manifest(repository, reference)
        except NotFoundError:
            return  # not there: the base simply does not have it
        inventory.images[source] = top.digest
        manifests = {top.digest: top}

        async def fetch(child: Descriptor) -> None:
            manifests[child.digest] = await client.get_manifest(repository, child.digest)

        children = top.children() if top.is_index else []
        await each(children, fetch, len(children))  # an index's platforms at once, as resolve does
        load = lambda d: manifests.get(d.digest)  # noqa: E731 - every manifest is fetched above
        inventory.digests.update(d.digest for d in graph.walk(top.descriptor, load))

    await each(sorted(wanted), one, jobs)
    return inventory


def read_inventory_doc(data: bytes, path: Path) -> dict[str, Any] | None:
    """The parsed document when ``data`` is an inventory, None when it is something else."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON (truncated?): {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a JSON object")
    return doc if doc.get("kind") == INVENTORY_KIND else None

