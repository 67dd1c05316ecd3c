"""Registry credentials from the files `docker login` and `podman login` write.

Looked up, in order: ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``). The first
file that knows the host wins. Within a file, as Docker does: a per-host
``credHelpers`` entry, else an ``auths`` entry, else the ``credsStore`` helper.

An ``identitytoken`` (OAuth2 refresh token) comes back as
``Credentials(IDENTITY_TOKEN_USER, token)``, the convention Docker's credential
helpers use; auth.py then uses the refresh-token grant instead of basic auth.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ..errors import UsageError
from ..model.reference import DOCKER_HUB, canonical_registry
from .settings import Credentials

IDENTITY_TOKEN_USER = "<token>"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # how Docker names Hub in auth files and helpers
HELPER_TIMEOUT = 30.0


def normalize_host(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``https://h:5000/x`` -> ``h:5000``."""
    host = key.strip()
    for scheme in ("https://", "http://"):
        if host.startswith(scheme):
            host = host[len(scheme):]
    host = host.split("/", 1)[0].lower()
    return canonical_registry(host)


def default_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    paths.append(docker_dir / "config.json")
    return paths


class AuthFiles:
    """Finds Credentials for a registry host in the usual auth files."""

    def __init__(self, paths: list[Path] | None = None):
        self.paths = default_paths() if paths is None else list(paths)

    def lookup(self, host: str) -> Credentials | None:
        wanted = normalize_host(host)
        for path in self.paths:
            if not path.is_file():
                continue
            found = _lookup_in(_load(path), wanted, path)
            if found:
                return found
        return None


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read registry auth file {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"registry auth file {path} is not a JSON object")
    return doc


def _lookup_in(doc: dict[str, Any], host: str, path: Path) -> Credentials | None:
    helpers = doc.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if normalize_host(key) == host:
            found = _run_helper(str(helper), host)
            if found:
                return found
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise UsageError(f"registry auth file {path}: 'auths' is not an object")
    for key, entry in auths.items():
        if normalize_host(key) == host and isinstance(entry, dict):
            found = _entry_credentials(entry, key, path)
            if found:
                return found
    if doc.get("credsStore"):
        return _run_helper(str(doc["credsStore"]), host)
    return None


def _entry_credentials(entry: dict[str, Any], key: str, path: Path) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(IDENTITY_TOKEN_USER, str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise UsageError(f"registry auth file {path}: entry {key!r} has a malformed 'auth' value")
        return Credentials(user, password)
    if entry.get("username") and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def _run_helper(name: str, host: str) -> Credentials | None:
    """``docker-credential-NAME get`` with the server on stdin; None when absent or unknown."""
    binary = shutil.which(f"docker-credential-{name}")
    if not binary:
        return None
    server = DOCKER_HUB_KEY if host == DOCKER_HUB else host
    try:
        result = subprocess.run([binary, "get"], input=server.encode(), capture_output=True,
                                timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        raise UsageError(f"credential helper docker-credential-{name} failed to run for {host}") from None
    if result.returncode != 0:
        return None  # helpers exit non-zero with "credentials not found"
    try:
        doc = json.loads(result.stdout)
        user, secret = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"credential helper docker-credential-{name} gave unreadable output for {host}") from None
    return Credentials(user, secret) if secret else None
