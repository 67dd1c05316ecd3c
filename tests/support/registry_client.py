"""A RegistryClient for a plain-HTTP loopback registry (or the FaultProxy in front of it), and blobs to send it."""

from __future__ import annotations

import os

from mirror.model import oci
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings

PLAIN = RegistrySettings(plain_http=True, retries=3)


def client(host: str, settings: RegistrySettings = PLAIN) -> RegistryClient:
    return RegistryClient(host, settings, auth_files=AuthFiles([]), backoff_base=0.01)


def blob(size: int, seed: int = 0) -> tuple[bytes, str]:
    """``size`` bytes and their digest: random, or (with a seed) the same bytes every run."""
    data = os.urandom(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size))
    return data, oci.sha256_digest(data)
