"""The bundle reader beside other programs: bundles zstd(1) recompressed, and mirror's memory when a
crafted header claims gigabytes (measured on the real command, as an operator would run it)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from support.cli import ROOT
from support.crafted_bundles import craft_bundle, good_members, read_all


@pytest.mark.parametrize("zstd_args", [["-19"], ["--no-check", "-1"], ["-T2", "--long", "-3"]])
def test_bundle_recompressed_by_zstd_cli_reads(tmp_path, zstd_args):
    """An operator may recompress a bundle with zstd(1); its frames must be followed as well as ours."""
    craft_bundle(tmp_path / "b.tar.zst", good_members())
    subprocess.run(["zstd", "-q", "-d", "b.tar.zst", "-o", "b.tar"], cwd=tmp_path, check=True)
    subprocess.run(["zstd", "-q", *zstd_args, "b.tar", "-o", "re.tar.zst"], cwd=tmp_path, check=True)
    assert read_all(tmp_path / "re.tar.zst")[-1] == "index.json"


def header_bomb(path: Path, kind: bytes, claimed: int) -> Path:
    """A bundle of a few tens of KB: a pax or GNU long-name header of ``claimed`` bytes, all zeros."""
    info = tarfile.TarInfo("././@LongLink" if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
                           else "PaxHeaders/mirror-bundle.json")
    info.type, info.size = kind, claimed
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    with open(path, "wb") as out:
        out.write(compressor.compress(info.tobuf(tarfile.GNU_FORMAT)))
        zeros = bytes(16 << 20)
        for _ in range(claimed // len(zeros)):
            out.write(compressor.compress(zeros))
        out.write(compressor.flush())
    return path


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_header_claiming_a_huge_size_is_refused_before_it_is_read(tmp_path, kind):
    bomb = header_bomb(tmp_path / "bomb.tar.zst", kind, 1536 << 20)
    assert bomb.stat().st_size < 100_000
    peak = tmp_path / "peak-kib"
    for command in ("inspect", "verify"):
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(peak), sys.executable, "-m", "mirror",
                                 command, str(bomb)], cwd=ROOT, capture_output=True, text=True)
        assert int(peak.read_text().split()[-1]) < 200 << 10  # KiB: nowhere near the 1.5 GiB claimed
        assert result.returncode == 4, result.stderr
        assert f"bundle {bomb}: refusing a tar header that claims 1610612736 bytes" in result.stderr
