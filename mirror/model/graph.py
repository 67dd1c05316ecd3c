"""The image graph: a top manifest or index -> child manifests -> configs and layers.

Every operation follows the same edges: pull fetches them from a registry,
the bundle writer orders the tar by them, verify checks a bundle's records
against them, push waits on them before a manifest goes up. This module is
the one walker; where the manifests come from is the caller's ``load``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from .oci import MANIFEST_TYPES, Descriptor, Manifest

Load = Callable[[Descriptor], "Manifest | None"]


def is_manifest(descriptor: Descriptor) -> bool:
    return descriptor.media_type in MANIFEST_TYPES


def walk(top: Descriptor, load: Load, seen: set[str] | None = None) -> Iterator[Descriptor]:
    """Every descriptor reachable from ``top``, children before the manifest naming them.

    ``load`` gives the manifest behind a manifest descriptor, or None when it
    is not at hand (its children are then not visited). Digests in ``seen``
    are skipped with everything below them; the walk adds what it yields, so
    one ``seen`` shared across several tops yields each digest once.
    """
    seen = set() if seen is None else seen
    if top.digest in seen:
        return
    seen.add(top.digest)
    if is_manifest(top):
        manifest = load(top)
        if manifest is not None:
            for child in manifest.children():
                yield from walk(child, load, seen)
    yield top


def layer_blobs(manifests: Iterable[Manifest]) -> dict[str, int]:
    """Configs and layers (digest -> size) of the image manifests given; indexes contribute nothing."""
    blobs: dict[str, int] = {}
    for manifest in manifests:
        if not manifest.is_index:
            blobs.update({d.digest: d.size for d in manifest.children()})
    return blobs
