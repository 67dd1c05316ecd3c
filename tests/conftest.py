"""Fixtures any test module may use (real registries on loopback, a FaultProxy, a small disk, anyio on
asyncio), and the registration of the session fixture plugins in tests/support/.

Layout: tests/unit/ runs in-process (no subprocess, no daemon; the fake registry), tests/e2e/ runs the
`mirror` command, real registries, skopeo, containerd and Docker Engine; tests/support/ is a package of
fixtures and helpers, never tests. No test module imports another test module or this file. Spelling:
``from support.cli import ROOT, run_mirror, assert_refused``; ``from support import corpus, testbed``;
``from support.faults import FaultProxy``; ``from support.corpus_fixtures import single_platform_image``;
fixtures a few modules share are imported by name (``from support.prune_fixtures import versions``).

Imports: pytest's default (prepend) import mode puts on sys.path the first directory above a test
module or conftest that holds no ``__init__.py``. tests/ has none, so it is that directory for this
file and for every module under tests/unit/ and tests/e2e/, which both have an ``__init__.py``: that
makes ``import support`` work everywhere with no sys.path edits, and gives two modules of one basename
(unit/test_delta.py, e2e/test_delta.py) distinct names (``unit.test_delta``, ``e2e.test_delta``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import testbed
from support.faults import FaultProxy

pytest_plugins = ["support.corpus_fixtures", "support.daemon_fixtures", "support.kit_fixtures"]


@pytest.fixture
def anyio_backend():
    """anyio tests run on asyncio alone (the plugin's default would run each on every backend installed)."""
    return "asyncio"


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
def proxy(registry):
    """A FaultProxy in front of ``registry``: faults on demand, and a log of every request."""
    with FaultProxy(registry.host) as running:
        yield running


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
