"""A registry's HTTP answers that lie: framing, numbers, encodings, listings, and where credentials go.

Each case is a loopback server scripted to send exactly the hostile answer
(tests/support/scripted.py's ``Scripted``), so the failure is the client's own.
"""

from __future__ import annotations

import hashlib
import json
import ssl

import anyio
import httpx
import pytest
import zstandard

from mirror.errors import AuthError, IntegrityError, NotFoundError, RegistryError
from mirror.model import oci
from mirror.model.reference import is_tag
from mirror.registry.client import RegistryClient
from mirror.registry.upload import SMALL_UPLOAD
from mirror.registry.credentials import AuthFiles
from mirror.registry.ratelimit import RateLimit
from mirror.registry.settings import Credentials, RegistrySettings
from mirror.registry.wire import WireTransport
from support.hostile_source import REPOSITORY, TAG, HostileSource
from support.scripted import Scripted

pytestmark = pytest.mark.anyio

MIB = 1 << 20


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


async def test_a_short_answer_to_an_optional_document_keeps_its_connection():
    # distribution 2.8 answers every referrers request (one per manifest) with a short 404 page:
    # its body is read, so the connection serves the next request instead of a new one per lookup.
    # (The first answer says the API is served, so the client asks again for each subject.)
    index = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    served = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(index), index))
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\n404 page not found\n"
    async with Scripted(lambda head, body, n: served if n == 1 else missing) as server, \
            registry_client(server.port) as client:
        assert await client.referrers("lib/app", "sha256:" + "0" * 64) == []
        for _ in range(3):
            assert await client.referrers("lib/app", "sha256:" + "1" * 64) is None
    assert server.connections == 1 and len(server.requests) == 4


async def test_a_cookie_the_registry_sets_is_sent_back_to_it():
    # Answers that set none skip httpx's cookie handling (sender.py Sender.send; _CookieJar through a proxy); one that
    # sets one still counts.
    def reply(head, body, n):
        cookie = b"Set-Cookie: route=node-2; Path=/\r\n" if n == 1 else b""
        return b"HTTP/1.1 200 OK\r\n" + cookie + b"Content-Length: 0\r\n\r\n"

    async with Scripted(reply) as server, registry_client(server.port) as client:
        for _ in range(3):
            await client.ping()
    assert [b"cookie: route=node-2" in head.lower() for head, _ in server.requests] == [False, True, True]


