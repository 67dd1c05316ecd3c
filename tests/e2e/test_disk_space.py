"""Disks checked before work: pull, push and `registry up` compare what they will write with what the file
systems have free, and stop (exit 2) naming the directory and both numbers before they fill it."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from types import SimpleNamespace

import anyio
import pytest

from mirror.bundle.reader import BundleReader
from mirror.cli.render import report_failures
from mirror.errors import NotFoundError, RegistryError, StorageFull
from mirror.registry.client import RegistryClient
from mirror.registry.settings import RegistrySettings
from mirror.safefiles import write_file
from mirror.server.state import RegistryState, StatePaths, save_state
from mirror.server.storage import managed_registry
from mirror.units import human_size
from support import testbed
from support.cli import run_mirror
from support.faults import FaultProxy
from support.push_checks import catalog, tags_pointing_at_incomplete_images
from support.server import registries_running

SIZE = r"(\d+ B|\d+\.\d [KMG]iB)"


@pytest.fixture
def proxied(seeded_source):
    """The seeded source behind a FaultProxy, which records every request; yields (proxy, --source-mirror args)."""
    with FaultProxy(seeded_source.registry.host) as proxy:
        yield proxy, [a.replace(seeded_source.registry.host, proxy.host) for a in seeded_source.mirror_args]


def free_bytes(path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def in_bytes(size: str) -> float:
    number, unit = size.split()
    return float(number) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]


def one_line(stderr: str) -> str:
    line = stderr.removesuffix("\n")
    assert "\n" not in line, stderr
    return line


def test_a_pull_into_a_disk_far_too_small_stops_before_any_download(proxied, seeded_source, small_disk):
    """A full work dir ended the pull with a bare `[Errno 28]` after downloading what fitted."""
    proxy, args = proxied
    images = [image.source for image in seeded_source.corpus.images if len(image.platforms) > 1]  # no config
    free = free_bytes(small_disk)  # fetched while resolving: every blob GET is a download
    result = run_mirror("pull", *images, "-o", small_disk / "b.tar.zst", *args, "-q")
    assert result.returncode == 2, result.stderr
    match = re.fullmatch(
        rf"mirror: error: not enough space in {re.escape(str(small_disk))} \(the bundle and the work dir\): this "
        rf"pull needs at least {SIZE} there \(for the 1 of {len(images)} images resolved so far\), {SIZE} is free; "
        r"free some, or put the work dir \(--work-dir\) or the bundle \(-o\) on a larger disk; or pass "
        r"--no-space-check", one_line(result.stderr))
    assert match, result.stderr
    assert in_bytes(match[1]) > free and match[2] == human_size(free)
    assert proxy.requests("GET", "/blobs/") == []
    assert list(small_disk.iterdir()) == []


def test_a_pull_stops_before_the_image_that_would_fill_the_disk(proxied, seeded_source, tmpfs, tmp_path):
    """Downloads start as images resolve: the check is a running total, and the blob that would not fit
    is never asked for. On one file system the work dir and the bundle both count."""
    proxy, args = proxied
    corpus = seeded_source.corpus
    small = corpus.image("docker.io/rancher/mirrored-pause:3.6")
    large = corpus.image("docker.io/rancher/rancher-agent:v2.6.8")
    layer = max(large.blob_digests, key=lambda digest: corpus.sizes[digest])
    disk = tmpfs(tmp_path / "disk", "8m")  # the pause image fits, the agent's 20 MiB layer does not
    result = run_mirror("pull", small.source, large.source, "-o", disk / "b.tar.zst", *args, "-q")
    assert result.returncode == 2, result.stderr
    match = re.search(rf"this pull needs (?:at least|about) {SIZE} there", one_line(result.stderr))
    assert match and in_bytes(match[1]) > 2 * corpus.sizes[layer], result.stderr
    assert proxy.requests("GET", f"/blobs/{layer}") == []
    assert list(disk.iterdir()) == []


def said_full_once(bundle, host: str, where: str) -> str:
    """What push prints when the registry's disk fills: one line for all of the bundle's images."""
    images = len(BundleReader(bundle).manifest.images)
    return (f"mirror: failed: {images} image(s) not sent to {host}: registry storage full ({where}); free space on "
            "its disk, then run again\n")


@pytest.fixture
def full_registry(small_disk, tmp_path):
    """A registry whose storage is the 256 KiB disk: full after the first few blobs."""
    directory = tmp_path / "full-registry"
    directory.mkdir()
    (directory / "storage").symlink_to(small_disk)
    registry = testbed.start_registry(directory)
    yield registry
    registry.stop()


def test_a_push_into_a_registry_whose_disk_fills_says_so_once_and_tags_nothing_broken(corpus_bundle,
                                                                                        full_registry):
    """The registry answered 500 with the errno in its error's detail; push retried each request and printed
    a line per image (701 for a Rancher set) telling to check that the registry is up."""
    result = run_mirror("push", corpus_bundle, "--registry", full_registry.host, "--plain-http", "-q")
    assert result.returncode == 1, result.stderr
    assert result.stderr == said_full_once(corpus_bundle, full_registry.host,
                                           f"under {full_registry.directory / 'storage'}")
    assert tags_pointing_at_incomplete_images(full_registry) == []



def test_a_push_checks_its_spool_before_uploading_and_names_it_when_it_fills(corpus_bundle, registry, small_disk):
    """The spool's temp files live within --window: a spool dir with less room than that stops the push before
    any upload, and one that fills anyway (--no-space-check) is named in one line, not one per image."""
    args = ["push", corpus_bundle, "--registry", registry.host, "--plain-http", "--spool-dir", small_disk, "-q"]
    refused = run_mirror(*args)
    assert refused.returncode == 2, refused.stderr
    assert re.fullmatch(
        rf"mirror: error: not enough space in {re.escape(str(small_disk))} \(the push spool\): this push needs "
        rf"about {SIZE} there, {SIZE} is free; free some, or pass --spool-dir elsewhere or a smaller --window; or "
        r"pass --no-space-check", one_line(refused.stderr)), refused.stderr
    assert catalog(registry) == []
    filled = run_mirror(*args, "--no-space-check")
    assert filled.returncode == 1, filled.stderr
    images = len(BundleReader(corpus_bundle).manifest.images)
    assert filled.stderr.splitlines() == [
        f"mirror: failed: {images} image(s) not sent: cannot write the push spool in {small_disk} (No space left on "
        "device); free some space there, or pass --spool-dir elsewhere or a smaller --window"]
    assert tags_pointing_at_incomplete_images(registry) == []
    assert list(small_disk.iterdir()) == []

def registry_up(state_dir, port, data_dir, *extra):
    return run_mirror("registry", "up", "--state-dir", state_dir, "--port", str(port), "--address", "127.0.0.1",
                      "--engine", "binary", "--no-tls", "--auth", "none", "--data-dir", data_dir, *extra)


@pytest.fixture
def managed(tmp_path):
    """(state dir, port) for `registry up`; whatever it started is stopped after the test."""
    state_dir = tmp_path / "state"
    yield state_dir, testbed.free_port()
    run_mirror("registry", "down", "--state-dir", state_dir)


def test_registry_up_refuses_a_data_dir_too_small_for_the_bundle_it_is_given(corpus_bundle, small_disk, managed):
    """`up --from-bundle` says what comes next: that bundle's images, pushed into its data dir."""
    state_dir, port = managed
    free = free_bytes(small_disk)
    result = registry_up(state_dir, port, small_disk, "--from-bundle", corpus_bundle)
    assert result.returncode == 2, result.stderr
    match = re.fullmatch(
        rf"mirror: error: not enough space in {re.escape(str(small_disk))} \(the registry's data dir\): pushing "
        rf"{corpus_bundle.name} into it needs about {SIZE} there, {SIZE} is free; free some there, or run "
        r"`mirror registry up` without --from-bundle to serve what it holds; or pass --no-space-check",
        one_line(result.stderr))
    assert match, result.stderr
    assert in_bytes(match[1]) > BundleReader(corpus_bundle).manifest.total_size and match[2] == human_size(free)
    assert registries_running("binary", state_dir, None) == 0


