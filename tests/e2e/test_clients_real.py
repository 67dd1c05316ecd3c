"""The generated client configuration, proven with real clients against a TLS loopback registry.

The private registry holds generated images (digests that exist nowhere
upstream) in the target layout, copied there by skopeo at the path
mirror.model.target.target_repository gives. There is no other network, so a
client that ends up with those digests under the ORIGINAL names got them
from the private registry, through nothing but the generated files.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mirror.model.target import target_repository
from mirror.model.reference import Reference
from support import testbed
from support.cli import run_mirror
from support.daemons import start_dockerd

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


USER, PASSWORD = "node", "n0de-Pa55"
RANCHER = "v2.7.9"
NAME = "registry.airgap.test"  # what the nodes call the registry; only the test's dockerd resolves it (to ::1)


class PrivateAuth:
    def __init__(self, registry: testbed.Registry, ca_file: Path, digest: str):
        self.registry = registry
        self.ca_file = ca_file
        self.digest = digest  # of the pause image, under both names
        self.host = f"{NAME}:{registry.port}"


@pytest.fixture(scope="module")
def private_auth(tmp_path_factory, seeded_source) -> PrivateAuth:
    """A TLS + htpasswd registry on ::1 holding the pause image as the Rancher guide names images.

    ::1 because dockerd treats 127.0.0.0/8 as an insecure registry (TLS unverified): on ::1 its TLS
    works only with the CA in certs.d. Seeded by skopeo while it listens on 127.0.0.1 (skopeo cannot
    spell an IPv6 reference, nor resolve NAME), then moved to ::1 on the same storage. The pause
    image also stands in for rancher/rancher at the tag the generated ``docker run`` line names.
    """
    directory = tmp_path_factory.mktemp("private-auth")
    tls = testbed.make_tls(directory / "tls", hosts=(NAME, "127.0.0.1", "::1"))
    htpasswd = testbed.make_htpasswd(directory / "htpasswd", USER, PASSWORD)
    registry = testbed.start_registry(directory / "registry", tls=tls, htpasswd=htpasswd)
    certs = directory / "skopeo-certs"
    certs.mkdir()
    shutil.copy(tls.ca_cert, certs / "ca.crt")
    authfile = directory / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    source = "docker.io/rancher/mirrored-pause:3.6"
    try:
        for target in ("rancher/mirrored-pause:3.6", f"rancher/rancher:{RANCHER}"):
            subprocess.run([testbed.require("skopeo"), "copy", "--quiet", "--all", "--preserve-digests",
                            "--src-tls-verify=false", "--dest-cert-dir", str(certs), "--dest-authfile", str(authfile),
                            f"docker://{seeded_source.corpus.seeded_reference(source)}",
                            f"docker://{registry.host}/{target}"], check=True, capture_output=True, timeout=120)
    finally:
        registry.stop()
    registry = testbed.start_registry(directory / "registry", registry.port, tls=tls, htpasswd=htpasswd,
                                      address="::1")
    try:
        yield PrivateAuth(registry, tls.ca_cert, seeded_source.corpus.image(source).digest)
    finally:
        registry.stop()


def docker_cli(daemon, home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """The docker CLI against ``daemon``, its login kept in ``home`` (never the host's ~/.docker)."""
    env = {**os.environ, "DOCKER_HOST": daemon.docker_host, "DOCKER_CONFIG": str(home)}
    return subprocess.run([testbed.require("docker"), *args], input=input, env=env, capture_output=True,
                           text=True, timeout=180)


def test_single_docker_node_with_auth_pulls_rancher_names_through_generated_files(private_auth, tmp_path):
    """What the single-node guide does on a node: install the CA, log in, pull REG/rancher/... by full name."""
    out = tmp_path / "config"
    result = run_mirror("config", "docker", "--registry", private_auth.host, "--ca-file", private_auth.ca_file,
                        "--username", USER, "--rancher-version", RANCHER, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert not (out / "daemon.json").exists()  # registry-mirrors would send no credentials: not written
    assert "moby/moby#30880" in result.stderr
    login = (out / "docker-login.sh").read_text()
    assert PASSWORD not in login
    run_line = shlex.split((out / "rancher-docker-run.sh").read_text().splitlines()[-1])
    assert f"CATTLE_SYSTEM_DEFAULT_REGISTRY={private_auth.host}" in run_line
    rancher_image = run_line[-1]
    assert rancher_image == f"{private_auth.host}/rancher/rancher:{RANCHER}"
    images = [f"{private_auth.host}/rancher/mirrored-pause:3.6", rancher_image]

    daemon = start_dockerd(tmp_path / "docker", hosts={NAME: "::1"})
    home = tmp_path / "docker-home"
    env = {**os.environ, "DOCKER_HOST": daemon.docker_host, "DOCKER_CONFIG": str(home)}
    try:
        # Without the CA the registry's TLS is refused: unlike 127.0.0.0/8, ::1 is verified.
        refused = subprocess.run(["sh", "-c", login], input=PASSWORD + "\n", capture_output=True, text=True,
                                 timeout=120, env=env)
        assert refused.returncode != 0 and "certificate signed by unknown authority" in refused.stderr, \
            refused.stderr
        installed = daemon.certs_dir / private_auth.host
        installed.mkdir(parents=True)
        shutil.copy(out / "certs.d" / private_auth.host / "ca.crt", installed / "ca.crt")

        for image in images:
            anonymous = docker_cli(daemon, home, "pull", image)
            assert anonymous.returncode != 0 and "no basic auth credentials" in anonymous.stderr, anonymous.stderr
        logged_in = subprocess.run(["sh", "-c", login], input=PASSWORD + "\n", capture_output=True, text=True,
                                   timeout=120, env=env)
        assert logged_in.returncode == 0, logged_in.stderr
        for image in images:
            pulled = docker_cli(daemon, home, "pull", image)
            assert pulled.returncode == 0, pulled.stderr
            assert private_auth.digest in pulled.stdout
    finally:
        daemon.stop()


def test_containerd_1x_loads_the_generated_cri_config(tmp_path):
    """The fragment as containerd reads it: without `version = 2` containerd 1.x drops its tables."""
    certs_dir = "/etc/containerd/certs.d"
    result = run_mirror("config", "containerd", "--registry", "registry.airgap.test:5000", "-u", "bob",
                        "--certs-dir", certs_dir, "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    dump = subprocess.run([testbed.require("containerd"), "--config", str(tmp_path / "containerd-config.toml"),
                           "config", "dump"], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    registry = dump.stdout.split('[plugins."io.containerd.grpc.v1.cri".registry]', 1)[1]
    assert registry.split("\n", 2)[1].strip() == f'config_path = "{certs_dir}"'
    auth = dump.stdout.split('[plugins."io.containerd.grpc.v1.cri".registry.configs."registry.airgap.test:5000".auth]',
                             1)[1].split("[", 1)[0]
    assert 'username = "bob"' in auth


def test_containerd_falls_back_to_the_next_registry_when_the_first_is_down(private, containerd, tmp_path):
    """Two registries with the same images (as after `mirror push --registry A --registry B`, or on one
    bucket): with the first stopped, a node pulls by tag and by digest from the second, through nothing but
    the generated hosts.toml."""
    tls = testbed.TLSFiles(private.ca_file, private.ca_file.parent / "server.crt", private.ca_file.parent / "server.key")
    registries = []
    try:
        for name in ("first", "second"):
            shutil.copytree(private.registry.directory / "storage", tmp_path / name / "storage")
            registries.append(testbed.start_registry(tmp_path / name, tls=tls))
        first, second = registries
        hosts_dir = tmp_path / "certs.d"
        generated = run_mirror("config", "containerd", "--registry", first.host, "--registry", second.host,
                               "--ca-file", private.ca_file, "--certs-dir", hosts_dir, "--output-dir", tmp_path)
        assert generated.returncode == 0, generated.stderr
        for source in ("docker.io", "quay.io"):
            hosts = (hosts_dir / source / "hosts.toml").read_text()
            assert hosts.index(f'[host."https://{first.host}') < hosts.index(f'[host."https://{second.host}')
        first.stop()

        namespace = "fallback"  # nothing of the other tests' pulls: every reference is resolved anew
        for source in IMAGES:
            by_tag = containerd.ctr("-n", namespace, "images", "pull", "--hosts-dir", str(hosts_dir), source)
            assert by_tag.returncode == 0, by_tag.stderr
            assert private.digests[source] in containerd.ctr("-n", namespace, "images", "ls").stdout
            name = source.rsplit(":", 1)[0]
            by_digest = containerd.ctr("-n", namespace, "images", "pull", "--hosts-dir", str(hosts_dir),
                                       f"{name}@{private.digests[source]}")
            assert by_digest.returncode == 0, by_digest.stderr
        # The second registry's own name works as well (full-name pulls, Rancher's systemDefaultRegistry).
        own = containerd.ctr("-n", namespace, "images", "pull", "--hosts-dir", str(hosts_dir),
                             f"{second.host}/rancher/mirrored-pause:3.6")
        assert own.returncode == 0, own.stderr
    finally:
        for registry in registries:
            registry.stop()
