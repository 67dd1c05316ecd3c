"""How to reach one registry: transport security, credentials, limits.

Plain HTTP and unverified TLS exist only when a user asked for them by flag;
nothing here falls back to them on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never printed, never logged

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


# Blob transfers to one registry start at most 16 whatever -j says, small requests at half as many more
# (skopeo opens 6, containerd 3 per image). Both are windows (window.py): while the registry answers as fast
# as it did they grow, transfers to twice their start and small requests to four times the transfers' start,
# since over a long link each of those is a round trip that moves little. Small blobs (whole into memory,
# download.py SmallDownload) have a window of their own, from the transfers' start to eight times it, at most
# SMALL_BLOBS_CAP: each is a round trip too, and queued among large blobs they would wait for a place a large
# one holds for seconds. Rising latency takes a window back to its start, 429 and 503 below it. More jobs
# still mean more transfers queued and more registries at once.
MAX_CONNECTIONS_PER_REGISTRY = 16
SMALL_BLOBS_CAP = 64  # small blobs in flight at most, to one registry and to all: 64 MiB (store.py PACKED_MAX each)


def connections_for(jobs: int) -> int:
    """Blob transfers to one registry at first for ``-j jobs`` (flags and config jobs alike)."""
    return max(1, min(jobs, MAX_CONNECTIONS_PER_REGISTRY))


def transfers_window(max_connections: int) -> tuple[int, int]:
    """Where the window of blob transfers to one registry starts, and its cap."""
    start = max(1, max_connections)
    return start, 2 * start


def calls_window(max_connections: int) -> tuple[int, int]:
    """Where the window of small requests (tokens, HEADs, manifests) to one registry starts, and its cap."""
    return max(2, max_connections // 2), max(2, 4 * max_connections)


def small_blobs_window(max_connections: int) -> tuple[int, int]:
    """Where the window of small blob downloads from one registry starts, and its cap."""
    start = max(1, max_connections)
    return start, max(start, min(8 * start, SMALL_BLOBS_CAP))


def windows(max_connections: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The (start, cap) of a registry's windows: blob transfers, small blobs, small requests."""
    return (transfers_window(max_connections), small_blobs_window(max_connections),
            calls_window(max_connections))


def tasks_for(jobs: int) -> int:
    """Items (images to resolve, blobs to fetch) one operation works on at once for ``-j jobs``: enough
    to fill a registry's windows at their caps; the windows decide what is on the wire."""
    return sum(cap for _, cap in windows(connections_for(jobs)))


DEFAULT_RETRIES = 5
_retries = DEFAULT_RETRIES  # this process's, for every registry: `mirror --retries N` (cli/app.py) sets it


def use_retries(retries: int) -> None:
    """Attempts after the first that every registry request of this process gets (``RegistrySettings.retries``)."""
    global _retries
    _retries = retries


@dataclass(frozen=True)
class RegistrySettings:
    plain_http: bool = False
    insecure: bool = False  # TLS without certificate verification
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    credentials: Credentials | None = None  # explicit; else looked up in auth files
    max_connections: int = 8  # blob transfers at once to this registry at first (transfers_window)
    retries: int = field(default_factory=lambda: _retries)  # attempts after the first: connection errors, 5xx, 429
    timeout: float = 15.0  # seconds without a byte (or a connection) before an attempt fails
    give_up_after: float = 30.0  # seconds of failing attempts without progress before a request fails
    min_rate: int = 16 << 10  # bytes/s a body must keep up over rate_window, else it is cut and retried
    rate_window: float = 30.0
