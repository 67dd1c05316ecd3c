"""Times as every file, report and log line of mirror writes them: UTC, RFC 3339, to the second."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def utc_now() -> str:
    """``2026-11-29T22:59:23Z``."""
    return utc_after(0)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as mirror, distribution and Sigstore write them (``...Z`` or ``+00:00``); a time
    without a zone is UTC. ValueError for anything else."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10's fromisoformat does not take "Z"
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=timezone.utc)


def utc_after(seconds: float) -> str:
    """The time ``seconds`` from now, as ``utc_now`` writes it: when a rate-limit window reopens."""
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
