"""The bundle reader against hostile and damaged input: crafted tars, cut and flipped bytes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from mirror.bundle.reader import BlobCorrupt, BundleReader
from mirror.errors import IntegrityError, UsageError
from support.crafted_bundles import (LAYER, LAYOUT, TOP, blob_member, craft_bundle, digest_of, good_members, header_for,
                                     read_all, regular)


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def test_well_formed_crafted_bundle_reads(tmp_path):
    path = craft_bundle(tmp_path / "ok.tar.zst", good_members())
    assert read_all(path) == ["oci-layout", f"blobs/sha256/{digest_of(LAYER)[7:]}",
                              f"blobs/sha256/{digest_of(TOP)[7:]}", "index.json"]


ESCAPES = "path escapes the bundle"  # the escape rule: an absolute name or a ".." segment
LINKS = "links are not allowed"
DEVICES = "devices and fifos are not allowed"
NOT_LISTED = "unexpected name (a bundle holds only"  # the allowlist: mirror-bundle.json, oci-layout,
# index.json and blobs/sha256/<64 hex>, plus the directories blobs and blobs/sha256.
# No allowlisted name has a ".." segment, so the allowlist alone would refuse every escaping name too:
# the escape rule is checked first and makes the refusal say why; its cases prove it by that message.


@pytest.mark.parametrize(
    "bad, reason",
    [
        (regular("../x", b"evil"), ESCAPES),
        (regular("blobs/sha256/../../x", b"evil"), ESCAPES),
        (regular("/etc/x", b"evil"), ESCAPES),
        (regular("blobs/sha256/" + "../" * 40 + "etc/cron.d/x", b"evil"), ESCAPES),  # a pax path header
        (special("blobs/..", tarfile.DIRTYPE), ESCAPES),  # before the directory allowlist
        (special("blobs/sha256/" + "a" * 64, tarfile.SYMTYPE, "/etc/passwd"), LINKS),
        (special("blobs/sha256/" + "b" * 64, tarfile.LNKTYPE, "oci-layout"), LINKS),
        (special("blobs/sha256/" + "c" * 64, tarfile.CHRTYPE), DEVICES),
        (special("blobs/sha256/" + "d" * 64, tarfile.BLKTYPE), DEVICES),
        (special("blobs/sha256/" + "e" * 64, tarfile.FIFOTYPE), DEVICES),
        (regular("blobs/sha256/" + "A" * 64, b"upper"), NOT_LISTED),
        (regular("blobs/sha512/" + "a" * 128, b"other algorithm"), NOT_LISTED),
        (regular("notes.txt", b"hello"), NOT_LISTED),
        (regular("./oci-layout", b"{}"), NOT_LISTED),
        (regular("blobs/sha256/./" + "f" * 64, b"dot segment"), NOT_LISTED),
        (special("etc", tarfile.DIRTYPE), "unexpected directory"),
        (blob_member(LAYER), "duplicate entry"),
        (regular("mirror-bundle.json", b"{}"), "duplicate entry"),
    ],
)
def test_unsafe_member_refused_before_it_is_handed_out(tmp_path, bad, reason):
    members = good_members()
    members.insert(3, bad)  # after oci-layout and the layer: good entries come first
    path = craft_bundle(tmp_path / "bad.tar.zst", members)
    handed_out = []
    with BundleReader(path) as reader:
        with pytest.raises(IntegrityError) as caught:
            for entry in reader.entries():
                handed_out.append(entry.name)
        # the error is sticky: nothing more can be read from this bundle
        with pytest.raises(IntegrityError):
            reader._next()
    assert handed_out == ["oci-layout", f"blobs/sha256/{digest_of(LAYER)[7:]}"]
    message = str(caught.value)
    assert reason in message and repr(bad[0].name) in message and str(path) in message
    assert caught.value.exit_code == 4


def test_layout_directories_are_allowed_and_skipped(tmp_path):
    members = good_members()
    members[2:2] = [special("blobs", tarfile.DIRTYPE), special("blobs/sha256", tarfile.DIRTYPE)]
    assert "blobs" not in read_all(craft_bundle(tmp_path / "dirs.tar.zst", members))


def test_entry_after_index_json_refused(tmp_path):
    members = good_members() + [blob_member(b"late")]
    with pytest.raises(IntegrityError, match="comes after index.json"):
        read_all(craft_bundle(tmp_path / "late.tar.zst", members))


def test_first_entry_must_be_the_bundle_manifest(tmp_path):
    members = good_members()
    members[0], members[1] = members[1], members[0]
    path = craft_bundle(tmp_path / "other.tar.zst", members)
    with pytest.raises(IntegrityError, match=r"other\.tar\.zst is not a mirror bundle"):
        BundleReader(path)


def test_plain_tar_is_not_a_bundle(tmp_path):
    path = tmp_path / "plain.tar.zst"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info, data = LAYOUT
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    with pytest.raises(IntegrityError, match="is not a mirror bundle: not a zstd stream"):
        BundleReader(path)


def test_unsupported_format_version_refused(tmp_path):
    header = json.loads(header_for([LAYER, TOP])[1])
    header["format_version"] = 2
    members = good_members()
    members[0] = regular("mirror-bundle.json", json.dumps(header).encode())
    with pytest.raises(IntegrityError, match="format version 2 is not supported"):
        BundleReader(craft_bundle(tmp_path / "v2.tar.zst", members))


def test_flipped_byte_in_layer_raises_before_the_last_chunk(tmp_path):
    damaged = bytearray(LAYER)
    damaged[150_000] ^= 0x01
    members = good_members()
    members[2] = blob_member(bytes(damaged), digest=digest_of(LAYER))
    path = craft_bundle(tmp_path / "flip.tar.zst", members)
    received = 0
    with BundleReader(path) as reader:
        entries = reader.entries()
        next(entries)  # oci-layout
        layer = next(entries)
        with pytest.raises(BlobCorrupt) as caught:
            for chunk in layer.chunks(chunk_size=65536):
                received += len(chunk)
        # the stream itself is intact: the rest can still be read
        assert [e.name for e in entries] == [f"blobs/sha256/{digest_of(TOP)[7:]}", "index.json"]
    assert received < len(LAYER)  # a streamed upload never got the whole (bad) blob
    assert caught.value.digest == digest_of(LAYER)
    assert f"blob {digest_of(LAYER)} in {path} is corrupt: content hashes to {digest_of(bytes(damaged))}" in str(
        caught.value
    )


def test_unread_and_half_read_entries_are_skipped(tmp_path):
    path = craft_bundle(tmp_path / "skip.tar.zst", good_members())
    with BundleReader(path) as reader:
        entries = reader.entries()
        next(entries)
        layer = next(entries)
        next(layer.chunks(chunk_size=1000))  # abandon it after one chunk
        top = next(entries)
        assert top.read() == TOP
        with pytest.raises(RuntimeError):
            next(layer.chunks())  # a passed entry cannot be read any more


def test_read_refuses_large_entries(tmp_path):
    members = good_members()
    big = bytes(5 << 20)
    members[2:3] = [blob_member(LAYER), blob_member(big)]
    path = craft_bundle(tmp_path / "big.tar.zst", members)
    with BundleReader(path) as reader:
        entries = reader.entries()
        next(entries), next(entries)
        with pytest.raises(IntegrityError, match="refusing to read more than"):
            next(entries).read()


@pytest.fixture
def good_bundle(tmp_path) -> bytes:
    return craft_bundle(tmp_path / "good.tar.zst", good_members()).read_bytes()


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9, -40, -4, -1])
def test_truncated_bundle_is_an_integrity_error(tmp_path, good_bundle, keep):
    """Cut anywhere, including inside the final checksum where zstd's decoder reports a clean end."""
    cut = int(len(good_bundle) * keep) if keep > 0 else len(good_bundle) + keep
    path = tmp_path / "cut.tar.zst"
    path.write_bytes(good_bundle[:cut])
    with pytest.raises(IntegrityError, match=r"cut\.tar\.zst is truncated or corrupt"):
        read_all(path)