def test_a_push_into_the_registry_up_manages_checks_its_data_dir_and_names_it_when_full(corpus_bundle, small_disk,
                                                                                      managed):
    """Without a bundle `up` starts on a small disk (it serves what it holds); a push into it stops before any
    upload, and with --no-space-check fills it: one line naming the data dir, no tag on a broken image."""
    state_dir, port = managed
    started = registry_up(state_dir, port, small_disk)
    assert started.returncode == 0, started.stderr
    env = {"MIRROR_STATE_DIR": str(state_dir)}
    refused = run_mirror("push", corpus_bundle, "-q", env=env)
    assert refused.returncode == 2, refused.stderr
    assert re.fullmatch(
        rf"mirror: error: not enough space in {re.escape(str(small_disk))} \(the registry's data dir\): this push "
        rf"needs about {SIZE} there, {SIZE} is free; free some there; or pass --no-space-check",
        one_line(refused.stderr)), refused.stderr
    registry = SimpleNamespace(url=f"http://127.0.0.1:{port}")  # what the helpers below read
    assert catalog(registry) == []
    pushed = run_mirror("push", corpus_bundle, "-q", "--no-space-check", env=env)
    assert pushed.returncode == 1, pushed.stderr
    assert pushed.stderr == said_full_once(corpus_bundle, f"127.0.0.1:{port}", f"data dir {small_disk}")
    assert tags_pointing_at_incomplete_images(registry) == []


