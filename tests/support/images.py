"""Small OCI images built in memory, for in-process tests: configs, layers, manifests, indexes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

from mirror.bundle.format import ImageRecord
from mirror.model import oci
from mirror.model.oci import Manifest

from .fake_registry import FakeRegistry

CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Image:
    """A top manifest (an image or an index), its platform manifests, and every config and layer below."""

    top: Manifest
    children: list[Manifest] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.top.digest

    @property
    def manifests(self) -> list[Manifest]:
        return [self.top, *self.children]

    def record(self, source: str) -> ImageRecord:
        """What a pull records for it (resolve.ResolvedImage.record), unnarrowed."""
        children = [m.digest for m in self.children]
        return ImageRecord(source=source, digest=self.digest, media_type=self.top.media_type,
                           size=len(self.top.data), platforms=[], blobs=children + list(self.blobs),
                           manifests=children)


def image(name: str, layers: int = 1, arch: str = "amd64", shared: Sequence[bytes] = ()) -> Image:
    """An OCI image manifest: a config naming ``arch``, ``layers`` layers of its own, then ``shared`` ones."""
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}, "name": name}).encode()
    contents = [f"{name} layer {i} ".encode() * 40 for i in range(layers)] + list(shared)
    document = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": oci.sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": oci.sha256_digest(c), "size": len(c)} for c in contents],
    }
    top = Manifest.from_bytes(json.dumps(document, indent=2).encode(), oci.OCI_MANIFEST)
    return Image(top, [], {oci.sha256_digest(data): data for data in [config, *contents]})


def index(*images: Image) -> Image:
    """An OCI index of single-platform images, each entry with its config's platform."""
    entries = []
    for child in images:
        config = child.blobs[child.top.children()[0].digest]
        platform = {k: json.loads(config)[k] for k in ("architecture", "os")}
        entries.append({**child.top.descriptor.to_json(), "platform": platform})
    document = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries}
    top = Manifest.from_bytes(json.dumps(document).encode(), oci.OCI_INDEX)
    return Image(top, [child.top for child in images], {d: b for child in images for d, b in child.blobs.items()})


def seed(registry: FakeRegistry, repository: str, img: Image, tag: str | None = None) -> None:
    """Put the whole image into ``repository``, tagged ``tag``."""
    for data in img.blobs.values():
        registry.add_blob(repository, data)
    for child in img.children:
        registry.add_manifest(repository, child.data, child.media_type)
    registry.add_manifest(repository, img.top.data, img.top.media_type, tag)
