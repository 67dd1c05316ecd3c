"""How the registry client's HTTP stack is built: the injected transport, the environment's proxies, TLS ALPN."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from httpx._utils import get_environment_proxies  # only to compare with: httpx's own reading of the environment

from mirror.model import oci
from mirror.registry.client import RegistryClient
from mirror.registry.credentials import AuthFiles
from mirror.registry.settings import RegistrySettings
from mirror.registry.sender import proxy_routes, tls_context
from mirror.server.tls import ensure_tls
from support.fake_registry import FakeRegistry
from support.scripted import Scripted

pytestmark = pytest.mark.anyio

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def environment(monkeypatch):
    """Set proxy variables on a clean slate (either case is read)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return lambda **values: [monkeypatch.setenv(name, value) for name, value in values.items()]


@pytest.mark.parametrize("values", [
    {},
    {"HTTP_PROXY": "http://proxy.corp:3128"},
    {"HTTPS_PROXY": "proxy.corp:3128", "NO_PROXY": "127.0.0.1, .internal,localhost,::1,10.0.0.0/8,registry"},
    {"ALL_PROXY": "socks5://proxy.corp:1080", "NO_PROXY": "http://plain.example"},
    {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "a.example,*"},
    {"NO_PROXY": "127.0.0.1"},
])
def test_proxy_routes_are_the_ones_httpx_reads_from_the_environment(environment, values):
    environment(**values)
    assert proxy_routes() == get_environment_proxies()


class Server:
    """A loopback HTTP/1.1 server answering 200 to anything; keeps each request line, and each TLS
    connection's negotiated ALPN protocol."""

    def __init__(self, context: ssl.SSLContext | None = None):
        self.context, self.lines, self.alpn = context, [], []

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.host = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.alpn.append(tls.selected_alpn_protocol())
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.lines.append(head.split(b"\r\n")[0].decode())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def client(host: str, settings: RegistrySettings = RegistrySettings(plain_http=True), **kwargs) -> RegistryClient:
    return RegistryClient(host, settings, auth_files=AuthFiles([]), **kwargs)


async def test_proxied_requests_go_to_the_proxy_and_no_proxy_hosts_go_direct(environment):
    async with Server() as registry, Server() as proxy:
        environment(HTTP_PROXY=f"http://{proxy.host}")
        async with client(registry.host) as c:
            await c.ping()
        environment(NO_PROXY="127.0.0.1")
        async with client(registry.host) as c:
            await c.ping()
    assert proxy.lines == [f"GET http://{registry.host}/v2/ HTTP/1.1"]  # absolute form: for a proxy
    assert registry.lines == ["GET /v2/ HTTP/1.1"]


async def test_an_injected_transport_gets_every_request_whatever_the_environment_says(environment):
    environment(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    fake = FakeRegistry()
    async with client("registry.test", http_transport=fake) as c:
        await c.ping()
    async with client("registry.test", RegistrySettings(), http_transport=fake) as c:
        await c.ping()
    assert fake.requests == ["GET /v2/", "GET /v2/"]


async def test_direct_tls_offers_http_1_1_alone_whatever_the_shared_context_offers(tmp_path):
    tls = ensure_tls(tmp_path, tmp_path / "server.crt", tmp_path / "server.key", ["127.0.0.1"])
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tls.cert, tls.key)
    server_context.set_alpn_protocols(["h2", "http/1.1"])  # the server's choice: h2 whenever offered
    settings = RegistrySettings(ca_file=tls.ca_cert)
    # What httpcore does to a context it is handed, when its HTTP/2 is on (here: this test's own CA).
    tls_context(settings).set_alpn_protocols(["http/1.1", "h2"])
    async with Server(server_context) as registry:
        async with client(registry.host, settings) as c:
            await c.ping()
    assert registry.alpn == ["http/1.1"]


async def test_a_direct_request_carries_each_header_once_the_callers_over_the_clients_defaults():
    # Without a proxy, requests skip httpx's client (transport.py _build): its defaults and the
    # caller's headers are merged by hand, whatever case either spells a name in.
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": {}, "layers": []}).encode()
    digest = oci.sha256_digest(manifest)
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
             % (oci.OCI_MANIFEST.encode(), len(manifest), manifest))
    async with Scripted(lambda head, body, n: reply) as server, client(f"127.0.0.1:{server.port}") as c:
        assert (await c.get_manifest("lib/app", digest)).digest == digest
    (head, _), = server.requests
    names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:] if line]
    assert sorted(names) == sorted(set(names))  # none twice
    fields = {line.split(b":")[0].lower(): line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:] if line}
    assert fields[b"accept"] == oci.ACCEPT.encode() and fields[b"accept-encoding"] == b"identity"
    assert fields[b"user-agent"].startswith(b"python-httpx/")
