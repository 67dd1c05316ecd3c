"""Test scaffolding: a registry image built from Debian's docker-registry, in a bundle.

Shaped like docker.io/library/registry:2.8.x (binary /bin/registry, config
/etc/docker/registry/config.yml, data /var/lib/registry, port 5000) but made
without `docker build` or the internet: one gzip'd layer holding the binary
and the two libraries it links (`ldd`: libc.so.6, ld-linux-x86-64.so.2), a
Docker config and manifest, and a Docker manifest list whose arm64 child is
a decoy, so a loader must pick the engine's platform. The ``images`` fixture puts it in a bundle
and in a source registry (test modules import it by name).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.bundle.format import BundleManifest, ImageRecord
from mirror.bundle.store import BlobStore
from mirror.bundle.writer import write_bundle
from mirror.model.oci import DOCKER_LIST, DOCKER_MANIFEST, sha256_digest
from support import corpus, testbed

REGISTRY_SOURCE = "docker.io/library/registry:2.8.2"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DEFAULT_CONFIG = b"""version: 0.1
storage:
  filesystem: {rootdirectory: /var/lib/registry}
http:
  addr: :5000
"""
FILES = {  # path in the image -> host file
    "bin/registry": "/usr/bin/docker-registry",
    "lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
    "lib64/ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2",
}


@dataclass
class BuiltImage:
    record: ImageRecord
    config: str  # of the linux/amd64 image: the image id Docker gives it
    children: list[dict]  # the platform manifests' descriptors


def _layer(entries: dict[str, bytes], executables: set[str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({str(Path(p).parents[i]) for p in entries for i in range(len(Path(p).parents) - 1)})
        for directory in directories + ["var/lib/registry", "tmp"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o755 if path in executables else 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _put(store: BlobStore, data: bytes) -> dict:
    digest = sha256_digest(data)
    if not store.has(digest):
        store.put_bytes(digest, data)
    return {"digest": digest, "size": len(data)}


def _image(store: BlobStore, layer_tar: bytes, architecture: str, config: dict) -> dict:
    layer = _put(store, gzip.compress(layer_tar, compresslevel=1, mtime=0))
    config_doc = {
        "architecture": architecture, "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_tar)]},
        "history": [{"created_by": "tests/support/registry_image.py"}],
    }
    config_blob = _put(store, json.dumps(config_doc).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, **config_blob},
        "layers": [{"mediaType": LAYER_TYPE, **layer}],
    }
    return {"mediaType": DOCKER_MANIFEST, **_put(store, json.dumps(manifest).encode()),
            "platform": {"architecture": architecture, "os": "linux"}, "config": config_blob["digest"],
            "blobs": [config_blob["digest"], layer["digest"]]}


def build_registry_image(store: BlobStore, source: str = REGISTRY_SOURCE) -> BuiltImage:
    """The registry image (amd64 real, arm64 decoy) in ``store``."""
    entries = {path: Path(host).read_bytes() for path, host in FILES.items()}
    entries["etc/docker/registry/config.yml"] = DEFAULT_CONFIG
    config = {"Entrypoint": ["registry"], "Cmd": ["serve", "/etc/docker/registry/config.yml"],
              "ExposedPorts": {"5000/tcp": {}}, "Volumes": {"/var/lib/registry": {}}}
    amd64 = _image(store, _layer(entries, set(FILES)), "amd64", config)  # the loader must be executable too
    decoy = _image(store, _layer({"bin/registry": b"#!/bin/false\n"}, {"bin/registry"}), "arm64", config)
    children = [amd64, decoy]
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST,
             "manifests": [{k: c[k] for k in ("mediaType", "digest", "size", "platform")} for c in children]}
    top = _put(store, json.dumps(index).encode())
    blobs = [b for c in children for b in [c["digest"], *c["blobs"]]]
    record = ImageRecord(source, top["digest"], DOCKER_LIST, top["size"], ["linux/amd64", "linux/arm64"], blobs)
    return BuiltImage(record, amd64["config"], children)


def build_other_image(store: BlobStore, source: str = "docker.io/library/busybox:1.36") -> ImageRecord:
    """A small single-platform image that is not the registry."""
    image = _image(store, _layer({"etc/motd": b"not a registry\n"}, set()), "amd64", {"Cmd": ["sh"]})
    return ImageRecord(source, image["digest"], DOCKER_MANIFEST, image["size"], ["linux/amd64"], image["blobs"])


def write_test_bundle(path: Path, store: BlobStore, records: list[ImageRecord]) -> Path:
    blobs = {}
    for record in records:
        for digest in [record.digest, *record.blobs]:
            blobs[digest] = store.size(digest)
    write_bundle(path, BundleManifest(images=records, blobs=blobs), store)
    return path


def seed_source(registry_host: str, store: BlobStore, image: BuiltImage) -> str:
    """Push the image into a plain-HTTP registry with support/corpus.py; its reference there."""
    blob_types = {c["digest"]: c["mediaType"] for c in image.children}
    generated = corpus.GeneratedImage(
        source=image.record.source, media_type=image.record.media_type, digest=image.record.digest,
        manifests=[(c["digest"], c["mediaType"]) for c in image.children]
        + [(image.record.digest, image.record.media_type)],
        platforms={}, blobs=[b for b in image.record.blobs if b not in blob_types])
    sizes = {d: store.size(d) for d in [image.record.digest, *image.record.blobs]}
    # corpus.py pushes from a file per blob; the store packs the small ones
    as_files = corpus.GeneratedCorpus(store.root / "as-files", [generated], sizes)
    for digest in sizes:
        path = as_files.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read(digest))
    seeded = corpus.seed_registry(registry_host, as_files, prefixes={"docker.io": "dockerhub"})
    return f"{registry_host}/{seeded.images[0].repository}:{seeded.images[0].tag}"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The registry image in a bundle (beside another image), and in a plain source registry."""
    root = tmp_path_factory.mktemp("images")
    store = BlobStore(root / "store")
    registry_image = build_registry_image(store)
    other = build_other_image(store)
    bundle = write_test_bundle(root / "bundle.tar.zst", store, [other, registry_image.record])
    source = testbed.start_registry(root / "source")
    try:
        stored = sum(store.size(d) for d in registry_image.record.blobs)
        yield bundle, seed_source(source.host, store, registry_image), stored
    finally:
        source.stop()
