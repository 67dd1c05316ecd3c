"""mirror registry gc on a registry `mirror registry up` runs: after a prune, it frees the pruned images'
bytes, keeps every byte of the kept ones, and starts the registry again as recorded. Both engines: the
binary as a process of ours, the registry image (Debian's binary, from a bundle) in Docker Engine."""

from __future__ import annotations

import json

import httpx
import pytest

import testbed
from conftest import run_mirror
from test_prune import APP, OTHER, fill, keep_latest_config, prune, state_home, versions  # noqa: F401 - fixtures
from test_server_state_dir import serves
from test_server_up import images  # noqa: F401 - fixture: the registry image in a bundle
from test_sync import ACCEPT

PRUNED, KEPT = ("v1.0.0", "v1.1.0"), ("v1.2.0", "v1.3.0")


def up(state_dir, port, *engine, env=None):
    return run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--no-tls", "--auth", "none", *(engine or ["--engine", "binary"]), env=env)


def gc(state_dir, *args, env=None):
    result = run_mirror("registry", "gc", "--state-dir", state_dir, "--json", *args, env=env)
    return result, (json.loads(result.stdout) if result.stdout.startswith("{") else None)


def status(url: str, repository: str, kind: str, digest: str) -> int:
    return httpx.head(f"{url}/v2/{repository}/{kind}/{digest}", headers={"Accept": ACCEPT}).status_code


def pid(state_dir) -> str:
    return (state_dir / "registry.pid").read_text().strip()


def registry_running(engine: str, state_dir, dockerd) -> str:
    """What runs the registry now: the binary's pid, or the container's id."""
    if engine == "binary":
        return (state_dir / "registry.pid").read_text().strip()
    client = dockerd.client()
    try:
        return client.containers.get("mirror-registry").id
    finally:
        client.close()


@pytest.mark.parametrize("engine", ["binary", "docker"])
def test_gc_after_prune_frees_the_pruned_bytes_and_keeps_every_kept_image_whole(
        engine, versions, tmp_path, state_home, request):
    from mirror.server.lifecycle import disk_usage

    state_dir, port = tmp_path / "state", testbed.free_port()
    host, url, data_dir = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", state_dir / "data"
    dockerd = request.getfixturevalue("dockerd") if engine == "docker" else None
    env = {"MIRROR_STATE_DIR": str(state_dir)}  # prune finds the registry `up` runs without --registry
    if dockerd:
        env["DOCKER_HOST"] = dockerd.docker_host
        bundle = request.getfixturevalue("images")[0]
        started = up(state_dir, port, "--engine", "docker", "--from-bundle", bundle, env=env)
    else:
        started = up(state_dir, port)
    assert started.returncode == 0, started.stderr
    try:
        rebuilt, rebuilt_size = fill(versions, host)
        sizes = {**versions.sizes, rebuilt: rebuilt_size}
        pruned, _ = prune("--keep", keep_latest_config(tmp_path / "sync.yaml", host), env=env)
        assert pruned.returncode == 0, pruned.stderr
        assert "next: mirror registry gc" in pruned.stdout

        images = {tag: versions.image(f"{APP}:{tag}") for tag in PRUNED + KEPT}
        kept_blobs = {b for tag in KEPT for b in images[tag].blob_digests} | versions.image(OTHER).blob_digests
        freeable = {b for tag in PRUNED for b in images[tag].blob_digests} - kept_blobs
        manifests = {rebuilt} | {d for tag in PRUNED
                                 for d in [images[tag].digest, *images[tag].manifest_digests.values()]}
        freeable |= manifests
        running = registry_running(engine, state_dir, dockerd)

        dry, would = gc(state_dir, "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert would["dry_run"] and would["blobs_swept"] == len(freeable)
        assert would["bytes_freed"] == sum(sizes[d] for d in freeable)  # the files it would delete
        assert registry_running(engine, state_dir, dockerd) == running and serves(port)  # a dry run stops nothing
        assert all(status(url, "rancher/app", "blobs", b) == 200 for b in freeable - manifests)

        before = disk_usage(data_dir)
        result, report = gc(state_dir, env=env)
        assert result.returncode == 0, result.stderr
        assert report["stopped"] and report["restarted"] and serves(port)
        assert registry_running(engine, state_dir, dockerd) != running
        assert report["blobs_swept"] == len(freeable)
        assert before - disk_usage(data_dir) == report["bytes_freed"] >= sum(sizes[d] for d in freeable)
        for blob in freeable - manifests:
            assert status(url, "rancher/app", "blobs", blob) == 404
        for tag in KEPT:  # every manifest and blob of what stays still answers, by digest
            image = images[tag]
            for digest in [image.digest, *image.manifest_digests.values()]:
                assert status(url, "rancher/app", "manifests", digest) == 200, (tag, digest)
            for blob in image.blob_digests:
                assert status(url, "rancher/app", "blobs", blob) == 200, (tag, blob)
        assert status(url, "rancher/other", "manifests", versions.image(OTHER).digest) == 200
        assert (state_dir / "gc.log").read_text().count("blob eligible for deletion") == len(freeable)
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir, env=env)


def test_gc_leaves_a_stopped_registry_stopped_and_refuses_delete_untagged_before_3_0(versions, tmp_path, state_home):
    state_dir, port = tmp_path / "state", testbed.free_port()
    assert up(state_dir, port).returncode == 0
    try:
        empty = run_mirror("registry", "gc", "--state-dir", state_dir)
        assert empty.returncode == 0 and "nothing to collect" in empty.stdout, empty.stderr
        fill(versions, f"127.0.0.1:{port}")
        running = pid(state_dir)
        refused = run_mirror("registry", "gc", "--state-dir", state_dir, "--delete-untagged")
        assert refused.returncode == 2
        [line] = refused.stderr.splitlines()
        assert "this registry is 2.8" in line and "multi-platform" in line
        assert pid(state_dir) == running and serves(port)  # refused before anything stopped
    finally:
        run_mirror("registry", "down", "--state-dir", state_dir)
    result = run_mirror("registry", "gc", "--state-dir", state_dir)
    assert result.returncode == 0, result.stderr
    assert "the registry was not running; left stopped" in result.stdout and not serves(port)

    nothing = run_mirror("registry", "gc", "--state-dir", tmp_path / "none")
    assert nothing.returncode == 2 and "run `mirror registry up` first" in nothing.stderr
    assert not (tmp_path / "none").exists()