def test_registry_up_counts_only_what_its_data_dir_does_not_hold_yet(corpus_bundle, tmpfs, tmp_path, managed):
    """A data dir that already holds the bundle's images takes it again however full its disk: re-running
    `up --from-bundle` after a reboot must not be refused for what is there."""
    state_dir, port = managed
    data_dir = tmpfs(tmp_path / "data", "64m")
    assert registry_up(state_dir, port, data_dir, "--from-bundle", corpus_bundle).returncode == 0
    pushed = run_mirror("push", corpus_bundle, "-q", env={"MIRROR_STATE_DIR": str(state_dir)})
    assert pushed.returncode == 0, pushed.stderr
    (data_dir / "filler").write_bytes(b"\0" * (free_bytes(data_dir) - 64 * 1024))
    again = registry_up(state_dir, port, data_dir, "--from-bundle", corpus_bundle)
    assert again.returncode == 0, again.stderr


def test_a_5xx_from_the_registry_up_manages_is_storage_full_when_its_log_says_so_during_the_run(tmp_path,
                                                                                                   capsys):
    """A registry may answer a full disk with a bare 500; `up`'s own registry logs why. A line from an
    earlier run (last month's full disk) says nothing about this one."""
    paths = StatePaths(tmp_path / "state")
    save_state(paths, RegistryState(engine="binary", host="127.0.0.1:5000", hostnames=["reg.test", "127.0.0.1"],
                                    port=5000, address="0.0.0.0", data_dir=str(tmp_path / "data"), tls=False))
    full = ('level=error msg="response completed with error" err.detail="write /var/lib/registry/x: no space left '
            'on device"')
    paths.log_file.write_text(f'time="2026-05-01T10:00:00.5Z" {full}\n')
    since = datetime(2026, 6, 1, tzinfo=timezone.utc)
    bare = RegistryError("upload of blob sha256:ab to reg.test:5000/x: reg.test:5000 answered 500 (UNKNOWN: unknown "
                         "error), 6 attempt(s); check that the registry is up and reachable, then run again", 500)
    missing = NotFoundError("manifest reg.test:5000/y not found", 404)
    assert managed_registry("other.test:5000", paths.root) is None
    managed = managed_registry("reg.test:5000", paths.root)
    assert managed is not None and managed.explain({"a": bare}, since) == {"a": bare}
    with open(paths.log_file, "a") as log:
        log.write(f'time="2026-06-01T00:00:01.123456789Z" {full}\n')
    explained = managed.explain({"a": bare, "b": bare, "c": missing}, since)
    assert explained["c"] is missing
    report_failures({"a": str(bare), "b": str(bare), "c": str(missing)}, explained)
    assert capsys.readouterr().err.splitlines() == [
        f"mirror: failed: c: {missing}",
        f"mirror: failed: 2 image(s) not sent to reg.test:5000: registry storage full (data dir {tmp_path / 'data'}); "
        "free space on its disk, then run again"]


@pytest.mark.parametrize("detail", [
    '"write /srv/registry/docker/registry/v2/repositories/x/_uploads/u/data: no space left on device"',
    '{"DriverName": "filesystem", "Enclosed": {"Op": "write", "Err": 28, '
    '"Path": "/srv/registry/docker/registry/v2/repositories/x/_uploads/u/startedat"}}',
], ids=["text", "errno"])
def test_an_answer_that_the_registry_disk_is_full_is_storage_full_at_once(registry, detail):
    """distribution words a full disk in its error's detail, as text (a PATCH) or as the driver's errno (a
    POST); each was retried six times, then reported as a registry that stopped answering."""
    body = f'{{"errors": [{{"code": "UNKNOWN", "message": "unknown error", "detail": {detail}}}]}}'.encode()
    data = b"layer"

    async def upload() -> None:
        async with RegistryClient(proxy.host, RegistrySettings(plain_http=True)) as client:
            await client.upload_blob("x", "sha256:" + hashlib.sha256(data).hexdigest(), len(data), data)

    with FaultProxy(registry.host) as proxy:
        proxy.serve(r"/blobs/uploads/", body, status=500, method="POST")
        with pytest.raises(StorageFull) as caught:
            anyio.run(upload)
        assert len(proxy.requests("POST", r"/blobs/uploads/")) == 1
    assert caught.value.where == "/srv/registry" and "registry storage full" in str(caught.value)


def test_a_file_written_onto_a_full_disk_names_itself(small_disk):
    """A sync report, an inventory or the registry state onto a full disk ended in a bare `[Errno 28] No space
    left on device`: a failed write names no file."""
    (small_disk / "filler").write_bytes(b"\0" * free_bytes(small_disk))
    report = small_disk / "sync-report.json"
    with pytest.raises(OSError) as caught:
        write_file(report, b"{}" * 4096)
    assert str(caught.value) == f"[Errno 28] No space left on device: '{report}'"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
