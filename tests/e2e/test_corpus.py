"""The generated corpus is what tests of mirror trust as "upstream": check it with an independent client."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile

import httpx
import pytest

from support import corpus
from support.cli import ROOT


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=60).stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_every_image_reads_back_byte_for_byte(seeded_source):
    seeded = seeded_source.corpus
    for image in seeded.images:
        raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{seeded.seeded_reference(image.source)}")
        assert sha256(raw) == image.digest, image.source
        assert json.loads(raw)["mediaType"] == image.media_type
    assert {image.media_type for image in seeded.images} == {
        corpus.DOCKER_LIST, corpus.OCI_INDEX, corpus.DOCKER_MANIFEST, corpus.OCI_MANIFEST}


@pytest.mark.parametrize("source, platform, skopeo_flags", [
    ("docker.io/rancher/klipper-helm:v0.7.3-build20220613", "linux/arm64/v8", ["--override-arch", "arm64"]),
    ("quay.io/jetstack/cert-manager-webhook:v1.7.1", "linux/arm/v7",
     ["--override-arch", "arm", "--override-variant", "v7"]),
])
def test_a_client_picks_the_platform_child(seeded_source, source, platform, skopeo_flags):
    seeded = seeded_source.corpus
    image = seeded.image(source)
    repository = f"{seeded.registry_host}/{image.repository}"
    child = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{repository}@{image.manifest_digests[platform]}")
    assert sha256(child) == image.manifest_digests[platform]
    chosen = json.loads(skopeo(*skopeo_flags, "inspect", "--tls-verify=false",
                               f"docker://{seeded.seeded_reference(source)}"))
    assert chosen["Architecture"] == platform.split("/")[1]
    assert chosen["Layers"] == [layer["digest"] for layer in json.loads(child)["layers"]]


def test_base_layer_is_shared_across_images_and_source_registries(seeded_source):
    seeded = seeded_source.corpus
    docker_list = seeded.image("docker.io/rancher/klipper-helm:v0.7.3-build20220613")
    oci_index = seeded.image("quay.io/jetstack/cert-manager-webhook:v1.7.1")
    shared = docker_list.blob_digests & oci_index.blob_digests
    assert shared
    for image in (docker_list, oci_index):
        for digest in shared:
            response = httpx.head(f"{seeded_source.registry.url}/v2/{image.repository}/blobs/{digest}")
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == seeded.sizes[digest]


@pytest.mark.parametrize("source, arch", [
    ("docker.io/rancher/klipper-helm:v0.7.3-build20220613", "arm64"),
    ("docker.io/rancher/rancher-agent:v2.6.8", "amd64"),  # holds the large layer
])
def test_layers_are_tars_matching_the_config_diff_ids(seeded_source, tmp_path, source, arch):
    skopeo("--override-arch", arch, "copy", "--src-tls-verify=false",
           f"docker://{seeded_source.corpus.seeded_reference(source)}", f"dir:{tmp_path}")
    manifest = json.loads((tmp_path / "manifest.json").read_bytes())
    config = json.loads((tmp_path / manifest["config"]["digest"].split(":")[1]).read_bytes())
    assert config["architecture"] == arch and config["os"] == "linux"
    layers = [tmp_path / layer["digest"].split(":")[1] for layer in manifest["layers"]]
    assert [sha256(gzip.decompress(path.read_bytes())) for path in layers] == config["rootfs"]["diff_ids"]
    with tarfile.open(layers[-1]) as tar:
        files = [member for member in tar.getmembers() if member.isfile()]
    assert files and all(member.mtime == corpus.MTIME for member in files)


def test_small_corpus_has_a_large_layer(seeded_source):
    seeded = seeded_source.corpus
    layers = set().union(*(image.blob_digests for image in seeded.images))
    assert max(seeded.sizes[digest] for digest in layers) > 15_000_000


def test_generation_is_deterministic(tmp_path):
    spec = corpus.CorpusSpec("tiny", (
        corpus.ImageSpec("docker.io/rancher/a:1", "docker-list", (corpus.AMD64, corpus.ARM64), (50,)),
        corpus.ImageSpec("quay.io/b/c:2", "oci", (corpus.AMD64,), (30, 10)),
    ), base_kb=40)
    first, second = (corpus.generate_corpus(tmp_path / name, spec) for name in ("one", "two"))
    assert first.sizes == second.sizes
    assert [image.digest for image in first.images] == [image.digest for image in second.images]


def test_cli_seeds_and_writes_the_image_list(registry, tmp_path):
    images_file = tmp_path / "images.txt"
    result = subprocess.run(
        [sys.executable, "-m", "support.corpus", "seed", "--registry", registry.host,
         "--spec", "small", "--work", str(tmp_path / "work"), "--images-file", str(images_file)],
        check=True, capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    sources = [line for line in images_file.read_text().splitlines() if not line.startswith("#")]
    assert sources == [image.source for image in corpus.small_spec().images]
    assert result.stdout.split() == corpus.source_mirror_args(registry.host)
    tags = httpx.get(f"{registry.url}/v2/quay/jetstack/cert-manager-controller/tags/list").json()
    assert tags["tags"] == ["v1.7.1"]


def test_demo_corpus_holds_the_k3s_cert_manager_and_registry_lists():
    lists = ["k3s/v1.24.4+k3s1.txt", "cert-manager/v1.11.0.txt", "registry/2.8.2.txt"]
    wanted = {line.strip() for name in lists for line in (ROOT / "manifests" / name).read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert wanted == {image.source for image in corpus.demo_spec().images}


def test_scale_corpus_carries_buildkit_attestations_that_skopeo_copies(registry, tmp_path):
    seeded = corpus.seed_registry(registry.host, corpus.generate_corpus(tmp_path, corpus.scale_spec(3, 40)))
    attested = seeded.images[0]
    index = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                              f"docker://{seeded.seeded_reference(attested.source)}"))
    attestations = [entry for entry in index["manifests"] if entry["platform"]["os"] == "unknown"]
    assert {entry["annotations"]["vnd.docker.reference.digest"] for entry in attestations} == set(
        attested.manifest_digests.values())
    assert {entry["annotations"]["vnd.docker.reference.type"] for entry in attestations} == {"attestation-manifest"}
    statement = json.loads(skopeo("inspect", "--tls-verify=false", "--raw",
                                  f"docker://{registry.host}/{attested.repository}@{attestations[0]['digest']}"))
    assert statement["layers"][0]["mediaType"] == corpus.IN_TOTO
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{seeded.seeded_reference(attested.source)}",
           f"oci:{tmp_path / 'layout'}:copy")
    copied = json.loads((tmp_path / "layout" / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == attested.digest
    assert [image.media_type for image in seeded.images] == [corpus.OCI_INDEX, corpus.DOCKER_LIST, corpus.OCI_INDEX]
