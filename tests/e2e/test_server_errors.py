"""`mirror registry up` refusing an unfit host: one line, exit code 2, nothing left running."""

from __future__ import annotations

import io
import socket
import tarfile

import pytest

from mirror.server.state import find_local_registry
from mirror.bundle.store import BlobStore
from support import testbed
from support.cli import assert_refused, run_mirror
from support.registry_image import build_other_image, build_registry_image, write_test_bundle
from support.server import registries_running, up_args


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One bundle with the registry image, one without."""
    root = tmp_path_factory.mktemp("bundles")
    store = BlobStore(root / "store")
    registry_image = build_registry_image(store)
    other = build_other_image(store)
    with_registry = write_test_bundle(root / "with.tar.zst", store, [registry_image.record])
    without = write_test_bundle(root / "without.tar.zst", store, [other])
    return with_registry, without


def assert_nothing_runs(engine, state_dir, dockerd) -> None:
    assert registries_running(engine, state_dir, dockerd) == 0
    assert not (state_dir / "registry.pid").exists()
    assert find_local_registry(state_dir) is None


@pytest.mark.parametrize("engine", ["docker", "binary"])
def test_port_in_use(engine, bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_mirror(*up_args(engine, state_dir, port, bundles[0]),
                            env={"DOCKER_HOST": dockerd.docker_host})
    assert_refused(result, f"port {port}", "already in use")
    assert_nothing_runs(engine, state_dir, dockerd)
    assert not state_dir.exists()  # a refused first up leaves nothing behind


@pytest.mark.parametrize("engine", ["docker", "binary"])
def test_data_dir_not_writable(engine, bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be\n")  # unwritable even for root
    data_dir = blocker / "data"
    result = run_mirror(*up_args(engine, state_dir, testbed.free_port(), bundles[0]), "--data-dir", data_dir,
                        env={"DOCKER_HOST": dockerd.docker_host})
    assert_refused(result, f"data dir {data_dir}", "not writable")
    assert_nothing_runs(engine, state_dir, dockerd)


def test_docker_socket_refused(bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    dead = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as listener:  # the socket file stays; nobody listens
        listener.bind(str(dead))
    result = run_mirror(*up_args("docker", state_dir, testbed.free_port(), bundles[0]),
                        env={"DOCKER_HOST": f"unix://{dead}"})
    assert_refused(result, f"unix://{dead}", "--engine binary")
    assert_nothing_runs("docker", state_dir, dockerd)
    assert_nothing_runs("binary", state_dir, dockerd)


def test_auto_engine_falls_back_to_the_binary_without_docker(bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    port = testbed.free_port()
    env = {"DOCKER_HOST": f"unix://{tmp_path / 'missing.sock'}"}
    args = up_args("auto", state_dir, port, bundles[0]) + ["--from-bundle", bundles[0]]
    try:
        result = run_mirror(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "no Docker Engine reachable" in result.stderr
        assert registries_running("binary", state_dir, dockerd) == 1
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir, env=env)
    assert_nothing_runs("binary", state_dir, dockerd)


def test_bundle_without_registry_image(bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    without = bundles[1]
    client = dockerd.client()
    images_before = {image.id for image in client.images.list(all=True)}
    result = run_mirror(*up_args("docker", state_dir, testbed.free_port(), without),
                        env={"DOCKER_HOST": dockerd.docker_host})
    assert_refused(result, f"bundle {without}", "library/registry")
    assert_nothing_runs("docker", state_dir, dockerd)
    assert {image.id for image in client.images.list(all=True)} == images_before
    client.close()


def test_container_name_taken_by_someone_else(bundles, dockerd, tmp_path):
    state_dir = tmp_path / "state"
    client = dockerd.client()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        tar.addfile(info, io.BytesIO(b""))
    client.api.import_image_from_data(layer.getvalue(), repository="someone/else", tag="1")
    theirs = client.containers.create("someone/else:1", command=["/hello"], name="their-registry")
    try:
        result = run_mirror(*up_args("docker", state_dir, testbed.free_port(), bundles[0]),
                            "--container-name", "their-registry", env={"DOCKER_HOST": dockerd.docker_host})
        assert_refused(result, "container their-registry exists and was made by someone else")
        assert_nothing_runs("docker", state_dir, dockerd)
        theirs.reload()
        assert theirs.status == "created"  # untouched
    finally:
        theirs.remove(force=True)
        client.images.remove("someone/else:1")
        client.close()
