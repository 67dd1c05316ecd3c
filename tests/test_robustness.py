"""What must not happen to an operator: a deleted directory, a hang, a traceback, a silently wrong image.

Each test is a case a review found broken (a user's --work-dir deleted, a hang
on a full work dir, a race between two tags of one image, --platform ignored
for single-platform images, images from a registry with a port unpushable, a
registry refusal turning into a traceback).
"""

from __future__ import annotations

import json
import subprocess
import tarfile

import httpx
import pytest
import zstandard

from conftest import run_mirror
from faults import FaultProxy


def mirror_timed(*args, timeout=90, **kwargs):
    try:
        return run_mirror(*args, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mirror {args[0]} hung (> {timeout}s)")


def single_platform_image(seeded_source):
    return next(i for i in seeded_source.corpus.images if len(i.platforms) == 1)


def test_a_work_dir_given_by_the_user_is_not_deleted(seeded_source, tmp_path):
    work = tmp_path / "cache"
    work.mkdir()
    (work / "notes.txt").write_text("not mirror's")
    result = mirror_timed("pull", seeded_source.corpus.images[1].source, "-o", tmp_path / "b.tar.zst",
                          "--work-dir", work, *seeded_source.mirror_args, "-q")
    assert result.returncode == 0, result.stderr
    assert (work / "notes.txt").read_text() == "not mirror's"


def test_a_work_dir_that_cannot_be_written_ends_the_pull_in_one_line(seeded_source, tmp_path):
    image = single_platform_image(seeded_source)
    layer = max(image.blob_digests, key=lambda d: seeded_source.corpus.sizes[d])
    work = tmp_path / "work"
    (work / "blobs" / "sha256" / f"{layer.split(':')[1]}.partial").mkdir(parents=True)  # in the download's way
    output = tmp_path / "b.tar.zst"
    result = mirror_timed("pull", image.source, "-o", output, "--work-dir", work, *seeded_source.mirror_args, "-q")
    assert result.returncode == 1, result.stderr
    assert layer in result.stderr and "work dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "work"] == []  # no bundle, no temp file


def test_many_tags_of_one_single_platform_image(seeded_source, tmp_path):
    image = single_platform_image(seeded_source)
    repository = seeded_source.corpus.seeded_reference(image.source).split("/", 1)[1].rsplit(":", 1)[0]
    base = f"{seeded_source.registry.url}/v2/{repository}/manifests"
    manifest = httpx.get(f"{base}/{image.tag}", headers={"Accept": image.media_type})
    sources = []
    for i in range(8):
        httpx.put(f"{base}/alias{i}", content=manifest.content,
                  headers={"Content-Type": manifest.headers["content-type"]}).raise_for_status()
        sources.append(image.source.rsplit(":", 1)[0] + f":alias{i}")
    bundle = tmp_path / "b.tar.zst"
    result = mirror_timed("pull", *sources, "-o", bundle, *seeded_source.mirror_args, "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(bundle, "rb") as raw, tarfile.open(
            fileobj=zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), mode="r|") as tar:
        index = next(json.load(tar.extractfile(m)) for m in tar if m.name == "index.json")
    named = {m["annotations"]["io.containerd.image.name"]: m["digest"] for m in index["manifests"]}
    assert named == {source: image.digest for source in sources}  # every tag, none lost, none swapped


def test_platform_filter_applies_to_single_platform_images(seeded_source, tmp_path):
    image = single_platform_image(seeded_source)
    other = "linux/arm64" if "amd64" in image.platforms[0] else "linux/amd64"
    output = tmp_path / "b.tar.zst"
    result = mirror_timed("pull", image.source, "--platform", other, "-o", output, *seeded_source.mirror_args)
    assert result.returncode == 1, result.stderr
    assert image.source in result.stderr and image.platforms[0] in result.stderr
    assert not output.exists()


def test_an_image_from_a_registry_with_a_port_can_be_pushed(seeded_source, registry, tmp_path):
    image = single_platform_image(seeded_source)
    source = seeded_source.corpus.seeded_reference(image.source)  # 127.0.0.1:PORT/...
    bundle = tmp_path / "b.tar.zst"
    pulled = mirror_timed("pull", source, "--plain-http-registry", seeded_source.registry.host, "-o", bundle, "-q")
    assert pulled.returncode == 0, pulled.stderr
    pushed = mirror_timed("push", bundle, "--registry", registry.host, "--plain-http", "-q")
    assert pushed.returncode == 0, pushed.stderr[-1500:]
    repository = source.rsplit(":", 1)[0].replace(":", "_")
    assert httpx.get(f"{registry.url}/v2/{repository}/manifests/{image.tag}",
                     headers={"Accept": image.media_type}).status_code == 200


def test_a_registry_refusing_during_the_survey_is_one_line_with_exit_3(seeded_source, registry, tmp_path):
    bundle = tmp_path / "s.tar.zst"
    assert mirror_timed("pull", seeded_source.corpus.images[1].source, "-o", bundle, *seeded_source.mirror_args,
                        "-q").returncode == 0
    with FaultProxy(registry.host) as proxy:
        proxy.fail(r"/blobs/sha256:", 403, method="HEAD", times=None)
        result = mirror_timed("push", bundle, "--registry", proxy.host, "--plain-http", "-q")
    assert result.returncode == 3, result.stderr[-800:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-800:]


def test_a_bundle_whose_image_record_omits_a_layer_fails_that_image_instead_of_hanging(
        seeded_source, registry, tmp_path):
    """mirror-bundle.json is input like the rest: it must not be able to make push wait for ever."""
    import io

    from mirror.bundle.reader import BundleReader

    image = max(seeded_source.corpus.images, key=lambda i: len(i.blob_digests))
    bundle = tmp_path / "b.tar.zst"
    assert mirror_timed("pull", image.source, "-o", bundle, *seeded_source.mirror_args, "-q").returncode == 0
    with BundleReader(bundle) as reader:
        record = reader.manifest.images[0]
    dropped = [d for d in record.blobs if d not in record.manifests][-1]

    raw = zstandard.ZstdDecompressor().stream_reader(open(bundle, "rb"), read_across_frames=True).read()
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tin, tarfile.open(fileobj=out, mode="w",
                                                                   format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            if member.name == "mirror-bundle.json":
                document = json.loads(data)
                document["images"][0]["blobs"].remove(dropped)
                data = json.dumps(document).encode()
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
    lying = tmp_path / "lying.tar.zst"
    lying.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))

    result = mirror_timed("push", lying, "--registry", registry.host, "--plain-http", "-q")
    assert result.returncode == 4, result.stderr
    assert dropped in result.stderr and image.source in result.stderr


def test_a_registry_prefix_that_cannot_be_a_repository_name_is_refused_up_front(tmp_path):
    bundle = tmp_path / "missing.tar.zst"  # never opened: the flag is checked first
    result = mirror_timed("push", bundle, "--registry", "127.0.0.1:5000/Harbor", "--plain-http")
    assert result.returncode == 2
    assert "127.0.0.1:5000/Harbor" in result.stderr and len(result.stderr.strip().splitlines()) == 1
