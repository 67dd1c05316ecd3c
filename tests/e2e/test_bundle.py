"""Bundles written from a work store: layout, order, standard tools, splitting, failures, verify, inspect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from mirror.bundle.inspect import summarize_bundle
from mirror.bundle.verify import VerificationFailed, verify_bundle
from mirror.bundle.format import BundleManifest, ImageRecord
from mirror.bundle.reader import BundleReader
from mirror.bundle import writer
from mirror.bundle.writer import plan_blobs, write_bundle
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.bundle.store import BlobStore
from support.bundle_fixtures import BUSYBOX, KLIPPER, WEBHOOK, generated, manifest_for, store  # noqa: F401  (fixtures)
from support.crafted_bundles import craft_bundle, regular

def children_of(data: bytes) -> list[str]:
    doc = json.loads(data)
    if "manifests" in doc:
        return [d["digest"] for d in doc["manifests"]]
    return [doc["config"]["digest"]] + [d["digest"] for d in doc["layers"]]


def shared_base_layer(generated) -> str:
    """The amd64 base layer: used by all three images."""
    users = {}
    for image in generated.images:
        for digest in image.blobs:
            users.setdefault(digest, set()).add(image.source)
    return next(d for d, sources in users.items() if len(sources) == 3)


def decompress(bundle: Path, tmp_path: Path) -> Path:
    tar = tmp_path / "bundle.tar"
    subprocess.run(["zstd", "-d", "-q", "-f", str(bundle), "-o", str(tar)], check=True)
    return tar


def test_round_trip_keeps_bytes_and_streaming_order(tmp_path, generated, store):
    bundle = manifest_for(generated)
    written = write_bundle(tmp_path / "b.tar.zst", bundle, store)
    assert written.parts == [tmp_path / "b.tar.zst"] and written.size == written.path.stat().st_size

    with BundleReader(written.path) as reader:
        assert reader.manifest == bundle
        entries = [(entry.name, entry.digest, entry.read(limit=1 << 30)) for entry in reader.entries()]

    names = [name for name, _, _ in entries]
    assert names[0] == "oci-layout" and names[-1] == "index.json"
    blobs = [(digest, data) for _, digest, data in entries if digest]
    assert sorted(d for d, _ in blobs) == sorted(bundle.blobs)  # each stored blob exactly once
    position = {digest: n for n, (digest, _) in enumerate(blobs)}
    manifests = 0
    for digest, data in blobs:
        assert data == store.read(digest)
        if data.startswith(b"{") and b'"schemaVersion"' in data:
            manifests += 1
            assert all(position[child] < position[digest] for child in children_of(data)), digest
    assert manifests == 3 + 3 + 1  # klipper list + 2, webhook index + 2, busybox

    index = json.loads(entries[-1][2])
    by_name = {m["annotations"]["io.containerd.image.name"]: m for m in index["manifests"]}
    assert by_name[KLIPPER]["annotations"]["org.opencontainers.image.ref.name"] == "v0.7.3-build20220613"
    assert by_name[KLIPPER]["digest"] == generated.images[0].digest


def test_shared_layer_stored_once(tmp_path, generated, store):
    written = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store)
    listing = subprocess.run(["tar", "-tf", str(decompress(written.path, tmp_path))],
                             capture_output=True, text=True, check=True).stdout.split()
    base = shared_base_layer(generated)
    assert listing.count(f"blobs/sha256/{base[7:]}") == 1
    assert listing[:2] == ["mirror-bundle.json", "oci-layout"] and listing[-1] == "index.json"


def test_standard_tools_read_the_decompressed_bundle(tmp_path, generated, store):
    bundle = manifest_for(generated)
    written = write_bundle(tmp_path / "b.tar.zst", bundle, store)
    tar_path = decompress(written.path, tmp_path)

    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    assert all(m.isreg() and m.mode == 0o644 and m.uid == m.gid == 0 and not m.uname for m in members)
    assert {m.mtime for m in members} == {bundle.created_timestamp}

    for image in bundle.images:
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tar_path}:{image.tag}"],
                             capture_output=True, check=True).stdout
        assert raw == store.read(image.digest)  # byte for byte, Docker media types included
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest
    for source in (KLIPPER, WEBHOOK):
        tag = source.rsplit(":", 1)[1]
        inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{tar_path}:{tag}"],
                                              capture_output=True, check=True).stdout)
        assert inspected["Digest"] == next(i.digest for i in bundle.images if i.source == source)


def test_containerd_imports_the_decompressed_bundle(tmp_path, generated, store, containerd):
    bundle = manifest_for(generated)
    tar_path = decompress(write_bundle(tmp_path / "b.tar.zst", bundle, store).path, tmp_path)
    imported = containerd.ctr("images", "import", "--all-platforms", str(tar_path))
    assert imported.returncode == 0, imported.stderr
    listed = containerd.ctr("images", "check")
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    for image in bundle.images:
        _, _, digest, status, *_ = rows[image.source]
        assert (digest, status) == (image.digest, "complete")


def test_split_parts_read_back_identically(tmp_path, generated, store):
    bundle = manifest_for(generated)
    whole = write_bundle(tmp_path / "whole.tar.zst", bundle, store, threads=1)
    split = write_bundle(tmp_path / "split.tar.zst", bundle, store, threads=1, part_size=64 * 1024)

    assert not split.path.exists() and len(split.parts) > 2
    assert [p.name for p in split.parts] == [f"split.tar.zst.part-{n:03d}" for n in range(len(split.parts))]
    assert all(p.stat().st_size <= 64 * 1024 for p in split.parts)
    joined = b"".join(p.read_bytes() for p in split.parts)
    assert joined == whole.path.read_bytes()
    cat = subprocess.run(f"cat {' '.join(str(p) for p in split.parts)} | sha256sum", shell=True,
                         capture_output=True, text=True, check=True).stdout.split()[0]
    assert split.sha256 == cat == whole.sha256
    assert subprocess.run(["sha256sum", "-c", "whole.tar.zst.sha256"], cwd=tmp_path).returncode == 0

    def contents(path):
        with BundleReader(path) as reader:
            return [(entry.name, entry.read(limit=1 << 30)) for entry in reader.entries()]

    assert contents(split.path) == contents(whole.path)
    verify_bundle(split.path)


def test_rewrite_with_fewer_parts_removes_stale_parts(tmp_path, generated, store):
    bundle = manifest_for(generated)
    path = tmp_path / "b.tar.zst"
    many = write_bundle(path, bundle, store, part_size=32 * 1024)
    few = write_bundle(path, bundle, store, part_size=1 << 20)
    assert len(few.parts) < len(many.parts)
    assert sorted(tmp_path.iterdir()) == sorted(few.parts + [tmp_path / "b.tar.zst.sha256"])
    whole = write_bundle(path, bundle, store)
    assert sorted(tmp_path.iterdir()) == [path, tmp_path / "b.tar.zst.sha256"]
    assert verify_bundle(whole.path).blobs == len(bundle.blobs)


def copy_store(generated, tmp_path) -> BlobStore:
    shutil.copytree(generated.directory / "blobs", tmp_path / "work" / "blobs")
    return BlobStore(tmp_path / "work")


def test_plan_while_layers_are_still_downloading_matches_the_finished_plan(tmp_path, generated):
    store = copy_store(generated, tmp_path)
    bundle = manifest_for(generated)
    finished = plan_blobs(bundle, store)
    for digest in [shared_base_layer(generated), generated.images[2].blobs[-1]]:
        store.path(digest).unlink()
    pending = BlobStore(store.root)  # the work dir as a run opens it, those two not in yet
    assert plan_blobs(bundle, pending, pending=True) == finished  # sizes from mirror-bundle.json, same order


def test_blob_missing_from_store_leaves_no_file(tmp_path, generated):
    store = copy_store(generated, tmp_path)
    missing = shared_base_layer(generated)
    store.path(missing).unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(MirrorError, match=missing):
        write_bundle(out / "b.tar.zst", manifest_for(generated), BlobStore(store.root), part_size=16 * 1024)
    assert list(out.iterdir()) == []


def test_corrupt_blob_in_store_is_caught_and_nothing_is_left(tmp_path, generated):
    store = copy_store(generated, tmp_path)
    layer = shared_base_layer(generated)
    data = bytearray(store.read(layer))
    data[-100] ^= 0x01
    store.path(layer).write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=f"blob {layer} in .* is corrupt"):
        write_bundle(out / "b.tar.zst", manifest_for(generated), store)
    assert list(out.iterdir()) == []


def test_failure_mid_write_keeps_the_previous_bundle(tmp_path, generated, store):
    bundle = manifest_for(generated)
    path = tmp_path / "b.tar.zst"
    write_bundle(path, bundle, store)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    written = 0

    def disk_full(n):
        nonlocal written
        written += n
        if written > 100_000:
            raise OSError(28, "No space left on device")

    with pytest.raises(MirrorError, match=f"writing bundle {path} failed: .*No space left on device"):
        write_bundle(path, manifest_for(generated), store, progress=disk_full)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_manifest_inconsistent_with_store_is_refused_before_writing(tmp_path, generated, store):
    bundle = manifest_for(generated)
    layer = shared_base_layer(generated)
    bundle.blobs[layer] += 1
    with pytest.raises(IntegrityError, match=f"blob {layer} .* bytes but the bundle manifest says"):
        write_bundle(tmp_path / "b.tar.zst", bundle, store)
    del bundle.blobs[layer]
    with pytest.raises(MirrorError, match=f"does not list blob {layer}"):
        write_bundle(tmp_path / "b.tar.zst", bundle, store)
    assert list(tmp_path.iterdir()) == []


def test_verify_passes_a_good_bundle(tmp_path, generated, store):
    bundle = manifest_for(generated)
    seen = []
    report = verify_bundle(write_bundle(tmp_path / "b.tar.zst", bundle, store).path, progress=seen.append)
    assert (report.images, report.blobs, report.bytes) == (3, len(bundle.blobs), bundle.total_size)
    assert sum(seen) == bundle.total_size
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


def repack(source: Path, target: Path, edit) -> Path:
    """Rewrite a bundle's entries (list of (name, bytes)) through ``edit``, with a plain tar writer."""
    with BundleReader(source) as reader:
        entries = [("mirror-bundle.json", reader.manifest.to_json())]
        entries += [(entry.name, entry.read(limit=1 << 30)) for entry in reader.entries()]
    return craft_bundle(target, [regular(name, data) for name, data in edit(entries)])


