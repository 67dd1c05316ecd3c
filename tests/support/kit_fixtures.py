"""The kit's upstreams on loopback for a test: support/kitbed.py's stand-in, stopped afterwards."""

from __future__ import annotations

import pytest

from support.kitbed import standard_upstream


@pytest.fixture
def kit_upstream():
    upstream = standard_upstream()
    yield upstream
    upstream.host.stop()
