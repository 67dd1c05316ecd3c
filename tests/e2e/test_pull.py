"""mirror pull against a real loopback registry standing in for docker.io and quay.io."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile

import httpx
import pytest

from mirror.bundle.reader import BundleReader
from support.cli import run_mirror
from support.corpus_fixtures import single_platform_image


def unpack(bundle, tmp_path):
    """What a user does before handing a bundle to skopeo or ctr: ``zstd -d``."""
    tar = tmp_path / "bundle.tar"
    subprocess.run(["zstd", "-q", "-f", "-d", str(bundle), "-o", str(tar)], check=True)
    return tar


def pull(seeded_source, tmp_path, *refs, extra=()):
    output = tmp_path / "bundle.tar.zst"
    result = run_mirror("pull", *refs, "-o", output, *seeded_source.mirror_args, "--json", *extra)
    return result, output


@pytest.fixture(scope="module")
def full_bundle(seeded_source, tmp_path_factory):
    """Every image of the small corpus, pulled once for the read-only tests below."""
    tmp_path = tmp_path_factory.mktemp("full")
    refs = [image.source for image in seeded_source.corpus.images]
    result, output = pull(seeded_source, tmp_path, *refs)
    assert result.returncode == 0, result.stderr
    return output, json.loads(result.stdout), tmp_path


def test_bundle_keeps_every_source_digest(full_bundle, seeded_source):
    bundle, report, _ = full_bundle
    pulled = {image["source"]: image["digest"] for image in report["images"]}
    expected = {image.source: image.digest for image in seeded_source.corpus.images}
    assert pulled == expected
    with BundleReader(bundle) as reader:
        assert {r.source: r.digest for r in reader.manifest.images} == expected


def test_skopeo_reads_the_unpacked_bundle(full_bundle, seeded_source):
    bundle, _, tmp_path = full_bundle
    tar = unpack(bundle, tmp_path)
    index = json.loads(tarfile.open(tar).extractfile("index.json").read())
    by_name = {m["annotations"]["io.containerd.image.name"]: m for m in index["manifests"]}
    tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    checked = 0
    for image in seeded_source.corpus.images:
        assert by_name[image.source]["digest"] == image.digest
        if tags.count(image.tag) != 1:
            continue  # skopeo needs a ref name unique in the layout
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tar}:{image.tag}"],
                             check=True, capture_output=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest
        checked += 1
    assert checked >= 3


def test_shared_layers_are_stored_once(full_bundle, seeded_source):
    bundle, _, tmp_path = full_bundle
    names = [m.name for m in tarfile.open(unpack(bundle, tmp_path)).getmembers()]
    blobs = [n for n in names if n.startswith("blobs/sha256/")]
    assert len(blobs) == len(set(blobs))
    images = seeded_source.corpus.images
    shared = {d for d in set().union(*(i.blob_digests for i in images))
              if sum(d in i.blob_digests for i in images) > 1}
    assert shared, "the corpus must share layers between images"
    for digest in shared:
        assert f"blobs/sha256/{digest.split(':')[1]}" in blobs


def test_platform_narrowing_keeps_child_digests(seeded_source, tmp_path):
    image = next(i for i in seeded_source.corpus.images if len(i.platforms) > 1)
    result, output = pull(seeded_source, tmp_path, image.source, extra=("--platform", "linux/arm64"))
    assert result.returncode == 0, result.stderr
    with BundleReader(output) as reader:
        record = reader.manifest.images[0]
        assert record.narrowed_from == image.digest
        assert record.platforms == ["linux/arm64/v8"] or record.platforms == ["linux/arm64"]
        assert image.manifest_digests[next(p for p in image.platforms if "arm64" in p)] in record.blobs
        for platform, digest in image.manifest_digests.items():
            if "arm64" not in platform:
                assert digest not in record.blobs


def test_missing_image_fails_and_writes_no_bundle(seeded_source, tmp_path):
    present = seeded_source.corpus.images[0].source
    result, output = pull(seeded_source, tmp_path, present, "docker.io/rancher/does-not-exist:v1")
    assert result.returncode == 1
    assert "docker.io/rancher/does-not-exist:v1" in result.stderr
    assert not output.exists()
    assert not any(p.name.startswith("bundle.tar.zst") for p in tmp_path.iterdir())


def test_keep_going_writes_the_rest_and_still_names_the_failure(seeded_source, tmp_path):
    present = seeded_source.corpus.images[0].source
    result, output = pull(seeded_source, tmp_path, present, "docker.io/rancher/does-not-exist:v1",
                          extra=("--keep-going",))
    assert result.returncode == 1
    assert "does-not-exist" in result.stderr
    with BundleReader(output) as reader:
        assert [r.source for r in reader.manifest.images] == [present]


def test_bad_reference_is_a_usage_error(tmp_path):
    result = run_mirror("pull", "docker.io/Rancher/UPPER:case", "-o", tmp_path / "b.tar.zst")
    assert result.returncode == 2
    assert "Rancher/UPPER" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.tar.zst").exists()


def test_dry_run_prints_the_list_and_download_size_and_writes_nothing(seeded_source, tmp_path):
    images = seeded_source.corpus.images[:3]
    result = run_mirror("pull", *[i.source for i in images], "-o", tmp_path / "b.tar.zst",
                        *seeded_source.mirror_args, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == [i.source for i in images]
    sizes = seeded_source.corpus.sizes
    needed = set().union(*(i.blob_digests | set(i.manifest_digests.values()) | {i.digest} for i in images))
    assert report["download_bytes"] == sum(sizes[d] for d in needed)
    assert list(tmp_path.iterdir()) == []


def test_json_report_on_failure_says_why_and_no_bundle(seeded_source, tmp_path):
    result = run_mirror("pull", "docker.io/rancher/does-not-exist:v1", "-o", tmp_path / "b.tar.zst",
                        *seeded_source.mirror_args, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["bundle"] is None and report["exit_code"] == 1
    assert list(report["failures"]) == ["docker.io/rancher/does-not-exist:v1"]


def test_narrowed_bundle_is_pushed_and_read_back_by_containerd_for_that_platform(
        seeded_source, registry, containerd, tmp_path):
    image = next(i for i in seeded_source.corpus.images if len(i.platforms) > 1 and "linux/arm64/v8" in i.platforms)
    accept = {"Accept": image.media_type}
    upstream = httpx.get(f"{seeded_source.registry.url}/v2/{image.repository}/manifests/{image.tag}", headers=accept)
    upstream.raise_for_status()
    upstream_digest = "sha256:" + hashlib.sha256(upstream.content).hexdigest()
    arm64 = next(m for m in upstream.json()["manifests"] if m["platform"]["architecture"] == "arm64")

    result, output = pull(seeded_source, tmp_path, image.source, extra=("--platform", "linux/arm64"))
    assert result.returncode == 0, result.stderr
    inspected = run_mirror("inspect", output, "--json")
    assert inspected.returncode == 0, inspected.stderr
    [record] = json.loads(inspected.stdout)["images"]
    assert record["narrowed_from"] == upstream_digest
    assert record["digest"] != upstream_digest  # the narrowed index is a new document

    pushed = run_mirror("push", output, "--registry", registry.host, "--plain-http", "-q")
    assert pushed.returncode == 0, pushed.stderr
    repository = image.source.removeprefix("docker.io/").rsplit(":", 1)[0]  # README "Target layout"
    target = f"{registry.host}/{repository}:{image.tag}"
    served = httpx.get(f"{registry.url}/v2/{repository}/manifests/{image.tag}", headers=accept)
    assert "sha256:" + hashlib.sha256(served.content).hexdigest() == record["digest"]
    assert [m["digest"] for m in served.json()["manifests"]] == [arm64["digest"]]  # the child keeps its digest

    by_platform = containerd.ctr("images", "pull", "--plain-http", "--platform", "linux/arm64", target)
    assert by_platform.returncode == 0, by_platform.stderr
    listed = containerd.ctr("images", "ls").stdout
    assert any(target in line and record["digest"] in line for line in listed.splitlines()), listed
    other = containerd.ctr("images", "pull", "--plain-http", "--platform", "linux/amd64",
                           f"{registry.host}/{repository}@{record['digest']}")
    assert other.returncode != 0 and "no match for platform" in other.stderr, other.stderr  # none other kept


def test_many_tags_of_one_single_platform_image(seeded_source, tmp_path):
    image = single_platform_image(seeded_source.corpus)
    repository = seeded_source.corpus.seeded_reference(image.source).split("/", 1)[1].rsplit(":", 1)[0]
    base = f"{seeded_source.registry.url}/v2/{repository}/manifests"
    manifest = httpx.get(f"{base}/{image.tag}", headers={"Accept": image.media_type})
    sources = []
    for i in range(8):
        httpx.put(f"{base}/alias{i}", content=manifest.content,
                  headers={"Content-Type": manifest.headers["content-type"]}).raise_for_status()
        sources.append(image.source.rsplit(":", 1)[0] + f":alias{i}")
    bundle = tmp_path / "b.tar.zst"
    result = run_mirror("pull", *sources, "-o", bundle, *seeded_source.mirror_args, "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    index = json.loads(tarfile.open(unpack(bundle, tmp_path)).extractfile("index.json").read())
    named = {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in index["manifests"]}
    assert named == {source: image.digest for source in sources}  # every tag, none lost, none swapped


def test_platform_filter_applies_to_single_platform_images(seeded_source, tmp_path):
    image = single_platform_image(seeded_source.corpus)
    other = "linux/arm64" if "amd64" in image.platforms[0] else "linux/amd64"
    output = tmp_path / "b.tar.zst"
    result = run_mirror("pull", image.source, "--platform", other, "-o", output, *seeded_source.mirror_args)
    assert result.returncode == 1, result.stderr
    assert image.source in result.stderr and image.platforms[0] in result.stderr
    assert not output.exists()
