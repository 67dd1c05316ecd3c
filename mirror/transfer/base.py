"""``mirror pull --base FILE``: what the disconnected side already holds, so a delta can leave it out.

FILE is an inventory (``mirror inventory``), a previous bundle, or a bundle's
``mirror-bundle.json``; several are united. A bundle counts with everything
its images reach, its own omitted digests included: those were its base's,
and a bundle is only pushed once its base is in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bundle.format import BundleManifest
from ..bundle.reader import BundleReader
from ..errors import IntegrityError, UsageError
from .inventory import Inventory, is_inventory, read_base_document


@dataclass
class Base:
    ids: list[str] = field(default_factory=list)
    digests: set[str] = field(default_factory=set)
    registries: dict[str, str] = field(default_factory=dict)  # inventory id -> HOST[/PREFIX]
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


def load_base(paths: list[Path]) -> Base:
    """The union of every FILE; a file that is none of the three, or is damaged, is a UsageError naming it."""
    base = Base()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--base {path}: no such file")
        known = len(base.ids)
        _add_file(base, path)
        base.names.update({base_id: path.name for base_id in base.ids[known:]})
    return base


def _add_file(base: Base, path: Path) -> None:
    """One --base FILE, whichever of the three it is, into ``base``."""
    with open(path, "rb") as handle:
        head = handle.read(1)
    if head not in (b"{", b" ", b"\n", b"\t", b"\r"):  # not JSON: a bundle (or its first part)
        try:
            with BundleReader(path) as reader:
                base.add_bundle(reader.manifest)
        except IntegrityError as exc:
            raise UsageError(f"--base {path}: not an inventory, bundle or mirror-bundle.json ({exc})") from None
        return
    data, doc = read_base_document(path)
    if is_inventory(doc):
        base.add_inventory(Inventory.from_doc(doc, path))
        return
    try:
        base.add_bundle(BundleManifest.from_json(data))
    except IntegrityError as exc:
        raise UsageError(f"--base {path}: not an inventory or mirror-bundle.json ({exc})") from None
