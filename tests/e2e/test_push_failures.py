"""mirror push refusing what it cannot do: one line, the exit code for the cause, never a hang."""

from __future__ import annotations

import io
import json
import tarfile

import zstandard

from support.cli import run_mirror
from support.faults import FaultProxy


def test_a_registry_refusing_during_the_survey_is_one_line_with_exit_3(seeded_source, registry, tmp_path):
    bundle = tmp_path / "s.tar.zst"
    assert run_mirror("pull", seeded_source.corpus.images[1].source, "-o", bundle, *seeded_source.mirror_args,
                      "-q").returncode == 0
    with FaultProxy(registry.host) as proxy:
        proxy.fail(r"/blobs/sha256:", 403, method="HEAD", times=None)
        result = run_mirror("push", bundle, "--registry", proxy.host, "--plain-http", "-q")
    assert result.returncode == 3, result.stderr[-800:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-800:]


def test_a_bundle_whose_image_record_omits_a_layer_fails_that_image_instead_of_hanging(
        seeded_source, registry, tmp_path):
    """mirror-bundle.json is input like the rest: it must not be able to make push wait for ever."""
    from mirror.bundle.reader import BundleReader

    image = max(seeded_source.corpus.images, key=lambda i: len(i.blob_digests))
    bundle = tmp_path / "b.tar.zst"
    assert run_mirror("pull", image.source, "-o", bundle, *seeded_source.mirror_args, "-q").returncode == 0
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

    result = run_mirror("push", lying, "--registry", registry.host, "--plain-http", "-q", timeout=90)
    assert result.returncode == 4, result.stderr
    assert dropped in result.stderr and image.source in result.stderr


def test_a_registry_prefix_that_cannot_be_a_repository_name_is_refused_up_front(tmp_path):
    bundle = tmp_path / "missing.tar.zst"  # never opened: the flag is checked first
    result = run_mirror("push", bundle, "--registry", "127.0.0.1:5000/Harbor", "--plain-http")
    assert result.returncode == 2
    assert "127.0.0.1:5000/Harbor" in result.stderr and len(result.stderr.strip().splitlines()) == 1
