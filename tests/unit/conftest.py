"""The fast tier: in-process tests, no subprocess, no registry daemon (scripts/test.sh --fast)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"
