"""One RegistryClient per registry host, opened on first use, closed together."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Callable

import httpx

from .client import RegistryClient
from .settings import RegistrySettings


class ClientPool:
    """``http_transport`` goes to every client (tests inject a fake registry; None: the network)."""

    def __init__(self, settings_for: Callable[[str], RegistrySettings],
                 http_transport: httpx.AsyncBaseTransport | None = None):
        self._settings_for = settings_for
        self._http_transport = http_transport
        self._clients: dict[str, RegistryClient] = {}
        self._stack = AsyncExitStack()

    async def get(self, host: str) -> RegistryClient:
        client = self._clients.get(host)
        if client is None:
            client = RegistryClient(host, self._settings_for(host), http_transport=self._http_transport)
            client = await self._stack.enter_async_context(client)
            self._clients[host] = client
        return client

    async def __aenter__(self) -> "ClientPool":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
