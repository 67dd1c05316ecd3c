"""Times as every file, report and log line of mirror writes them: UTC, RFC 3339, to the second."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """``2026-11-29T22:59:23Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
