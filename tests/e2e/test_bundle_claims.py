"""What mirror-bundle.json claims is checked against the bundle on open, before any consumer acts on it."""

from __future__ import annotations

import json
import os

import pytest

from mirror.bundle.format import BundleManifest, ImageRecord
from mirror.bundle.reader import BundleReader
from mirror.errors import IntegrityError
from support.cli import run_mirror
from support.crafted_bundles import (
    INDEX, LAYER, LAYOUT, OCI_MANIFEST, TOP, blob_member, craft_bundle, digest_of, good_members, regular,
)


def fake_digests(count: int, start: int = 1) -> list[str]:
    return [f"sha256:{n:064x}" for n in range(start, start + count)]


def bundle_claiming(path, images: list[list[str]], padding: bytes = b"", named: list[str] = ()):
    """A well-formed bundle (a real layer and manifest) whose header adds ``images``, each listing those blobs."""
    records = [ImageRecord("docker.io/library/x:1", digest_of(TOP), OCI_MANIFEST, len(TOP), ["linux/amd64"],
                           [digest_of(LAYER)])]
    records += [ImageRecord(f"docker.io/library/fake{n}:1", digest_of(TOP), OCI_MANIFEST, len(TOP), [], [])
                for n in range(len(images))]
    doc = json.loads(BundleManifest(records, {digest_of(LAYER): len(LAYER), digest_of(TOP): len(TOP)}).to_json())
    for record, blobs in zip(doc["images"][1:], images):  # added as JSON: the model would take long for 200,000
        record["blobs"] = blobs
        doc["blobs"].update(dict.fromkeys(blobs, 1))
    doc["blobs"].update(dict.fromkeys(named, 1))
    members = [regular("mirror-bundle.json", json.dumps(doc).encode()), LAYOUT, blob_member(LAYER)]
    if padding:
        members.append(blob_member(padding))
    return craft_bundle(path, members + [blob_member(TOP), INDEX])


def test_a_small_bundle_naming_200000_blobs_is_refused_before_any_network_work(tmp_path):
    bomb = bundle_claiming(tmp_path / "many.tar.zst", [fake_digests(200_000)])
    assert bomb.stat().st_size < 4 << 20
    for args in (["inspect", bomb], ["push", bomb, "--registry", "127.0.0.1:9", "--plain-http"]):  # port 9: closed
        result = run_mirror(*args)
        assert result.returncode == 4, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"bundle {bomb}: refusing mirror-bundle.json: it names 200002 blobs" in lines[0]


def test_one_image_listing_more_blobs_than_any_image_has_is_refused(tmp_path):
    big = bundle_claiming(tmp_path / "big.tar.zst", [fake_digests(20_000)], padding=os.urandom(400_000))
    with pytest.raises(IntegrityError, match=f"bundle {big}: refusing mirror-bundle.json: image "
                                             r"docker.io/library/fake0:1 lists 20001 blobs \(at most 20000\)"):
        BundleReader(big)


def test_images_listing_the_same_blobs_over_and_over_are_refused(tmp_path):
    path = bundle_claiming(tmp_path / "repeats.tar.zst", [fake_digests(200)] * 2000)
    with pytest.raises(IntegrityError) as caught:
        BundleReader(path)
    assert f"bundle {path}: refusing mirror-bundle.json: its images list 402002 blobs in all" in str(caught.value)
    assert caught.value.exit_code == 4


def test_an_image_needing_a_blob_the_bundle_does_not_name_is_refused(tmp_path):
    unknown = fake_digests(1)[0]
    members = good_members()
    doc = BundleManifest.from_json(members[0][1])
    doc.images[0].blobs.append(unknown)
    members[0] = regular("mirror-bundle.json", doc.to_json())
    path = craft_bundle(tmp_path / "unknown.tar.zst", members)
    with pytest.raises(IntegrityError, match=f"image docker.io/library/x:1 needs blob {unknown}, which it neither"):
        BundleReader(path)


def test_a_real_sized_header_passes(tmp_path):
    path = bundle_claiming(tmp_path / "fine.tar.zst", [fake_digests(150)] * 10, named=fake_digests(50, start=1000))
    with BundleReader(path) as reader:
        assert len(reader.manifest.images) == 11
