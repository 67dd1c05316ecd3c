"""The parts of `registry up` that need no running registry: certificates, htpasswd,
the state directory, and finding the registry image in a bundle."""

from __future__ import annotations

import io
import json
import os
import ssl
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography import x509

from mirror.bundle.reader import BundleReader
from mirror.errors import UsageError
from mirror.model.oci import Platform
from mirror.server.htpasswd import ensure_credentials
from mirror.server.imageload import copy_image_blobs, docker_archive, find_registry_image, select_manifest
from mirror.server.state import RegistryState, StatePaths, default_state_dir, find_local_registry, save_state
from mirror.server.tls import ensure_tls
from mirror.bundle.store import BlobStore
from support.registry_image import build_other_image, build_registry_image, write_test_bundle


def sans(cert: Path) -> set[str]:
    extension = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(v) for v in extension.get_values_for_type(x509.DNSName)} | {
        str(v) for v in extension.get_values_for_type(x509.IPAddress)}


def test_tls_auto_certificate_covers_every_name_and_verifies_against_its_ca(tmp_path):
    names = ["reg.example.com", "10.0.0.5", "localhost", "127.0.0.1"]
    tls = ensure_tls(tmp_path / "ca", tmp_path / "server.crt", tmp_path / "server.key", names)
    assert sans(tls.cert) == set(names)
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert tls.key.stat().st_mode & 0o777 == 0o600
    ssl.create_default_context().load_cert_chain(tls.cert, tls.key)  # the key matches the certificate
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tls.ca_cert), "-purpose", "sslserver",
                               str(tls.cert)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for name in names:
        flag = "-verify_ip" if name[0].isdigit() else "-verify_hostname"
        check = subprocess.run(["openssl", "verify", "-CAfile", str(tls.ca_cert), flag, name, str(tls.cert)],
                               capture_output=True, text=True)
        assert check.returncode == 0, (name, check.stdout + check.stderr)


def test_tls_auto_keeps_the_ca_and_reissues_only_when_names_change(tmp_path):
    paths = (tmp_path / "ca", tmp_path / "server.crt", tmp_path / "server.key")
    ensure_tls(*paths, ["reg.example.com", "127.0.0.1"])
    ca, cert = (tmp_path / "ca" / "ca.crt").read_bytes(), paths[1].read_bytes()
    ensure_tls(*paths, ["reg.example.com", "127.0.0.1"])
    assert paths[1].read_bytes() == cert  # nothing changed: nodes keep what they have
    ensure_tls(*paths, ["reg.example.com", "reg2.example.com", "127.0.0.1"])
    assert (tmp_path / "ca" / "ca.crt").read_bytes() == ca
    assert paths[1].read_bytes() != cert and "reg2.example.com" in sans(paths[1])


def test_htpasswd_password_is_generated_once_private_and_accepted_by_apache_htpasswd(tmp_path):
    credentials_file, htpasswd = tmp_path / "credentials", tmp_path / "registry" / "htpasswd"
    first, created = ensure_credentials(credentials_file, htpasswd, "mirror")
    assert created and first.username == "mirror" and len(first.password) >= 32
    assert credentials_file.stat().st_mode & 0o777 == 0o600
    assert htpasswd.stat().st_mode & 0o777 == 0o600
    assert first.password not in htpasswd.read_text()
    check = subprocess.run(["htpasswd", "-v", "-i", str(htpasswd), "mirror"], input=first.password,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    wrong = subprocess.run(["htpasswd", "-v", "-i", str(htpasswd), "mirror"], input="not-it",
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    again, created = ensure_credentials(credentials_file, htpasswd, "mirror")
    assert not created and again == first
    assert "<hidden>" in repr(again) and again.password not in repr(again)


def test_state_dir_default_follows_env_then_user(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_STATE_DIR", str(tmp_path / "custom"))
    assert default_state_dir() == tmp_path / "custom"
    monkeypatch.delenv("MIRROR_STATE_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/mirror/registry")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_state_dir() == tmp_path / "data" / "mirror" / "registry"


def test_find_local_registry_reads_what_up_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRROR_STATE_DIR", str(tmp_path))
    assert find_local_registry() is None
    paths = StatePaths(tmp_path)
    credentials, _ = ensure_credentials(paths.credentials, paths.htpasswd, "mirror")
    state = RegistryState(engine="binary", host="127.0.0.1:5000", hostnames=["reg.example.com"], port=5000,
                          address="0.0.0.0", data_dir=str(tmp_path / "data"), tls=True,
                          ca_file=str(tmp_path / "ca" / "ca.crt"), auth=True,
                          credentials_file=str(paths.credentials))
    save_state(paths, state)
    found = find_local_registry()
    assert found.host == "127.0.0.1:5000" and not found.plain_http
    assert found.ca_file == tmp_path / "ca" / "ca.crt" and found.credentials == credentials
    assert credentials.password not in paths.state_file.read_text()
    state.running = False
    save_state(paths, state)
    assert find_local_registry() is None


@pytest.fixture(scope="module")
def bundle_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    store = BlobStore(root / "store")
    image = build_registry_image(store)
    other = build_other_image(store)
    return image, other, write_test_bundle(root / "b.tar.zst", store, [other, image.record])


def test_registry_image_is_found_by_repository_or_override(bundle_images):
    image, _, bundle = bundle_images
    with BundleReader(bundle) as reader:
        manifest = reader.manifest
    assert find_registry_image(manifest, bundle).source == image.record.source
    assert find_registry_image(manifest, bundle, "busybox:1.36").source == "docker.io/library/busybox:1.36"
    with pytest.raises(UsageError, match=r"holds no registry image \(looked for quay.io/x/registry:1\)"):
        find_registry_image(manifest, bundle, "quay.io/x/registry:1")


def test_docker_archive_holds_the_engine_platform_only(bundle_images, tmp_path):
    image, other, bundle = bundle_images
    spool = BlobStore(tmp_path / "spool")
    with BundleReader(bundle) as reader:
        copy_image_blobs(reader, image.record, spool)
    assert not spool.has(other.digest)  # the rest of the bundle is skipped, not unpacked
    manifest = select_manifest(spool, image.record, Platform("linux", "amd64"))
    archive = tarfile.open(fileobj=io.BytesIO(b"".join(docker_archive(spool, manifest, "registry:2.8.2"))))
    index = json.loads(archive.extractfile("manifest.json").read())
    config = image.config.split(":")[1]
    assert index == [{"Config": f"{config}.json", "RepoTags": ["registry:2.8.2"],
                      "Layers": [f"{manifest.children()[1].digest.split(':')[1]}/layer.tar"]}]
    assert json.loads(archive.extractfile(f"{config}.json").read())["architecture"] == "amd64"
    with pytest.raises(UsageError, match="no linux/s390x variant"):
        select_manifest(spool, image.record, Platform("linux", "s390x"))
