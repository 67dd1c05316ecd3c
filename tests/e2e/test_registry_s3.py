"""`registry up --storage s3://...`: registries on shared object storage serve one set of images.

The storage is moto's S3 server on loopback (tests/support/s3server.py), checking
signatures; the registries are Debian's docker-registry on its S3 driver,
run by the binary engine. Two registries on one bucket, the second set up
from the first's `export-join`: a push through one is pulled, by digest,
through the other.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
from pathlib import Path

import httpx
import pytest

from mirror.bundle.store import BlobStore
from mirror.server.state import find_local_registry
from support import testbed
from support.cli import run_mirror
from support.registry_image import build_other_image, build_registry_image, write_test_bundle
from support.s3server import start_s3
from support.server import registries_running, secret_exposed


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The registry image (a 2-platform index with a multi-MiB layer: S3 multipart) and a small one."""
    root = tmp_path_factory.mktemp("bundle")
    store = BlobStore(root / "store")
    records = [build_registry_image(store).record, build_other_image(store)]
    return write_test_bundle(root / "ha.tar.zst", store, records), records


def s3_env(s3, secret: str | None = None) -> dict:
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": secret or s3.secret_key}


def up(state_dir: Path, port: int, *extra, env: dict) -> object:
    return run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--engine", "binary", *extra, env=env)


def get_verified(state_dir: Path, path: str, digest: str, accept: str = "*/*") -> None:
    """GET ``path`` by digest from the registry of ``state_dir``: its bytes must hash to ``digest``."""
    local = find_local_registry(state_dir)
    auth = (local.credentials.username, local.credentials.password)
    answer = httpx.get(f"https://{local.host}{path}", auth=auth, verify=ssl.create_default_context(cafile=str(local.ca_file)),
                       headers={"Accept": accept}, timeout=60)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == digest


MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"])


def test_two_registries_on_one_bucket_serve_what_was_pushed_through_either(s3, bundle, tmp_path):
    bundle_path, records = bundle
    s3.make_bucket("site-images")
    first, second = tmp_path / "first", tmp_path / "second"
    port_a, port_b = testbed.free_port(), testbed.free_port()
    env = s3_env(s3)
    try:
        started = up(first, port_a, "--storage", "s3://site-images/registry", "--s3-endpoint", s3.endpoint,
                     "--json", env=env)
        assert started.returncode == 0, started.stderr
        report = json.loads(started.stdout)
        assert report["storage"] == "s3://site-images/registry"
        join_file = tmp_path / "join.tar"
        exported = run_mirror("registry", "export-join", "--state-dir", first, "-o", join_file)
        assert exported.returncode == 0, exported.stderr
        assert stat.S_IMODE(join_file.stat().st_mode) == 0o600
        joined = up(second, port_b, "--join", join_file, env=env)
        assert joined.returncode == 0, joined.stderr
        assert "data in s3://site-images/registry" in joined.stdout

        pushed = run_mirror("push", bundle_path, "-q", env={"MIRROR_STATE_DIR": str(first)})
        assert pushed.returncode == 0, pushed.stderr
        assert any(k.startswith("site-images/registry/docker/registry/v2/blobs/") for k in s3.keys())
        assert not (first / "data").exists()  # nothing of the images on this host

        # Every manifest and blob, by digest, through the registry the push never talked to.
        for record in records:
            repository = record.source.split("/", 1)[1].split(":")[0]
            get_verified(second, f"/v2/{repository}/manifests/{record.digest}", record.digest, MANIFEST_TYPES)
            for digest in record.blobs:
                kind = "manifests" if digest in record.manifests else "blobs"
                get_verified(second, f"/v2/{repository}/{kind}/{digest}", digest, MANIFEST_TYPES)
        verified = run_mirror("verify", bundle_path, "--local-registry", "-q", env={"MIRROR_STATE_DIR": str(second)})
        assert verified.returncode == 0, verified.stdout + verified.stderr

        status = run_mirror("registry", "status", "--state-dir", second, "--json")
        doc = json.loads(status.stdout)
        assert (doc["storage"], doc["s3_endpoint"], doc["storage_reachable"]) == \
            ("s3://site-images/registry", s3.endpoint, True)
        assert sorted(doc["repositories"]) == ["library/busybox", "library/registry"]
        # The keys reach the registry through its 0600 config, never state.json or a report.
        for text in (started.stdout, started.stderr, joined.stdout, status.stdout, (second / "state.json").read_text(),
                     join_file.read_bytes().decode(errors="replace"), exported.stdout):
            assert s3.secret_key not in text
        assert stat.S_IMODE((second / "registry" / "config.yml").stat().st_mode) == 0o600
        for state_dir in (first, second):  # nor the registry's argv, environment or log
            assert not secret_exposed("binary", state_dir, None, s3.secret_key)
    finally:
        for state_dir in (first, second):
            run_mirror("registry", "down", "--state-dir", state_dir)