def test_verify_catches_a_blob_after_the_manifest_that_needs_it(tmp_path, generated, store):
    good = write_bundle(tmp_path / "good.tar.zst", manifest_for(generated), store).path
    busybox = generated.images[2]
    layer = busybox.blobs[-1]  # busybox's own layer: only busybox uses it

    def move_layer_after_manifest(entries):
        moved = next(e for e in entries if e[0].endswith(layer[7:]))
        entries.remove(moved)
        at = next(n for n, e in enumerate(entries) if e[0].endswith(busybox.digest[7:]))
        return entries[: at + 1] + [moved] + entries[at + 1 :]

    bad = repack(good, tmp_path / "bad.tar.zst", move_layer_after_manifest)
    with pytest.raises(VerificationFailed) as caught:
        verify_bundle(bad)
    assert caught.value.problems == [
        f"blob {layer} (used by {BUSYBOX}) comes after the manifest: manifest {busybox.digest} references it"
    ]
    assert caught.value.exit_code == 4


def test_verify_catches_missing_and_corrupt_blobs(tmp_path, generated, store):
    good = write_bundle(tmp_path / "good.tar.zst", manifest_for(generated), store).path
    base = shared_base_layer(generated)
    klipper_layer = generated.images[0].blobs[-1]

    def damage(entries):
        entries = [e for e in entries if not e[0].endswith(base[7:])]
        return [(name, data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(klipper_layer[7:]) else data)
                for name, data in entries]

    bad = repack(good, tmp_path / "bad.tar.zst", damage)
    with pytest.raises(VerificationFailed) as caught:
        verify_bundle(bad)
    problems = caught.value.problems
    assert any(p.startswith(f"blob {klipper_layer} in {bad} is corrupt") and KLIPPER in p for p in problems)
    assert any(f"blob {base} (used by {BUSYBOX}, {KLIPPER}, {WEBHOOK}) is missing from the bundle" in p
               for p in problems)
    assert any(f"blob {base} (used by" in p and "is listed but missing" in p for p in problems)
    assert f"failed verification ({len(problems)} problem(s))" in str(caught.value)


