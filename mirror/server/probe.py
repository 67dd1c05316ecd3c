"""Talk to the local registry: is /v2/ answering, and what does it hold.

Through the same RegistryClient as push, with the CA and credentials `up`
recorded; these callers are synchronous, so each question runs its own
event loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import anyio

from ..errors import AuthError, MirrorError, UsageError
from ..registry.client import RegistryClient
from ..registry.credentials import AuthFiles
from ..registry.settings import RegistrySettings
from .state import LocalRegistry, find_local_registry


def client(registry: LocalRegistry, timeout: float, retries: int = 0) -> RegistryClient:
    """A client for ``registry`` with what `up` recorded, and no other credentials (no auth files)."""
    settings = RegistrySettings(plain_http=registry.plain_http, ca_file=registry.ca_file,
                                credentials=registry.credentials, max_connections=4, retries=retries,
                                timeout=timeout)
    return RegistryClient(registry.host, settings, auth_files=AuthFiles([]))


def url(registry: LocalRegistry) -> str:
    return f"{'http' if registry.plain_http else 'https'}://{registry.host}"


def answers(registry: LocalRegistry, timeout: float = 3.0) -> bool:
    """/v2/ answers 200, or 401 (up, behind auth)."""

    async def ping() -> None:
        async with client(registry, timeout) as registry_client:
            await registry_client.ping()

    try:
        anyio.run(ping)
    except AuthError as exc:
        # Refused credentials (a 401) come from an answer; a TLS refusal has the transport error as cause.
        return exc.__cause__ is None
    except MirrorError:
        return False
    return True


def wait_ready(registry: LocalRegistry, gone: Callable[[], str | None], timeout: float = 30.0) -> None:
    """Wait until /v2/ answers; ``gone()`` says why the registry died, if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(registry, timeout=2.0):
            return
        reason = gone()
        if reason is not None:
            raise MirrorError(f"registry exited before answering on {url(registry)}: {reason}")
        time.sleep(0.2)
    raise MirrorError(f"registry did not answer on {url(registry)}/v2/ within {timeout:.0f}s")


def require_local_registry(state_dir: Path | None = None) -> LocalRegistry:
    """For a command run without --registry: the registry `up` started, answering, or the next step."""
    found = find_local_registry(state_dir)
    if found is None:
        raise UsageError("no --registry given and no registry started by `mirror registry up` on this host: "
                         "run `mirror registry up --from-bundle BUNDLE`, or pass --registry HOST:PORT")
    if not answers(found):
        raise UsageError(f"the registry `mirror registry up` started at {found.host} does not answer: see "
                         "`mirror registry status`, or run `mirror registry up` again")
    return found


def log_reason(lines: list[str]) -> str:
    """The line of a registry's log that says why it stopped (a panic, a fatal error)."""
    for marker in ("panic:", "level=fatal", "level=error"):
        for line in lines:
            if marker in line:
                return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def repositories(registry: LocalRegistry, timeout: float = 10.0) -> dict[str, list[str]]:
    """Every repository and its tags (every page of each)."""

    async def listing() -> dict[str, list[str]]:
        async with client(registry, timeout, retries=2) as registry_client:
            return {repository: sorted(await registry_client.list_tags(repository))
                    for repository in await registry_client.catalog()}

    return anyio.run(listing)
