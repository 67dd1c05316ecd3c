"""A source that lies about sizes, drips, never ends or never answers: bounded, clear failures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from mirror.errors import IntegrityError, RegistryError
from mirror.registry.client import RegistryClient
from mirror.registry.settings import RegistrySettings
from support.cli import ROOT, run_mirror
from support.hostile_source import REPOSITORY, TAG, HostileSource

MIB = 1 << 20
# Loopback socket buffers can hold a few MiB that the server counts as sent before the client stops reading.
IN_FLIGHT = 16 * MIB


def client(source: HostileSource, **settings) -> RegistryClient:
    return RegistryClient(source.host, RegistrySettings(plain_http=True, **settings), backoff_base=0.01)


def test_a_blob_body_longer_than_its_descriptor_is_cut_at_the_declared_size(tmp_path):
    with HostileSource(layer="oversize") as source:
        partial = tmp_path / "layer.partial"

        async def download() -> None:
            async with client(source) as c:
                await c.download_blob(REPOSITORY, source.layer_digest, partial, size=len(source.layer))

        with pytest.raises(IntegrityError, match=f"more than the {len(source.layer)} bytes"):
            anyio.run(download)
        assert not partial.exists()
        assert source.sent["/blobs/"] < IN_FLIGHT  # it offered 300 MiB


def test_a_manifest_claiming_300_mb_is_refused_before_it_is_read():
    with HostileSource(manifest="huge") as source:
        async def get() -> None:
            async with client(source) as c:
                await c.get_manifest(REPOSITORY, TAG)

        with pytest.raises(IntegrityError, match="more than 4194304 bytes"):
            anyio.run(get)
        assert source.sent["/manifests/"] < IN_FLIGHT


def test_a_manifest_without_a_length_is_cut_at_the_cap():
    with HostileSource(manifest="huge-chunked") as source:
        async def get() -> None:
            async with client(source) as c:
                await c.get_manifest(REPOSITORY, TAG)

        with pytest.raises(IntegrityError, match="more than 4194304 bytes"):
            anyio.run(get)
        assert source.sent["/manifests/"] < 4 * MIB + IN_FLIGHT


def test_a_dripping_blob_is_cut_by_the_minimum_rate_and_the_failure_says_so(tmp_path):
    with HostileSource(layer="drip", drip_interval=0.2) as source:
        async def download() -> None:
            async with client(source, min_rate=1000, rate_window=1.0, retries=2) as c:
                await c.download_blob(REPOSITORY, source.layer_digest, tmp_path / "p", size=len(source.layer))

        with pytest.raises(RegistryError, match="bytes/s"):
            anyio.run(download)
        # three attempts (the first and two retries), each cut after about a window, not 25 000 drips
        assert source.sent["/blobs/"] < 100


def test_a_frozen_registry_is_given_up_on_by_time_not_after_every_retry():
    with HostileSource(frozen=True) as source:
        async def ping() -> None:
            async with client(source, timeout=0.5, give_up_after=1.0, retries=50) as c:
                await c.ping()

        with pytest.raises(RegistryError, match="attempt"):
            anyio.run(ping)
        assert source.connections <= 4  # 50 retries allowed, the give-up time ended it after a few


def test_pull_from_a_lying_source_exits_4_with_no_bundle_and_no_oversized_leftover(tmp_path):
    with HostileSource(layer="oversize") as source:
        output = tmp_path / "bundle.tar.zst"
        result = run_mirror("pull", source.reference, "--plain-http-registry", source.host,
                            "-o", output, "--work-dir", tmp_path / "work")
    assert result.returncode == 4, result.stderr
    assert f"more than the {len(source.layer)} bytes" in result.stderr
    assert not output.exists()
    leftovers = sum(p.stat().st_size for p in Path(tmp_path / "work").rglob("*") if p.is_file())
    assert leftovers < MIB  # the manifest and config, not the 300 MiB offered


# -- compressed answers: a pull stays in bounded memory, measured on the real command ---------------

PEAK_LIMIT = 200 * MIB  # a pull of this small image peaks near 35 MiB; each bomb decodes to 256 MiB or more
# Run mirror as the only child of a small Python, which then reports the child's peak memory.
MEASURED = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def pull_measured(source: HostileSource, tmp_path) -> tuple[int, str, int]:
    """``mirror pull`` of the source's image: exit code, stderr, and its peak resident memory in bytes."""
    result = subprocess.run([sys.executable, "-c", MEASURED, sys.executable, "-m", "mirror", "pull",
                             source.reference, "--plain-http-registry", source.host, "-o", tmp_path / "b.tar.zst",
                             "--work-dir", tmp_path / "work"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    *errors, peak = result.stderr.rstrip().splitlines()
    return result.returncode, "\n".join(errors), int(peak) * 1024


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_a_compressed_manifest_bomb_is_refused_unread_in_bounded_memory(encoding, tmp_path):
    with HostileSource(manifest=f"{encoding}-bomb") as source:
        code, errors, peak = pull_measured(source, tmp_path)
    assert code == 1, errors
    assert f"{source.host} answered with Content-Encoding '{encoding}' though mirror asks for identity" in errors
    assert f"manifest {source.host}/{REPOSITORY}:{TAG}" in errors
    assert peak < PEAK_LIMIT
    assert not (tmp_path / "b.tar.zst").exists()


def test_an_encoded_blob_is_read_as_sent_in_bounded_memory(tmp_path):
    with HostileSource(layer="zstd-bomb") as source:
        code, errors, peak = pull_measured(source, tmp_path)
    assert code == 4, errors  # 32 KiB as sent, past the layer's declared size: cut there
    assert f"blob {source.layer_digest}" in errors and "more than the" in errors
    assert peak < PEAK_LIMIT