def test_summary_numbers(tmp_path, generated, store):
    bundle = manifest_for(generated)
    written = write_bundle(tmp_path / "b.tar.zst", bundle, store)
    summary = summarize_bundle(written.path)

    sizes = generated.sizes
    per_image = {}
    for image in generated.images:
        needed = {image.digest, *(d for d, _ in image.manifests), *image.blobs}
        per_image[image.source] = sum(sizes[d] for d in needed)
    stored = sum(sizes[d] for d in bundle.blobs)
    assert {i.source: i.size for i in summary.images} == per_image
    assert summary.stored_size == stored
    assert summary.images_size == sum(per_image.values())
    assert summary.shared_savings == sum(per_image.values()) - stored > 0
    assert summary.compressed_size == written.size and summary.parts == 1
    assert next(i for i in summary.images if i.source == KLIPPER).platforms == ["linux/amd64", "linux/arm64/v8"]
    text = summary.render_text()
    assert KLIPPER in text and "saved by sharing" in text and "k3s (k3s v1.24.4+k3s1)" in text
    assert json.loads(json.dumps(summary.to_json()))["shared_savings"] == summary.shared_savings


def test_summary_reads_only_the_first_entry(tmp_path, generated, store):
    """inspect must stay instant on a 10 GB bundle: a bundle cut after its header still summarises."""
    written = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store)
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(written.path.read_bytes()[: written.size // 3])
    assert summarize_bundle(cut).images_size == summarize_bundle(written.path).images_size
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        verify_bundle(cut)


def test_delta_bundle_leaves_out_what_its_base_has(tmp_path, generated, store):
    full = manifest_for(generated)
    base = shared_base_layer(generated)
    delta = manifest_for(generated, omitted=(base,), base=full.id)
    written = write_bundle(tmp_path / "delta.tar.zst", delta, store)
    with BundleReader(written.path) as reader:
        assert base not in {entry.digest for entry in reader.entries()}
    assert verify_bundle(written.path).blobs == len(full.blobs) - 1
    summary = summarize_bundle(written.path)
    assert (summary.kind, summary.base, summary.omitted) == ("delta", [full.id], 1)
    assert summary.stored_size == full.total_size - generated.sizes[base]
    assert f"delta of  {full.id}" in summary.render_text()


def test_bundle_manifest_json_round_trip_and_refusals():
    image = ImageRecord("docker.io/rancher/x:1", "sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json",
                        10, ["linux/amd64"], ["sha256:" + "b" * 64])
    manifest = BundleManifest([image], {"sha256:" + "a" * 64: 10, "sha256:" + "b" * 64: 20})
    assert BundleManifest.from_json(manifest.to_json()) == manifest
    doc = json.loads(manifest.to_json())
    assert doc["totals"] == {"images": 1, "attachments": 0, "blobs": 2, "stored_size": 30, "images_size": 30,
                             "shared_savings": 0}
    for broken in ({**doc, "blobs": {"sha256:../../etc": 1}}, {**doc, "id": "sha256:" + "0" * 64},
                   {**doc, "images": [{"source": "x"}]}, {**doc, "format_version": 99}):
        with pytest.raises(IntegrityError):
            BundleManifest.from_json(json.dumps(broken).encode())
    with pytest.raises(IntegrityError, match="not valid JSON"):
        BundleManifest.from_json(b"{")


def test_verify_catches_a_record_that_misnames_its_manifests(tmp_path, generated, store):
    good = write_bundle(tmp_path / "good.tar.zst", manifest_for(generated), store).path
    klipper = generated.images[0]
    child = klipper.manifests[0][0]
    config = klipper.blobs[0]

    def swap_manifest_for_config(entries):
        doc = json.loads(entries[0][1])
        doc["images"][0]["manifests"] = [config if d == child else d for d in doc["images"][0]["manifests"]]
        return [("mirror-bundle.json", json.dumps(doc).encode())] + entries[1:]

    with pytest.raises(VerificationFailed) as caught:
        verify_bundle(repack(good, tmp_path / "bad.tar.zst", swap_manifest_for_config))
    assert caught.value.problems == [
        f"image {KLIPPER}: manifest {child} is not listed among its manifests",
        f"image {KLIPPER}: {config} is listed as a manifest of it but is not one",
    ]


def test_bad_output_is_a_usage_error(tmp_path, generated, store):
    with pytest.raises(UsageError, match="directory .*nowhere does not exist"):
        write_bundle(tmp_path / "nowhere" / "b.tar.zst", manifest_for(generated), store)
    with pytest.raises(UsageError, match="part size must be positive"):
        write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store, part_size=0)
    assert list(tmp_path.iterdir()) == []


def test_the_bundle_goes_to_disk_as_it_is_written_not_all_in_the_last_fsync(tmp_path, generated, store,  # noqa: F811
                                                                             monkeypatch):
    """A pull writes its bundle at the link's pace: left in the page cache, gigabytes would reach the
    disk only in the commit's fsync, after the last blob arrived, with the pull waiting."""
    synced, sync = [], os.fdatasync  # the file's size at each sync before the commit's

    def recorded(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        sync(fd)
    monkeypatch.setattr(writer, "WRITTEN_BACK_EVERY", 16 * 1024)
    monkeypatch.setattr(writer.os, "fdatasync", recorded)
    written = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store)
    assert len(synced) >= 2 and synced == sorted(synced) and synced[0] < written.size // 2


def test_a_pull_writes_each_blob_as_it_arrives_and_each_manifest_after_all_it_names(tmp_path, generated,  # noqa: F811
                                                                                    store):
    """While downloads go on, the writer does not wait for the next blob in its plan while later ones are
    in: they come in any order over a capped link, and all it has not written when the last arrives is
    written after it, the link idle."""
    bundle = manifest_for(generated)
    manifests = {d for image in bundle.images for d in (image.digest, *image.manifests)}
    planned = [digest for digest, _ in plan_blobs(bundle, store) if digest not in manifests]
    coming = list(reversed(planned))  # the last of the plan arrives first

    def arrived(digests: set[str]) -> set[str]:
        assert coming[0] in digests
        return {coming.pop(0)}

    written = write_bundle(tmp_path / "b.tar.zst", bundle, store, arrived=arrived)
    with BundleReader(written.path) as reader:
        entries = [(entry.digest, entry.read(limit=1 << 30)) for entry in reader.entries() if entry.digest]
    assert [digest for digest, _ in entries if digest not in manifests] == list(reversed(planned))
    position = {digest: n for n, (digest, _) in enumerate(entries)}
    for digest in manifests:
        assert all(position[child] < position[digest] for child in children_of(store.read(digest))), digest
    assert sorted(position) == sorted(bundle.blobs) and verify_bundle(written.path) is not None
