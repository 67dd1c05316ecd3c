"""Disks checked before work: pull, push and `registry up` compare what they will write with what the file
systems have free, and stop (exit 2) naming the directory and both numbers before they fill it."""

from __future__ import annotations

import os
import re

import pytest

from conftest import run_mirror
from faults import FaultProxy
from mirror.units import human_size

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
