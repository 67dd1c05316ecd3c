"""Disks checked before work: pull, push and `registry up` compare what they will write with what the file
systems have free, and stop (exit 2) naming the directory and both numbers before they fill it."""

from __future__ import annotations

import hashlib
import os
import re

import anyio
import pytest

import testbed
from conftest import run_mirror
from faults import FaultProxy
from mirror.bundle.reader import BundleReader
from mirror.errors import StorageFull
from mirror.registry.client import RegistryClient
from mirror.registry.settings import RegistrySettings
from mirror.safefiles import write_file
from mirror.units import human_size
from test_push import tags_pointing_at_incomplete_images

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
        r"free some, or put the work dir \(--work-dir\) or the bundle \(-o\) on a larger disk, or pass "
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
    images = len(BundleReader(corpus_bundle).manifest.images)
    assert result.stderr.splitlines() == [
        f"mirror: failed: {images} image(s) not sent to {full_registry.host}: registry storage full (under "
        f"{full_registry.directory / 'storage'}); free space on its disk, then run again"]
    assert tags_pointing_at_incomplete_images(full_registry) == []



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
