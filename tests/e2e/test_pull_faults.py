"""mirror pull when the source misbehaves: a fault-injecting proxy in front of the real registry."""

from __future__ import annotations

import json
import time

import pytest

from mirror.bundle.reader import BundleReader
from support.cli import run_mirror
from support.faults import FaultProxy


@pytest.fixture
def proxied(seeded_source):
    """The seeded source behind a FaultProxy; yields (proxy, --source-mirror args through it)."""
    with FaultProxy(seeded_source.registry.host) as proxy:
        args = [a.replace(seeded_source.registry.host, proxy.host) for a in seeded_source.mirror_args]
        yield proxy, args


def largest_layer(seeded_source):
    """(image, digest, size) of the corpus's big layer."""
    best = None
    for image in seeded_source.corpus.images:
        for digest in image.blob_digests:
            size = seeded_source.corpus.sizes[digest]
            if best is None or size > best[2]:
                best = (image, digest, size)
    return best


def test_wrong_bytes_from_source_is_an_integrity_failure(proxied, seeded_source, tmp_path):
    proxy, args = proxied
    image, digest, _ = largest_layer(seeded_source)
    proxy.corrupt(f"/blobs/{digest}", times=None)
    output = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", image.source, "-o", output, *args)
    assert result.returncode == 4, result.stderr
    assert digest in result.stderr and image.source in result.stderr
    assert not output.exists()
    assert not any(p.name.startswith("bundle.tar.zst") for p in tmp_path.iterdir())


def test_rate_limited_source_is_waited_for(proxied, seeded_source, tmp_path):
    proxy, args = proxied
    image = seeded_source.corpus.images[0]
    proxy.fail("/manifests/", 429, headers={"Retry-After": "1"}, times=1)
    output = tmp_path / "bundle.tar.zst"
    started = time.monotonic()
    result = run_mirror("pull", image.source, "-o", output, *args, "--json")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0  # it honoured Retry-After instead of hammering
    assert len([r for r in proxy.requests(path="/manifests/") if r.status == 429]) == 1
    with BundleReader(output) as reader:
        assert reader.manifest.images[0].digest == image.digest


def test_interrupted_pull_resumes_where_it_stopped(proxied, seeded_source, tmp_path):
    proxy, args = proxied
    image, digest, size = largest_layer(seeded_source)
    output, work = tmp_path / "bundle.tar.zst", tmp_path / "work"
    cut = size // 200
    # every answer dies after `cut` bytes: the retries of each piece, and the few pieces an idle
    # connection may split off (4 MiB or more each), fall far short of the layer
    proxy.drop(f"/blobs/{digest}", after=cut, times=None)
    first = run_mirror("--retries", "1", "pull", image.source, "-o", output, "--work-dir", work, *args)
    assert first.returncode == 1 and len(first.stderr.strip().splitlines()) == 2, first.stderr  # image + summary
    assert not output.exists()
    asked_before = len(proxy.requests("GET", "/blobs/"))

    proxy.faults.clear()
    second = run_mirror("pull", image.source, "-o", output, "--work-dir", work, *args, "--json")
    assert second.returncode == 0, second.stderr
    big = [r for r in proxy.requests("GET", f"/blobs/{digest}")][-1]
    start = int(big.headers["range"].removeprefix("bytes=").split("-")[0])
    assert start >= cut  # only the rest of the partly fetched layer was asked for
    asked_again = proxy.requests("GET", "/blobs/")[asked_before:]
    assert all(digest in r.path for r in asked_again)  # finished blobs came from the work dir
    with BundleReader(output) as reader:
        assert reader.manifest.images[0].digest == image.digest
    assert json.loads(second.stdout)["reused_bytes"] > 0


def test_keep_going_drops_an_image_whose_blob_is_corrupt(proxied, seeded_source, tmp_path):
    proxy, args = proxied
    image, digest, _ = largest_layer(seeded_source)
    other = next(i for i in seeded_source.corpus.images if digest not in i.blob_digests)
    proxy.corrupt(f"/blobs/{digest}", times=None)
    output = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", image.source, other.source, "-o", output, *args, "--keep-going")
    assert result.returncode == 4, result.stderr
    assert image.source in result.stderr and digest in result.stderr
    with BundleReader(output) as reader:
        assert [r.source for r in reader.manifest.images] == [other.source]
    verified = run_mirror("verify", output)
    assert verified.returncode == 0, verified.stderr


def test_keep_going_drops_an_image_whose_platform_manifest_is_missing(proxied, seeded_source, tmp_path):
    proxy, args = proxied
    index = next(i for i in seeded_source.corpus.images if len(i.platforms) > 1)
    other = next(i for i in seeded_source.corpus.images if len(i.platforms) == 1)
    child = next(iter(index.manifest_digests.values()))
    proxy.fail(f"/manifests/{child}", 404, times=None)
    output = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", index.source, other.source, "-o", output, *args, "--keep-going")
    assert result.returncode == 1, result.stderr
    assert index.source in result.stderr and child in result.stderr  # the image's failure, naming its manifest
    with BundleReader(output) as reader:
        assert [r.source for r in reader.manifest.images] == [other.source]
