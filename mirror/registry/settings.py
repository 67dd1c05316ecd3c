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


# Blob transfers to one registry stay at most 16 whatever -j says, small requests at most 4 times as many
# (skopeo opens 6, containerd 3 per image): enough to fill a WAN link, not enough to look like an attack.
# Both are caps: how many are in flight follows the registry's answers below them (window.py). More jobs
# still mean more transfers queued and more registries at once.
MAX_CONNECTIONS_PER_REGISTRY = 16
CALLS_PER_CONNECTION = 4


def connections_for(jobs: int) -> int:
    """Blob transfers to one registry for ``-j jobs`` (flags and config jobs alike)."""
    return max(1, min(jobs, MAX_CONNECTIONS_PER_REGISTRY))


def calls_for(max_connections: int) -> int:
    """Small requests (tokens, HEADs, manifests) at once to one registry, besides its blob transfers:
    each is a round trip that moves little, so over a long link many are in flight."""
    return max(2, max_connections * CALLS_PER_CONNECTION)


def tasks_for(jobs: int) -> int:
    """Items (images to resolve, blobs to fetch) one operation works on at once for ``-j jobs``: enough
    to fill a registry's windows, transfers and small requests; the windows decide what is on the wire."""
    connections = connections_for(jobs)
    return connections + calls_for(connections)


@dataclass(frozen=True)
class RegistrySettings:
    plain_http: bool = False
    insecure: bool = False  # TLS without certificate verification
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    credentials: Credentials | None = None  # explicit; else looked up in auth files
    max_connections: int = 8  # cap on blob transfers at once to this registry; small requests: calls_for
    retries: int = 5  # attempts after the first, for connection errors, 5xx and 429
    timeout: float = 15.0  # seconds without a byte (or a connection) before an attempt fails
    give_up_after: float = 30.0  # seconds of failing attempts without progress before a request fails
    min_rate: int = 16 << 10  # bytes/s a body must keep up over rate_window, else it is cut and retried
    rate_window: float = 30.0
