"""Talk to the local registry: is /v2/ answering, and what does it hold."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Callable

import httpx

from ..errors import MirrorError, UsageError
from .state import LocalRegistry, find_local_registry


def _client(registry: LocalRegistry, timeout: float) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(registry.ca_file)) if registry.ca_file else True
    auth = (registry.credentials.username, registry.credentials.password) if registry.credentials else None
    return httpx.Client(verify=verify, auth=auth, timeout=timeout, trust_env=False)


def url(registry: LocalRegistry) -> str:
    return f"{'http' if registry.plain_http else 'https'}://{registry.host}"


def answers(registry: LocalRegistry, timeout: float = 3.0) -> bool:
    """/v2/ answers 200, or 401 (up, behind auth)."""
    try:
        with _client(registry, timeout) as client:
            return client.get(url(registry) + "/v2/").status_code in (200, 401)
    except httpx.HTTPError:
        return False


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
    """Every repository and its tags, following the registry's pagination."""
    found: dict[str, list[str]] = {}
    with _client(registry, timeout) as client:
        next_url: str | None = url(registry) + "/v2/_catalog?n=1000"
        while next_url:
            response = client.get(next_url)
            response.raise_for_status()
            for repository in response.json().get("repositories") or []:
                tags = client.get(f"{url(registry)}/v2/{repository}/tags/list")
                found[repository] = sorted(tags.json().get("tags") or []) if tags.status_code == 200 else []
            next_url = _next_link(response, url(registry))
    return found


def _next_link(response: httpx.Response, base: str) -> str | None:
    link = response.headers.get("link", "")
    if "<" not in link:
        return None
    target = link[link.index("<") + 1 : link.index(">")]
    return target if target.startswith("http") else base + target
