"""The registry's one user: a generated password, its bcrypt htpasswd line,
and the 0600 file that keeps the password for push and config.

The password is made once and kept: running ``up`` again must not change
what nodes were configured with.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import bcrypt

from ..errors import UsageError
from ..registry.settings import Credentials
from ..safefiles import write_file

# distribution checks the bcrypt hash on every request; a high cost would make
# a concurrent push CPU-bound, and the plain password sits beside the hash in
# a 0600 file anyway. 5 is what `htpasswd -B` uses.
BCRYPT_ROUNDS = 5


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, data, mode=0o600)


def read_credentials(path: Path) -> Credentials:
    try:
        doc = json.loads(path.read_text())
        return Credentials(doc["username"], doc["password"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"registry credentials {path} are unreadable ({type(exc).__name__})") from None


def ensure_credentials(credentials_file: Path, htpasswd_file: Path, username: str, *,
                       rotate: bool = False) -> tuple[Credentials, bool]:
    """The kept credentials for ``username``, or new ones (always with ``rotate``); True when new.

    The htpasswd is rewritten whenever it does not accept the kept password.
    """
    existing = read_credentials(credentials_file) if credentials_file.is_file() else None
    if existing is not None and existing.username == username and not rotate:
        credentials, created = existing, False
    else:
        credentials, created = Credentials(username, secrets.token_urlsafe(24)), True
    if created:
        write_private(credentials_file, json.dumps(
            {"username": credentials.username, "password": credentials.password}).encode())
    if created or not verifies(htpasswd_file, credentials):
        hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
        write_private(htpasswd_file, f"{username}:{hashed.decode()}\n".encode())
    return credentials, created


def verifies(htpasswd_file: Path, credentials: Credentials) -> bool:
    """Whether ``htpasswd_file`` accepts ``credentials`` (as the registry will check)."""
    try:
        lines = htpasswd_file.read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        user, _, hashed = line.partition(":")
        if user == credentials.username and hashed:
            return bcrypt.checkpw(credentials.password.encode(), hashed.encode())
    return False
