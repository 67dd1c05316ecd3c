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

An inventory of several registries (``common``) holds what every one of them
holds: an image only where each has it at the same digest, a digest only where
each has it. A delta pulled against it leaves out nothing any of them lacks, so
it pushes to each of them (docs/delta.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import httpx

from .. import __version__
from ..clock import utc_now
from ..errors import IntegrityError, NotFoundError, UsageError
from ..model import graph
from ..model.oci import Descriptor, digest_hex
from ..model.reference import HOST_PATTERN, REPOSITORY_PATTERN, Reference, is_tag
from ..model.target import RegistryAddress, source_name, target_repository
from ..registry.client import RegistryClient
from .plan import Target
from .tasks import each

INVENTORY_FORMAT = 1
SEVERAL_FORMAT = 2  # adds ``registries``: written only for several, so one registry's file stays version 1
INVENTORY_KIND = "mirror-inventory"


@dataclass
class Inventory:
    registry: str  # HOST[:PORT] it was taken of
    prefix: str
    images: dict[str, str]  # source reference (with tag, or @digest) -> top manifest digest
    digests: set[str]  # every manifest and blob those images reach
    created: str = field(default_factory=utc_now)
    tool_version: str = __version__
    skipped_tags: dict[str, int] = field(default_factory=dict)  # repository -> entries of its tag list that are
    # no tags (not part of the content: said when taken, never written)
    registries: list[str] = field(default_factory=list)  # taken of several: every HOST[:PORT][/PREFIX], the
    # first also in ``registry`` and ``prefix``; empty for one

    @classmethod
    def common(cls, inventories: list["Inventory"]) -> "Inventory":
        """What every one of ``inventories`` holds: the images each has at the same digest, the digests each has."""
        first, *others = inventories
        if not others:
            return first
        images = {source: digest for source, digest in first.images.items()
                  if all(other.images.get(source) == digest for other in others)}
        digests = first.digests.intersection(*(other.digests for other in others))
        return cls(first.registry, first.prefix, images, digests,
                   registries=[inventory.address for inventory in inventories])

    @property
    def address(self) -> str:
        """Where it was taken: HOST[:PORT][/PREFIX], or several joined by ", " (a bundle's ``base_registry``)."""
        return ", ".join(self.registries) or str(RegistryAddress(self.registry, self.prefix))

    def _content(self) -> dict[str, Any]:
        return {"registry": self.registry, "prefix": self.prefix,
                **({"registries": self.registries} if self.registries else {}),
                "images": [{"source": s, "digest": d} for s, d in sorted(self.images.items())],
                "digests": sorted(self.digests)}

    @property
    def id(self) -> str:
        text = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> bytes:
        version = SEVERAL_FORMAT if self.registries else INVENTORY_FORMAT
        doc = {"kind": INVENTORY_KIND, "format_version": version, "id": self.id,
               "created": self.created, "tool_version": self.tool_version, **self._content()}
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_doc(cls, doc: dict[str, Any], path: Path) -> "Inventory":
        """Check a loaded inventory field by field; anything wrong is a UsageError naming ``path`` and the field."""
        def bad(name: str, why: str) -> UsageError:
            return UsageError(f"inventory {path}: {name}: {why}")

        version = doc.get("format_version")
        # True and 1.0 are no version
        if type(version) is not int or version not in (INVENTORY_FORMAT, SEVERAL_FORMAT):  # noqa: E721
            raise UsageError(f"inventory {path}: format version {_shown(version)} is not supported "
                             f"(mirror {__version__} reads versions {INVENTORY_FORMAT} and {SEVERAL_FORMAT})")
        registry, prefix = doc.get("registry"), doc.get("prefix", "")
        if not isinstance(registry, str) or not HOST_PATTERN.fullmatch(registry):
            raise bad("registry", f"expected HOST[:PORT], found {_shown(registry)}")
        if not isinstance(prefix, str) or (prefix and not REPOSITORY_PATTERN.fullmatch(prefix)):
            raise bad("prefix", f"expected a repository path or \"\", found {_shown(prefix)}")
        created, tool_version = doc.get("created"), doc.get("tool_version", "")
        if not isinstance(created, str) or not _is_time(created):
            raise bad("created", f"expected a UTC time such as 2024-05-01T12:00:00Z, found {_shown(created)}")
        if not isinstance(tool_version, str):
            raise bad("tool_version", f"expected a string, found {_shown(tool_version)}")
        images: dict[str, str] = {}
        for number, entry in enumerate(_list(doc, "images", bad)):
            where = f"images[{number}]"
            if not isinstance(entry, dict):
                raise bad(where, f"expected an object {{source, digest}}, found {_shown(entry)}")
            source, digest = entry.get("source"), entry.get("digest")
            if not isinstance(source, str) or not _is_reference(source):
                raise bad(f"{where}.source", f"expected an image reference, found {_shown(source)}")
            if not _is_digest(digest):
                raise bad(f"{where}.digest", f"expected sha256:<64 hex>, found {_shown(digest)}")
            images[source] = digest
        digests = _list(doc, "digests", bad)
        for number, digest in enumerate(digests):
            if not _is_digest(digest):
                raise bad(f"digests[{number}]", f"expected sha256:<64 hex>, found {_shown(digest)}")
        registries = _list(doc, "registries", bad) if version == SEVERAL_FORMAT else []
        for number, address in enumerate(registries):
            if not isinstance(address, str) or not _is_address(address):
                raise bad(f"registries[{number}]", f"expected HOST[:PORT][/PREFIX], found {_shown(address)}")
        if version == SEVERAL_FORMAT and len(registries) < 2:
            raise bad("registries", f"expected two or more, found {len(registries)}")
        inventory = cls(registry, prefix, images, set(digests), created=created, tool_version=tool_version,
                        registries=registries)
        if doc.get("id") != inventory.id:
            raise UsageError(f"inventory {path}: its id does not match its content (edited or damaged)")
        return inventory


def _list(doc: dict[str, Any], name: str, bad: Callable[[str, str], UsageError]) -> list[Any]:
    value = doc.get(name)
    if not isinstance(value, list):
        raise bad(name, f"expected a list, found {_shown(value)}")
    return value


def _is_digest(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(digest_hex(value))
    except IntegrityError:
        return False


def _is_address(text: str) -> bool:
    try:
        return str(RegistryAddress.parse(text)) == text  # as ``address`` writes it: no scheme, no slashes around
    except UsageError:
        return False


def _is_reference(text: str) -> bool:
    try:
        Reference.parse(text)
    except UsageError:
        return False
    return True


def _is_time(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def _shown(value: Any) -> str:
    """A value from the file as an error names it: its JSON type, and its text when that is short."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value)
    kind = "a string" if isinstance(value, str) else "a boolean" if isinstance(value, bool) else "a number"
    return f"{kind} {text}" if len(text) <= 60 else f"{kind} of {len(text)} characters"


async def take_inventory(client: RegistryClient, target: Target, selection: list[Reference] | None,
                         jobs: int, keep: Callable[[str], bool] = lambda source: True) -> Inventory:
    """Every image present (``selection``, or the whole catalog) and everything it reaches.

    ``keep(source)`` drops catalog images (``--exclude`` without a list).
    """
    inventory = Inventory(target.host, target.prefix, {}, set())
    if selection is None:
        repositories = await client.catalog()
        wanted: list[tuple[str, str, str]] = []  # (repository, tag, source name)

        async def tags_of(repository: str) -> None:
            name = source_name(repository, target.prefix)
            if name is not None:
                listed = await client.list_tags(repository)
                tags = [tag for tag in listed if is_tag(tag)]  # the registry's answer: checked, as any peer's
                if len(tags) < len(listed):
                    inventory.skipped_tags[repository] = len(listed) - len(tags)
                wanted.extend((repository, tag, f"{name}:{tag}") for tag in tags if keep(f"{name}:{tag}"))

        await each(repositories, tags_of, jobs)
    else:
        wanted = [(target_repository(ref, target.prefix), ref.identifier, str(ref)) for ref in selection]


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


async def take_inventories(targets: list[Target], selection: list[Reference] | None, jobs: int,
                           keep: Callable[[str], bool] = lambda source: True,
                           http_transport: httpx.AsyncBaseTransport | None = None) -> list[Inventory]:
    """``take_inventory`` of each target, all at once, in order (``Inventory.common`` unites them). Any
    target failing fails the whole: what they all hold is unknown without each."""
    taken = [Inventory(target.host, target.prefix, {}, set()) for target in targets]

    async def take(index: int) -> None:
        target = targets[index]
        async with RegistryClient(target.host, target.settings, http_transport=http_transport) as client:
            await client.ping()
            taken[index] = await take_inventory(client, target, selection, jobs, keep)

    await each(range(len(targets)), take, len(targets))
    return taken


MAX_DOCUMENT = 64 << 20  # an inventory or mirror-bundle.json: as a bundle's own manifest (bundle/reader.py)
MAX_DEPTH = 16  # an inventory nests 3 deep, a bundle's manifest 5; Python's parser recurses ~1000 deep


def read_base_document(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A JSON base file (an inventory or a mirror-bundle.json), read within bounds: its bytes and its object.

    The size is checked before anything is read (and the read stops past it),
    the nesting before the document is used; either is a UsageError naming ``path``.
    """
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise UsageError(f"--base {path}: not a regular file")
            if status.st_size > MAX_DOCUMENT:
                raise UsageError(f"--base {path}: {status.st_size} bytes, more than the {MAX_DOCUMENT >> 20} MiB an "
                                 "inventory or mirror-bundle.json may have")
            data = handle.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise UsageError(f"--base {path}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_DOCUMENT:  # it grew while read
        raise UsageError(f"--base {path}: more than the {MAX_DOCUMENT >> 20} MiB an inventory may have")
    try:
        doc = json.loads(data)
    except RecursionError:
        doc = None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON (truncated?): {exc}") from None
    if doc is None or _depth(doc) > MAX_DEPTH:
        raise UsageError(f"--base {path}: nested deeper than the {MAX_DEPTH} levels an inventory or "
                         "mirror-bundle.json has")
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a JSON object")
    return data, doc


def is_inventory(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == INVENTORY_KIND


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # past that the answer is known
            stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
