"""Session-wide real containerd and Docker Engine, started by support/daemons.py.

Registered from tests/conftest.py with ``pytest_plugins = ["support.daemon_fixtures"]``.
"""

from __future__ import annotations

import pytest

from support.daemons import Containerd, Dockerd, start_containerd, start_dockerd


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory) -> Dockerd:
    """A Docker Engine with its own data root; ``dockerd.docker_host`` is its DOCKER_HOST."""
    daemon = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def containerd(tmp_path_factory) -> Containerd:
    """A containerd with its own root; ``ctr --address containerd.address`` talks to it."""
    daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    yield daemon
    daemon.stop()
