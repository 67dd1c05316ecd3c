"""Shared fixtures: real registries on loopback, started by scripts/testbed.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import testbed  # noqa: E402

pytest_plugins = ["corpus_fixtures", "daemon_fixtures", "kit_fixtures"]


def run_mirror(*args: str, input: str | None = None, env: dict | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``mirror`` command line as a user would; never raises on exit codes.

    A run that outlives ``timeout`` fails the test as a hang.
    """
    try:
        return subprocess.run([sys.executable, "-m", "mirror", *map(str, args)], input=input, text=True,
                              capture_output=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mirror {args[0]} hung (> {timeout:g}s)")


@pytest.fixture
def start_registry(tmp_path_factory):
    """Factory: ``start_registry(tls=..., htpasswd=...)`` -> running testbed.Registry."""
    started: list[testbed.Registry] = []

    def start(**kwargs) -> testbed.Registry:
        registry = testbed.start_registry(tmp_path_factory.mktemp("registry"), **kwargs)
        started.append(registry)
        return registry

    yield start
    for registry in started:
        registry.stop()


@pytest.fixture
def registry(start_registry) -> testbed.Registry:
    """A plain-HTTP loopback registry, empty, for one test."""
    return start_registry()


@pytest.fixture
def tmpfs():
    """Factory: ``tmpfs(path, "2m")`` mounts a filesystem of that size at ``path`` (made if missing), for a
    full disk on demand; every one is unmounted after the test.

    Mounting needs root: CI runs as root, so there the test runs; elsewhere it is skipped.
    """
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path, tmpfs):
    """A 256 KiB filesystem (a tmpfs), for a full disk on demand; unmounted after the test."""
    return tmpfs(tmp_path / "small", "256k")
