"""The registry image from a bundle, as a ``docker load`` stream.

Docker 20.10 loads only the docker-archive format (``manifest.json`` with
Config/RepoTags/Layers, the config, the layer files), not an OCI layout. We
read the bundle once, keep only the registry image's blobs (a few MB per
platform; the rest of a many-GB bundle is skipped, never unpacked) and stop
as soon as all of them were seen. The archive is then generated on the fly
from those blobs: one platform, the engine's, out of a multi-arch index.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Iterator

from ..bundle.format import BundleManifest, ImageRecord
from ..bundle.reader import BundleReader
from ..errors import UsageError
from ..model.oci import Manifest, Platform, digest_hex
from ..model.reference import Reference
from ..bundle.store import BlobStore

# Which image in a bundle runs the registry (manifests/registry/ lists it).
REGISTRY_REPOSITORY = "library/registry"
CHUNK = 1 << 20


def find_registry_image(bundle: BundleManifest, bundle_path: Path, wanted: str | None = None) -> ImageRecord:
    """The registry image: ``wanted`` (a reference) or any ``library/registry`` tag."""
    target = Reference.parse(wanted) if wanted else None
    for image in reversed(bundle.subjects):  # the last listed wins, as a later tag usually is newer
        source = Reference.parse(image.source)
        if target is None and source.repository == REGISTRY_REPOSITORY:
            return image
        if target is not None and source.name == target.name and (
                target.tag in (None, source.tag) and target.digest in (None, image.digest)):
            return image
    looked_for = wanted or f"*/{REGISTRY_REPOSITORY}:*"
    raise UsageError(
        f"bundle {bundle_path} holds no registry image (looked for {looked_for}): pull a bundle that "
        "includes manifests/registry, or pass --registry-image REF"
    )


def copy_image_blobs(reader: BundleReader, record: ImageRecord, spool: BlobStore) -> None:
    """Copy the image's blobs into ``spool`` (the reader re-hashes each as it goes)."""
    needed = {record.digest, *record.blobs}
    for entry in reader.entries():
        if entry.digest not in needed:
            continue
        with open(spool.partial_path(entry.digest), "wb") as out:
            for chunk in entry.chunks():
                out.write(chunk)
        spool.promote(entry.digest)
        needed.discard(entry.digest)
        if not needed:
            return
    raise UsageError(
        f"bundle {reader.path} lacks {len(needed)} blob(s) of {record.source} (a delta bundle?): "
        "use a full bundle for `registry up`"
    )


def select_manifest(spool: BlobStore, record: ImageRecord, platform: Platform) -> Manifest:
    """The image manifest for ``platform``: the record itself, or its index's child."""
    top = Manifest.from_bytes(spool.read(record.digest), record.media_type)
    if not top.is_index:
        return top
    for child in top.children():
        if child.platform and child.platform.matches(platform):
            return Manifest.from_bytes(spool.read(child.digest), child.media_type)
    offered = ", ".join(str(c.platform) for c in top.children() if c.platform)
    raise UsageError(f"registry image {record.source} has no {platform} variant (it has {offered})")


def docker_archive(spool: BlobStore, manifest: Manifest, repo_tag: str) -> Iterator[bytes]:
    """A docker-archive tar of one image; gzip'd layers go in as they are (docker load inflates)."""
    doc = manifest.document
    config = doc["config"]["digest"]
    layers = [layer["digest"] for layer in doc.get("layers") or []]
    members = [(f"{digest_hex(config)}.json", spool.path(config))]
    members += [(f"{digest_hex(layer)}/layer.tar", spool.path(layer)) for layer in layers]
    index = [{"Config": members[0][0], "RepoTags": [repo_tag], "Layers": [name for name, _ in members[1:]]}]
    for name, path in members:
        yield from _member(name, path.stat().st_size, _chunks(path))
    data = json.dumps(index).encode()
    yield from _member("manifest.json", len(data), iter([data]))
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _member(name: str, size: int, content: Iterator[bytes]) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    yield info.tobuf(tarfile.PAX_FORMAT)
    yield from content
    if size % tarfile.BLOCKSIZE:
        yield b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