def test_up_again_with_no_flags_recalls_the_storage_and_its_kept_keys(s3, tmp_path):
    s3.make_bucket("recalled")
    state_dir, port = tmp_path / "state", testbed.free_port()
    try:
        first = up(state_dir, port, "--storage", "s3://recalled", "--s3-endpoint", s3.endpoint, "--no-tls",
                   "--auth", "none", env=s3_env(s3))
        assert first.returncode == 0, first.stderr
        assert run_mirror("registry", "down", "--state-dir", state_dir).returncode == 0
        again = run_mirror("registry", "up", "--state-dir", state_dir, env={"AWS_ACCESS_KEY_ID": "",
                                                                             "AWS_SECRET_ACCESS_KEY": ""})
        assert again.returncode == 0, again.stderr
        assert "data in s3://recalled at " + s3.endpoint in again.stdout
        moved = up(state_dir, port, "--storage", "s3://elsewhere", "--s3-endpoint", s3.endpoint, env=s3_env(s3))
        assert moved.returncode == 2 and "storage s3://recalled (not s3://elsewhere)" in moved.stderr
        # Other hosts may serve the same bucket: gc would sweep under them.
        gc = run_mirror("registry", "gc", "--state-dir", state_dir)
        assert gc.returncode == 2 and "shared with other hosts" in gc.stderr, gc.stderr
        assert registries_running("binary", state_dir, None) == 1
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


@pytest.mark.parametrize("fault", ["unreachable", "wrong secret", "no bucket"])
def test_up_refuses_storage_it_cannot_use_and_leaves_nothing(s3, tmp_path, fault):
    state_dir, port = tmp_path / "state", testbed.free_port()
    s3.make_bucket("refusing")
    endpoint = f"http://127.0.0.1:{testbed.free_port()}" if fault == "unreachable" else s3.endpoint
    bucket = "no-such-bucket" if fault == "no bucket" else "refusing"
    result = up(state_dir, port, "--storage", f"s3://{bucket}", "--s3-endpoint", endpoint,
                env=s3_env(s3, "wrong" if fault == "wrong secret" else None))
    assert result.returncode == (2 if fault == "no bucket" else 3), result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert endpoint in line
    assert {"unreachable": "did not answer", "wrong secret": "refused the credentials",
            "no bucket": "has no bucket no-such-bucket"}[fault] in line
    assert s3.secret_key not in result.stderr
    assert not state_dir.exists() and registries_running("binary", state_dir, None) == 0


def test_status_says_when_the_storage_stopped_answering(bundle, tmp_path):
    own = start_s3(tmp_path / "s3")  # this test stops it
    try:
        own.make_bucket("fading")
        state_dir = tmp_path / "state"
        started = up(state_dir, testbed.free_port(), "--storage", "s3://fading", "--s3-endpoint", own.endpoint,
                     "--no-tls", "--auth", "none", env=s3_env(own))
        assert started.returncode == 0, started.stderr
    finally:
        own.stop()
    try:
        status = run_mirror("registry", "status", "--state-dir", state_dir)
        assert f"data in s3://fading at {own.endpoint} (NOT reachable: S3 storage {own.endpoint} did not " \
               "answer" in status.stdout, status.stdout + status.stderr
        doc = json.loads(run_mirror("registry", "status", "--state-dir", state_dir, "--json").stdout)
        assert doc["storage_reachable"] is False and own.endpoint in doc["storage_error"]
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)


def test_docker_engine_runs_the_registry_on_the_bucket_too(s3, bundle, dockerd, tmp_path):
    """The container (host network) reads the same 0600 config: the keys reach it as a file, never its env."""
    bundle_path, records = bundle
    s3.make_bucket("in-docker")
    state_dir, port = tmp_path / "state", testbed.free_port()
    env = {**s3_env(s3), "DOCKER_HOST": dockerd.docker_host}
    try:
        started = up(state_dir, port, "--engine", "docker", "--from-bundle", bundle_path, "--storage",
                     "s3://in-docker/r", "--s3-endpoint", s3.endpoint, "--no-tls", "--auth", "none", env=env)
        assert started.returncode == 0, started.stderr
        pushed = run_mirror("push", bundle_path, "-q", env={"MIRROR_STATE_DIR": str(state_dir), **env})
        assert pushed.returncode == 0, pushed.stderr
        assert any(k.startswith("in-docker/r/docker/registry/v2/repositories/library/busybox/")
                   for k in s3.keys())
        assert not secret_exposed("docker", state_dir, dockerd, s3.secret_key)
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir, env={"DOCKER_HOST": dockerd.docker_host})
