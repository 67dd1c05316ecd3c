"""The referrers tag schema at a target that does not index referrers itself (image-spec 1.1).

A registry serving ``GET /v2/NAME/referrers/DIGEST`` lists a manifest with a ``subject``
as soon as it is pushed. Where it does not (distribution 2.8), clients look for an index
tagged ``sha256-HEX`` listing the referrers of ``sha256:HEX``: it is written, or updated
keeping every entry already there, after the referrers themselves are in.
"""

from __future__ import annotations

import json
from typing import Any

from ..model.oci import OCI_INDEX, Manifest
from ..registry.client import RegistryClient
from .cosign import artifact_type, tag_for


async def index_referrers(client: RegistryClient, repository: str, subject: str, referrers: list[Manifest]) -> bool:
    """List ``referrers`` of ``subject`` where clients will look; True when the tag schema index was written."""
    if await client.referrers(repository, subject) is not None:
        return False  # the registry indexes them itself
    tag = tag_for(subject)
    entries: list[dict[str, Any]] = []
    there = await client.head_manifest(repository, tag)
    if there is not None:
        current = await client.get_manifest(repository, there.digest)
        if current.is_index:
            entries = [entry for entry in current.document.get("manifests") or [] if isinstance(entry, dict)]
    listed = {entry.get("digest") for entry in entries}
    added = [_descriptor(manifest) for manifest in referrers if manifest.digest not in listed]
    if not added:
        return False
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries + added}
    index = Manifest.from_bytes(json.dumps(document, indent=2).encode() + b"\n", OCI_INDEX)
    await client.put_manifest(repository, tag, index)
    return True


def _descriptor(manifest: Manifest) -> dict[str, Any]:
    """A referrer's entry in the index: its descriptor with artifactType and annotations (image-spec 1.1)."""
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.data)}
    kind = artifact_type(manifest)
    if kind:
        entry["artifactType"] = kind
    annotations = manifest.document.get("annotations")
    if isinstance(annotations, dict) and annotations:
        entry["annotations"] = annotations
    return entry
