"""The generated client configuration, proven with real clients against a TLS loopback registry.

The private registry holds generated images (digests that exist nowhere
upstream) in the target layout, copied there by skopeo at the path
mirror.model.target.target_repository gives. There is no other network, so a
client that ends up with those digests under the ORIGINAL names got them
from the private registry, through nothing but the generated files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import testbed
from conftest import run_mirror
from daemons import start_dockerd
from mirror.model.target import target_repository
from mirror.model.reference import Reference

# docker-list, oci-index and an OCI index from quay.io: every path shape the configs must map.
IMAGES = [
    "docker.io/rancher/mirrored-pause:3.6",
    "docker.io/library/busybox:1.34.1",
    "quay.io/jetstack/cert-manager-webhook:v1.7.1",
]


class Private:
    def __init__(self, registry: testbed.Registry, ca_file: Path, digests: dict[str, str]):
        self.registry = registry
        self.ca_file = ca_file
        self.digests = digests  # original reference -> digest pushed

    @property
    def host(self) -> str:
        return self.registry.host


@pytest.fixture(scope="module")
def private(tmp_path_factory, seeded_source) -> Private:
    """A TLS registry holding IMAGES at their target-layout paths, digests unchanged."""
    directory = tmp_path_factory.mktemp("private")
    tls = testbed.make_tls(directory / "tls")
    certs = directory / "skopeo-certs"  # only the CA: skopeo would read server.key as a client key
    certs.mkdir()
    shutil.copy(tls.ca_cert, certs / "ca.crt")
    registry = testbed.start_registry(directory / "registry", tls=tls)
    try:
        digests = {}
        for source in IMAGES:
            ref = Reference.parse(source)
            destination = f"{registry.host}/{target_repository(ref)}:{ref.tag}"
            subprocess.run([testbed.require("skopeo"), "copy", "--quiet", "--all", "--preserve-digests",
                            "--src-tls-verify=false", "--dest-cert-dir", str(certs),
                            f"docker://{seeded_source.corpus.seeded_reference(source)}", f"docker://{destination}"],
                           check=True, capture_output=True, timeout=120)
            digests[source] = seeded_source.corpus.image(source).digest
        yield Private(registry, tls.ca_cert, digests)
    finally:
        registry.stop()


def generate(kind: str, private: Private, output: Path, *args: str) -> None:
    result = run_mirror("config", kind, "--registry", private.host, "--ca-file", private.ca_file,
                        "--output-dir", output, *args)
    assert result.returncode == 0, result.stderr


def test_containerd_pulls_original_names_through_generated_hosts_toml(private, containerd, tmp_path):
    hosts_dir = tmp_path / "certs.d"
    generate("containerd", private, tmp_path, "--certs-dir", str(hosts_dir), "--from-registry")
    assert sorted(p.name for p in hosts_dir.iterdir()) == sorted(["docker.io", "quay.io", private.host])

    for source in IMAGES:
        pulled = containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), source)
        assert pulled.returncode == 0, pulled.stderr
        listed = containerd.ctr("images", "ls", "-q", f"name=={source}")
        assert listed.stdout.split() == [source]
        info = containerd.ctr("images", "ls", f"name=={source}").stdout
        assert private.digests[source] in info, info
    # The registry's own entry serves target names (what Docker hosts and Rancher's systemDefaultRegistry use).
    own = f"{private.host}/quay.io/jetstack/cert-manager-webhook:v1.7.1"
    pulled = containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), own)
    assert pulled.returncode == 0, pulled.stderr


def test_containerd_refuses_the_registry_without_the_generated_ca(private, containerd, tmp_path):
    """The ``ca`` line is what makes TLS work: a tree generated without --ca-file fails verification."""
    result = run_mirror("config", "containerd", "--registry", private.host, "--certs-dir",
                        str(tmp_path / "certs.d"), "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    pulled = containerd.ctr("images", "pull", "--hosts-dir", str(tmp_path / "certs.d"),
                            f"{private.host}/rancher/mirrored-pause:3.6", timeout=60)
    assert pulled.returncode != 0
    assert "certificate" in pulled.stderr


@pytest.fixture
def docker_certs(private):
    """dockerd reads CAs from the fixed /etc/docker/certs.d/<host:port>/: install there, remove after."""
    directory = Path("/etc/docker/certs.d") / private.host
    created = [d for d in (directory.parent, directory) if not d.exists()]
    directory.mkdir(parents=True)
    yield directory
    shutil.rmtree(directory)
    for made in reversed(created[:-1]):  # parents this fixture made, if nobody else uses them now
        if not any(made.iterdir()):
            made.rmdir()


def test_docker_engine_pulls_through_generated_daemon_json(private, docker_certs, tmp_path):
    """The registry speaks only TLS. Caveat: dockerd always treats 127.0.0.0/8 as an insecure registry
    (TLS without verification), so on loopback the CA in certs.d is installed but not what is proven;
    containerd, which has no such exemption, proves the CA path above."""
    generate("docker", private, tmp_path / "config")
    shutil.copy(tmp_path / "config" / "certs.d" / private.host / "ca.crt", docker_certs / "ca.crt")
    daemon = start_dockerd(tmp_path / "docker", config_file=tmp_path / "config" / "daemon.json")
    client = daemon.client()
    try:
        source = "docker.io/rancher/mirrored-pause:3.6"
        image = client.images.pull("docker.io/rancher/mirrored-pause", tag="3.6")
        assert f"rancher/mirrored-pause@{private.digests[source]}" in image.attrs["RepoDigests"]
        # Docker mirrors docker.io only: other registries' images by their target name, over TLS.
        quay = "quay.io/jetstack/cert-manager-webhook:v1.7.1"
        target = f"{private.host}/quay.io/jetstack/cert-manager-webhook"
        image = client.images.pull(target, tag="v1.7.1")
        assert f"{target}@{private.digests[quay]}" in image.attrs["RepoDigests"]
    finally:
        client.close()
        daemon.stop()
