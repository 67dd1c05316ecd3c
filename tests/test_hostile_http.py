"""A registry's HTTP answers that lie: framing, numbers, encodings, listings, and where credentials go.

Each case is a loopback server scripted to send exactly the hostile answer
(tests/test_wire.py's ``Scripted``), so the failure is the client's own.
"""

from __future__ import annotations

import ssl

import anyio
import httpx
import pytest

from mirror.errors import RegistryError
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings
from mirror.registry.wire import WireTransport
from test_wire import Scripted

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def wire_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=WireTransport(ssl.create_default_context(), max_idle=4),
                             timeout=httpx.Timeout(5.0))


def registry_client(port: int, **settings) -> RegistryClient:
    return RegistryClient(f"127.0.0.1:{port}", RegistrySettings(plain_http=True, **settings),
                          auth_files=AuthFiles([]), backoff_base=0.01)


# -- framing (RFC 9112 section 6.3) -----------------------------------------

async def test_two_different_content_lengths_are_a_protocol_error_not_asked_again():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello world"
    async with Scripted(lambda head, body, n: reply) as server:
        async with wire_client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="not one length"):
                await http.get(server.url())
        async with registry_client(server.port, retries=3) as client:
            with pytest.raises(RegistryError, match="outside HTTP/1.1.*not one length"):
                await client.ping()
    assert len(server.requests) == 2  # one each: asking again would get the same lie


@pytest.mark.parametrize("lengths", [b"Content-Length: 5, 6", b"Content-Length: \xc2\xb2", b"Content-Length: -5"])
async def test_a_content_length_that_is_no_single_number_is_a_protocol_error(lengths):
    reply = b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\n\r\nhello"
    async with Scripted(lambda head, body, n: reply) as server, wire_client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="not one length"):
            await http.get(server.url())


async def test_identical_repeated_content_lengths_count_as_one():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello"
    async with Scripted(lambda head, body, n: reply) as server, wire_client() as http:
        assert (await http.get(server.url())).content == b"hello"
        assert (await http.get(server.url())).content == b"hello"
    assert server.connections == 1


async def test_a_header_value_with_a_line_break_is_never_sent():
    async with Scripted(lambda head, body, n: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server, \
            wire_client() as http:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.get(server.url(), headers={"Authorization": "Bearer x\r\nX-Injected: 1"})
    assert server.requests == []
