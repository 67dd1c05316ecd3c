"""A small generated corpus in a work store, and the bundle manifest pull would write for it: the input
of the bundle writer's tests. Test modules import the fixtures by name (``generated``, ``store``)."""

from __future__ import annotations

import pytest

from mirror.bundle.format import BundleManifest, ImageRecord
from mirror.bundle.store import BlobStore
from support import corpus

KLIPPER = "docker.io/rancher/klipper-helm:v0.7.3-build20220613"  # Docker manifest list, two platforms
WEBHOOK = "quay.io/jetstack/cert-manager-webhook:v1.7.1"  # OCI index, two platforms
BUSYBOX = "docker.io/library/busybox:1.36"  # single Docker v2 manifest

SPEC = corpus.CorpusSpec("bundle-tests", (
    corpus.ImageSpec(KLIPPER, "docker-list", (corpus.AMD64, corpus.ARM64), (60, 10)),
    corpus.ImageSpec(WEBHOOK, "oci-index", (corpus.AMD64, corpus.ARM64), (40,)),
    corpus.ImageSpec(BUSYBOX, "docker", (corpus.AMD64,), (30,)),
), base_kb=80)  # every image starts from the shared base layer of its platforms


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> corpus.GeneratedCorpus:
    return corpus.generate_corpus(tmp_path_factory.mktemp("corpus"), SPEC)


@pytest.fixture
def store(generated) -> BlobStore:
    return BlobStore(generated.directory)


def manifest_for(generated: corpus.GeneratedCorpus, omitted: tuple[str, ...] = (), base: str | None = None) -> BundleManifest:
    """mirror-bundle.json as pull would make it, from the generator's own bookkeeping."""
    images, blobs = [], {}
    for image in generated.images:
        children = [digest for digest, _ in image.manifests if digest != image.digest]
        images.append(ImageRecord(image.source, image.digest, image.media_type, generated.sizes[image.digest],
                                  list(image.platforms), children + image.blobs, manifests=children))
        for digest in [image.digest, *children, *image.blobs]:
            if digest not in omitted:
                blobs[digest] = generated.sizes[digest]
    return BundleManifest(images, blobs, topology={"mode": "k3s", "versions": {"k3s": "v1.24.4+k3s1"}},
                          base=[base] if base else [], omitted=list(omitted))