def test_corrupt_compressed_stream_is_an_integrity_error(tmp_path, good_bundle):
    damaged = bytearray(good_bundle)
    damaged[len(damaged) // 2] ^= 0xFF
    path = tmp_path / "corrupt.tar.zst"
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        read_all(path)


def test_parts_are_read_as_one_stream_and_gaps_refused(tmp_path, good_bundle):
    path = tmp_path / "split.tar.zst"
    pieces = [good_bundle[i : i + 10_000] for i in range(0, len(good_bundle), 10_000)]
    for n, piece in enumerate(pieces):
        Path(f"{path}.part-{n:03d}").write_bytes(piece)
    assert read_all(path)[-1] == "index.json"
    assert read_all(Path(f"{path}.part-000")) == read_all(path)  # naming the first part means all of them
    Path(f"{path}.part-001").unlink()
    with pytest.raises(UsageError, match=r"part split\.tar\.zst\.part-001 is missing"):
        BundleReader(path)


def test_missing_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"nothere\.tar\.zst: no such file"):
        BundleReader(tmp_path / "nothere.tar.zst")


def test_multi_frame_bundle_with_skippable_frame_reads(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in good_members():
            tar.addfile(info, io.BytesIO(data))
    data, third = raw.getvalue(), len(raw.getvalue()) // 3
    frames = [zstandard.ZstdCompressor().compress(data[i : i + third]) for i in range(0, len(data), third)]
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"notes"
    path = tmp_path / "frames.tar.zst"
    path.write_bytes(frames[0] + skippable + b"".join(frames[1:]))
    assert read_all(path)[-1] == "index.json"
    path.write_bytes(b"".join(frames) + skippable[:6])  # a complete tar, then a cut frame header
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        read_all(path)


def test_chain_of_extension_headers_is_bounded(tmp_path):
    info, data = header_for([LAYER, TOP])
    chain = b"".join(tarfile.TarInfo._create_pax_generic_header({"comment": "x" * 400}, tarfile.XHDTYPE, "utf-8")
                     for _ in range(200))
    raw = chain + info.tobuf(tarfile.PAX_FORMAT) + data.ljust(-(-len(data) // 512) * 512, b"\0")
    path = tmp_path / "chain.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    with pytest.raises(IntegrityError, match=f"bundle {path}: refusing a tar header"):
        BundleReader(path)


def test_global_pax_header_is_refused(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "everywhere"}) as tar:
        for info, data in good_members():
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "global.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue()))
    with pytest.raises(IntegrityError, match=f"bundle {path}: refusing a global pax header"):
        BundleReader(path)
