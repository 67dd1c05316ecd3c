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


# Blob transfers to one registry stay at 16 whatever -j says, small requests at 8 more (skopeo opens 6,
# containerd 3 per image): enough to fill a WAN link, not enough to look like an attack. More jobs still
# mean more transfers queued and more registries at once.
MAX_CONNECTIONS_PER_REGISTRY = 16


def connections_for(jobs: int) -> int:
    """Blob transfers to one registry for ``-j jobs`` (flags and config jobs alike)."""
    return max(1, min(jobs, MAX_CONNECTIONS_PER_REGISTRY))


@dataclass(frozen=True)
class RegistrySettings:
    plain_http: bool = False
    insecure: bool = False  # TLS without certificate verification
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    credentials: Credentials | None = None  # explicit; else looked up in auth files
    max_connections: int = 8  # concurrent blob transfers to this registry; small requests get half as many more
    retries: int = 5  # attempts after the first, for connection errors, 5xx and 429
    timeout: float = 15.0  # seconds without a byte (or a connection) before an attempt fails
    give_up_after: float = 30.0  # seconds of failing attempts without progress before a request fails
    min_rate: int = 16 << 10  # bytes/s a body must keep up over rate_window, else it is cut and retried
    rate_window: float = 30.0