async def test_a_header_value_with_a_line_break_is_never_sent():
    async with Scripted(lambda head, body, n: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server, \
            wire_client() as http:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.get(server.url(), headers={"Authorization": "Bearer x\r\nX-Injected: 1"})
    assert server.requests == []


# -- numbers in headers -------------------------------------------------------

@pytest.mark.parametrize("retry_after", ["\u00b2", "-1", "1e3", "Wed, 21 Oct 99999999999999999999 07:28:00 GMT"])
async def test_a_retry_after_that_is_no_number_or_date_is_ignored_for_the_usual_backoff(retry_after):
    def answer(head, body, n):
        if n == 1:
            return (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: " + retry_after.encode() +
                    b"\r\nContent-Length: 0\r\n\r\n")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    async with Scripted(answer) as server, registry_client(server.port, retries=2) as client:
        await client.ping()
    assert len(server.requests) == 2


@pytest.mark.parametrize("header, expected", [
    ("76;w=21600", RateLimit(76, 21600)),
    ("76", RateLimit(76, None)),
    ("76;w=\u00b2", RateLimit(76, None)),  # an unreadable window is no window
    ("\u00b2;w=21600", None),  # an unreadable count is no budget
    ("9" * 40, None),
])
def test_ratelimit_numbers_are_ascii_digits_or_nothing(header, expected):
    assert RateLimit.parse(header) == expected


def path_of(head: bytes) -> str:
    return head.split(b" ", 2)[1].decode()


def answer(status: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in (headers or {}).items()]
    if "Content-Length" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def bearer_registry(token_answer: bytes):
    """A registry that wants a bearer token, from a realm on the same server answering ``token_answer``."""
    def reply(head, body, n):
        path = path_of(head)
        if path.startswith("/token"):
            return answer("200 OK", token_answer, {"Content-Type": "application/json"})
        if b"authorization: bearer" in head.lower():
            return answer("200 OK", b"{}")
        port = reply.port  # type: ignore[attr-defined]
        return answer("401 Unauthorized", b"", {
            "WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{port}/token",service="test"'})
    return reply


async def test_a_token_expiry_that_is_no_number_takes_the_default_lifetime():
    reply = bearer_registry(b'{"token": "abc", "expires_in": "\xc2\xb2"}')
    async with Scripted(reply) as server, registry_client(server.port) as client:
        reply.port = server.port
        await client.ping()


async def test_a_token_with_a_line_break_is_refused_as_no_token():
    reply = bearer_registry(b'{"token": "abc\\r\\nX-Injected: 1"}')
    async with Scripted(reply) as server, registry_client(server.port) as client:
        reply.port = server.port
        with pytest.raises(RegistryError, match="token server for .* answered without a token"):
            await client.ping()
    assert not any(b"x-injected" in head.lower() for head, _ in server.requests)


async def test_a_content_range_that_is_no_number_is_not_appended(tmp_path):
    partial = tmp_path / "blob.partial"
    partial.write_bytes(b"01234")
    reply = answer("206 Partial Content", b"56789", {"Content-Range": "bytes \u00b2-9/10"})
    async with Scripted(lambda head, body, n: reply) as server, registry_client(server.port) as client:
        with pytest.raises(RegistryError, match="answered 206"):
            await client.download_blob("lib/app", "sha256:" + "0" * 64, partial, size=10)
    assert partial.read_bytes() == b"01234"


# -- compressed answers: mirror asks for identity and decodes nothing ---------------------------

async def test_a_blob_compressed_on_the_way_fails_its_digest_naming_the_encoding(tmp_path):
    blob = bytes(MIB)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    reply = answer("200 OK", zstandard.ZstdCompressor().compress(blob), {"Content-Encoding": "zstd"})
    async with Scripted(lambda head, body, n: reply) as server, registry_client(server.port) as client:
        with pytest.raises(IntegrityError, match="as sent with Content-Encoding zstd"):
            await client.download_blob("lib/app", digest, tmp_path / "blob", size=len(blob))
    assert b"accept-encoding: identity" in server.requests[0][0].lower()
    assert not (tmp_path / "blob").exists()


async def test_every_request_asks_for_identity_and_a_token_answer_is_not_decoded():
    token = json.dumps({"token": "abc"}).encode()
    reply = bearer_registry(zstandard.ZstdCompressor().compress(token))

    def encoded_token(head, body, n):  # the token server compresses, unasked
        data = reply(head, body, n)
        return data.replace(b"\r\n", b"\r\nContent-Encoding: zstd\r\n", 1) if b"/token" in head else data

    async with Scripted(encoded_token) as server, registry_client(server.port) as client:
        reply.port = server.port
        with pytest.raises(RegistryError, match="token request for .* Content-Encoding 'zstd'"):
            await client.ping()
    assert all(b"accept-encoding: identity\r\n" in head.lower() for head, _ in server.requests)


async def test_a_token_answer_past_the_cap_is_refused_naming_it():
    reply = bearer_registry(b'{"token": "abc", "padding": "' + b"x" * (2 * MIB) + b'"}')
    async with Scripted(reply) as server, registry_client(server.port) as client:
        reply.port = server.port
        with pytest.raises(RegistryError, match=f"token request for .* more than {MIB} bytes"):
            await client.ping()


def test_an_error_answer_that_never_ends_is_read_only_for_its_message():
    with HostileSource(manifest="endless-404") as source:
        async def get() -> None:
            async with registry_client(int(source.host.rsplit(":", 1)[1])) as client:
                await client.get_manifest(REPOSITORY, TAG)

        with pytest.raises(NotFoundError, match="not found"):
            anyio.run(get)
        assert source.sent["/manifests/"] < 16 * MIB  # it offered 300 MiB


# -- tag and catalog listings ----------------------------------------------------------------

def listing(page: bytes):
    return lambda head, body, n: answer("200 OK", page, {"Content-Type": "application/json"})


async def test_listed_entries_that_are_not_names_are_passed_on_as_no_names():
    """5 or null are no tags in a list of strings; passed on as "5" they would be valid tags and get synced."""
    tags = {"name": "lib/app", "tags": ["v1", 2, {"a": 1}, None, True, "x" * 300]}
    async with Scripted(listing(json.dumps(tags).encode())) as server, registry_client(server.port) as client:
        listed = await client.list_tags("lib/app")
    assert listed == ["v1", "<2>", '<{"a":1}>', "<null>", "<true>", f"<{json.dumps('x' * 300)[:126]}>"]
    assert [tag for tag in listed if is_tag(tag)] == ["v1"]
    catalog = {"repositories": ["lib/app", ["nested"], 7]}
    async with Scripted(listing(json.dumps(catalog).encode())) as server, registry_client(server.port) as client:
        assert await client.catalog() == ["lib/app", '<["nested"]>', "<7>"]


@pytest.mark.parametrize("page", [b'{"tags": "v1"}', b'["v1"]', b'{"tags": {"v1": 1}}', b"[" * 100000])
async def test_a_listing_that_is_no_object_holding_a_list_is_an_error_naming_host_and_repository(page):
    async with Scripted(listing(page)) as server, registry_client(server.port) as client:
        with pytest.raises(RegistryError, match=f"tags of 127.0.0.1:{server.port}/lib/app: .* no JSON object "
                                                "holding a 'tags' list"):
            await client.list_tags("lib/app")


async def test_a_listing_page_past_the_cap_is_refused_unread():
    page = b'{"tags": ["v1"], "padding": "' + b"x" * (17 * MIB) + b'"}'
    async with Scripted(listing(page)) as server, registry_client(server.port) as client:
        with pytest.raises(RegistryError, match=f"more than {16 * MIB} bytes in one page"):
            await client.list_tags("lib/app")


# -- credentials go only to the origin whose challenge they answer ----------------------------

class Elsewhere:
    """The registry's challenge and first answers, pointing (Link, Location) at ``other``: another port."""

    def __init__(self, scheme: str, other: Scripted):
        self.scheme, self.other, self.port = scheme, other, 0

    def __call__(self, head, body, n):
        path, lower = path_of(head), head.lower()
        if path.startswith("/token"):
            return answer("200 OK", b'{"token": "secret-token"}')
        if b"authorization:" not in lower:
            realm = 'Basic realm="r"' if self.scheme == "basic" else \
                f'Bearer realm="http://127.0.0.1:{self.port}/token",service="s"'
            return answer("401 Unauthorized", b"", {"WWW-Authenticate": realm})
        if "/tags/list" in path:
            return answer("200 OK", b'{"tags": ["v1"]}', {
                "Link": f'<{self.other.url("/v2/lib/app/tags/list?last=v1")}>; rel="next"'})
        if path.startswith("/v2/lib/app/blobs/uploads/"):
            return answer("202 Accepted", b"", {"Location": self.other.url("/upload/1")})
        return answer("200 OK", b"{}")


def storage(put_status: str):
    """The other origin: a tags page, and an upload session that ends in ``put_status``."""
    def reply(head, body, n):
        method, path = head.split(b" ", 1)[0], path_of(head)
        if "/tags/list" in path:
            return answer("200 OK", b'{"tags": ["v2"]}')
        if method == b"PATCH":
            return answer("202 Accepted", b"", {"Location": "/upload/1"})
        if method == b"PUT":
            return answer(put_status, b"")
        return answer("204 No Content")
    return reply


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
async def test_credentials_never_go_to_a_link_page_or_upload_location_on_another_origin(scheme):
    size = SMALL_UPLOAD + 1  # PATCH, then the closing PUT

    async def chunks():
        for start in range(0, size, MIB):
            yield bytes(min(MIB, size - start))

    async with Scripted(storage("201 Created")) as other:
        registry = Elsewhere(scheme, other)
        async with Scripted(registry) as server, \
                registry_client(server.port, credentials=Credentials("user", "password")) as client:
            registry.port = server.port
            assert await client.list_tags("lib/app") == ["v1", "v2"]
            await client.upload_blob("lib/app", "sha256:" + "0" * 64, size, chunks)
    methods = [head.split(b" ", 1)[0] for head, _ in other.requests]
    assert methods == [b"GET", b"PATCH", b"PUT"]
    assert not any(b"authorization:" in head.lower() for head, _ in other.requests)
    assert any(b"authorization:" in head.lower() for head, _ in server.requests)  # the registry got them


async def test_a_failed_upload_is_cancelled_at_another_origin_without_credentials():
    async with Scripted(storage("400 Bad Request")) as other:
        registry = Elsewhere("basic", other)
        async with Scripted(registry) as server, \
                registry_client(server.port, credentials=Credentials("user", "password")) as client:
            with pytest.raises(RegistryError, match="answered 400"):
                await client.upload_blob("lib/app", "sha256:" + "0" * 64, 3, b"abc")
    assert [head.split(b" ", 1)[0] for head, _ in other.requests] == [b"PUT", b"DELETE"]
    assert not any(b"authorization:" in head.lower() for head, _ in other.requests)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://[::1", "javascript:x"])
async def test_a_location_that_is_no_http_url_is_refused_naming_it(target):
    def reply(head, body, n):
        return answer("202 Accepted", b"", {"Location": target})

    async with Scripted(reply) as server, registry_client(server.port) as client:
        with pytest.raises(RegistryError, match="which is no http\\(s\\) URL"):
            await client.upload_blob("lib/app", "sha256:" + "0" * 64, 3, b"abc")


# -- other things a peer names ------------------------------------------------------------------

async def test_a_url_that_is_not_http_never_leaves_the_wire():
    async with Scripted(lambda head, body, n: answer("200 OK")) as server, wire_client() as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get(f"ftp://127.0.0.1:{server.port}/")
    assert server.connections == 0


async def test_a_token_realm_that_is_no_http_url_is_an_auth_error_naming_it():
    def reply(head, body, n):
        return answer("401 Unauthorized", b"", {"WWW-Authenticate": 'Bearer realm="file:///etc/passwd"'})

    async with Scripted(reply) as server, registry_client(server.port) as client:
        with pytest.raises(AuthError, match="realm 'file:///etc/passwd', which is no http"):
            await client.ping()


async def test_a_manifest_head_with_a_malformed_digest_is_asked_again_by_get():
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}).encode()

    def reply(head, body, n):
        headers = {"Content-Type": oci.OCI_INDEX, "Docker-Content-Digest": "sha256:../../blobs/x"}
        if head.startswith(b"HEAD"):
            return answer("200 OK", b"", {**headers, "Content-Length": str(len(manifest))})
        return answer("200 OK", manifest, {"Content-Type": oci.OCI_INDEX})

    async with Scripted(reply) as server, registry_client(server.port) as client:
        descriptor = await client.head_manifest("lib/app", "v1")
    assert descriptor.digest == oci.sha256_digest(manifest)


async def test_a_registry_error_message_is_quoted_on_one_line_and_short():
    error = {"errors": [{"code": "NAME_UNKNOWN", "message": "no\nsuch\x1b[31m repository " + "x" * 5000}]}
    reply = answer("404 Not Found", json.dumps(error).encode(), {"Content-Type": "application/json"})
    async with Scripted(lambda head, body, n: reply) as server, registry_client(server.port) as client:
        with pytest.raises(NotFoundError) as raised:
            await client.get_manifest("lib/app", "v1")
    message = str(raised.value)
    assert "(NAME_UNKNOWN: no?such?[31m repository xxx" in message
    assert message.isprintable() and len(message) < 500
