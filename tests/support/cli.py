"""The ``mirror`` command line as a user runs it, and what its refusals look like."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository: where `python -m mirror` runs


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


def assert_refused(result, *named: str) -> str:
    """A usage refusal: exit 2 and one ``mirror: error:`` line naming each of ``named``; returns the line."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: error: "), result.stderr
    for text in named:
        assert text in lines[0]
    return lines[0]
