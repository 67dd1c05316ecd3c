"""Split bundles: the commit survives kill -9 at any step, NAME.sha256 works with sha256sum -c, gaps are named."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mirror.bundle.verify import verify_bundle
from mirror.bundle.reader import BundleReader
from mirror.bundle.writer import FAT32_MAX_FILE, capped_part_size, write_bundle
from mirror.errors import UsageError
from mirror.units import parse_size
from support.bundle_fixtures import generated, manifest_for, store  # noqa: F401  (fixtures)
from support.cli import ROOT, run_mirror

PART = 48 * 1024

# Writes a bundle and is killed (SIGKILL, as kill -9) just before the N-th rename or unlink of the commit.
KILLED_WRITER = textwrap.dedent("""
    import os, pathlib, signal, sys
    from mirror.bundle.format import BundleManifest
    from mirror.bundle.writer import write_bundle
    from mirror.bundle.store import BlobStore

    out, store, header, part, kill_at = sys.argv[1:]
    calls = 0

    def killing(real):
        def call(*args, **kwargs):
            global calls
            if calls == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)
            calls += 1
            return real(*args, **kwargs)
        return call

    os.replace = killing(os.replace)
    pathlib.Path.unlink = killing(pathlib.Path.unlink)
    manifest = BundleManifest.from_json(pathlib.Path(header).read_bytes())
    write_bundle(pathlib.Path(out), manifest, BlobStore(pathlib.Path(store)), part_size=int(part))
""")


def created_at(generated, when: str):  # noqa: F811
    bundle = manifest_for(generated)
    bundle.created = when
    return bundle


def state_of(path: Path) -> str:
    """'old', 'new' or 'incomplete'; anything else (a mix read as one bundle) fails the test."""
    try:
        reader = BundleReader(path)
    except UsageError as exc:
        assert "is incomplete: writing it was interrupted" in str(exc)
        return "incomplete"
    with reader:
        created = reader.manifest.created
    verify_bundle(path)  # every part of one bundle: the stream reads whole and every blob hashes
    checked = subprocess.run(["sha256sum", "-c", "--strict", path.name + ".sha256"], cwd=path.parent,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return {"2020-01-01T00:00:00Z": "old", "2021-01-01T00:00:00Z": "new"}[created]


def test_kill_at_any_step_of_the_commit_never_leaves_a_mix(tmp_path, generated, store):  # noqa: F811
    path = tmp_path / "out" / "b.tar.zst"
    path.parent.mkdir()
    old = write_bundle(path, created_at(generated, "2020-01-01T00:00:00Z"), store, part_size=PART - 8192)
    header = tmp_path / "new.json"
    header.write_bytes(created_at(generated, "2021-01-01T00:00:00Z").to_json())
    assert len(old.parts) > 3

    seen = []
    for kill_at in range(100):
        child = subprocess.run([sys.executable, "-c", KILLED_WRITER, path, store.root, header, str(PART), str(kill_at)],
                               cwd=ROOT, capture_output=True, text=True)
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        seen.append(state_of(path))
    assert len(seen) > len(old.parts)  # killed before and after every rename and removal
    assert set(seen) <= {"old", "new", "incomplete"}
    assert state_of(path) == "new"

    # Whatever a kill left, the next write ends with one good bundle, and the killed writers' temps are gone.
    again = write_bundle(path, created_at(generated, "2020-01-01T00:00:00Z"), store, part_size=PART)
    assert state_of(path) == "old"
    assert sorted(path.parent.iterdir()) == sorted([*again.parts, path.with_name("b.tar.zst.sha256")])


def test_split_checksum_file_works_with_sha256sum(tmp_path, generated, store):  # noqa: F811
    split = write_bundle(tmp_path / "split.tar.zst", manifest_for(generated), store, part_size=PART)
    assert len(split.parts) > 2
    checked = subprocess.run(["sha256sum", "-c", "--strict", "split.tar.zst.sha256"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [f"{part.name}: OK" for part in split.parts]

    whole = hashlib.sha256(b"".join(part.read_bytes() for part in split.parts)).hexdigest()
    lines = (tmp_path / "split.tar.zst.sha256").read_text().splitlines()
    assert whole == split.sha256 and lines[0].startswith(f"# {whole}  split.tar.zst")

    damaged = bytearray(split.parts[1].read_bytes())
    damaged[100] ^= 1
    split.parts[1].write_bytes(bytes(damaged))
    checked = subprocess.run(["sha256sum", "-c", "split.tar.zst.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 1 and f"{split.parts[1].name}: FAILED" in checked.stdout


def test_missing_last_part_is_named_in_one_line(tmp_path, generated, store):  # noqa: F811
    split = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store, part_size=PART)
    last = split.parts[-1]
    last.unlink()
    for command in ("inspect", "verify"):
        result = run_mirror(command, split.path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"part {last.name} is missing (b.tar.zst.sha256 lists {len(split.parts)} parts)" \
            in lines[0], result.stderr


def test_part_not_listed_in_the_checksum_file_is_refused(tmp_path, generated, store):  # noqa: F811
    split = write_bundle(tmp_path / "b.tar.zst", manifest_for(generated), store, part_size=PART)
    extra = split.path.with_name(f"b.tar.zst.part-{len(split.parts):03d}")
    extra.write_bytes(b"left over")
    with pytest.raises(UsageError, match=f"part {extra.name} is not listed in b.tar.zst.sha256"):
        BundleReader(split.path)


def test_split_size_4g_fits_fat32():
    assert FAT32_MAX_FILE == 4 * 1024**3 - 1
    assert capped_part_size(parse_size("4G", "--split-size")) == FAT32_MAX_FILE
    assert capped_part_size(parse_size("4GiB", "--split-size")) == FAT32_MAX_FILE
    assert capped_part_size(parse_size("8G", "--split-size")) == FAT32_MAX_FILE
    assert capped_part_size(parse_size("4000M", "--split-size")) == 4000 * 1024**2
    with pytest.raises(UsageError, match="part size must be positive"):
        capped_part_size(0)
