"""wire.py, mirror's HTTP/1.1 connection layer, against a scripted server: framing, reuse, bad answers.

The real registries of the other tests exercise the common path; here a raw
TCP server answers exactly what each case needs, byte for byte.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from mirror.registry.wire import MAX_HEAD, WireTransport
from support.scripted import Scripted

pytestmark = pytest.mark.anyio


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=WireTransport(ssl.create_default_context(), max_idle=4),
                             timeout=httpx.Timeout(5.0))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CLOSE = True


async def test_connections_are_reused_and_bodies_arrive_whole():
    async with Scripted(lambda head, body, n: OK) as server, client() as http:
        for _ in range(3):
            assert (await http.get(server.url())).content == b"hello"
    assert server.connections == 1 and len(server.requests) == 3


async def test_chunked_body_with_extensions_and_trailers():
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    async with Scripted(lambda head, body, n: reply) as server, client() as http:
        assert (await http.get(server.url())).content == b"hello world"
        assert (await http.get(server.url())).content == b"hello world"  # the connection was left clean
    assert server.connections == 1


async def test_a_request_body_is_sent_exactly_with_its_length():
    async with Scripted(lambda head, body, n: b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") as server, \
            client() as http:
        async def parts():
            yield b"abc"
            yield b"defg"
        streamed = await http.put(server.url("/up"), content=parts(), headers={"Content-Length": "7"})
        in_memory = await http.put(server.url("/up"), content=b"0123456789")
    assert streamed.status_code == in_memory.status_code == 201
    assert [body for _, body in server.requests] == [b"abcdefg", b"0123456789"]


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    async with Scripted(lambda head, body, n: (OK, CLOSE)) as server, client() as http:
        await http.get(server.url())
        await asyncio.sleep(0.05)  # the server's close reaches the idle connection

        async def parts():  # a streamed body cannot be sent again: it must go out on a live connection
            yield b"payload"
        response = await http.put(server.url("/up"), content=parts(), headers={"Content-Length": "7"})
    assert response.status_code == 200 and server.requests[1][1] == b"payload"
    assert server.connections == 2


async def test_a_reused_connection_closed_at_the_server_is_retried_once_on_a_new_one():
    def answer(head, body, n):
        return OK if n != 2 else None  # the second request finds the connection closed under it

    async with Scripted(answer) as server, client() as http:
        assert (await http.get(server.url())).content == b"hello"
        assert (await http.get(server.url())).content == b"hello"
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_streamed_body_is_never_sent_twice():
    def answer(head, body, n):
        return OK if n != 2 else None

    async with Scripted(answer) as server, client() as http:
        await http.get(server.url())

        async def parts():
            yield b"payload"
        with pytest.raises(httpx.RemoteProtocolError):
            await http.put(server.url("/up"), content=parts(), headers={"Content-Length": "7"})
    assert len(server.requests) == 2


async def test_connection_close_and_http_1_0_answers_end_the_connection():
    replies = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
               b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    for reply in replies:
        async with Scripted(lambda head, body, n: reply) as server, client() as http:
            await http.get(server.url())
            await http.get(server.url())
        assert server.connections == 2, reply


async def test_an_answer_with_bytes_past_its_length_is_never_reused():
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"
    async with Scripted(lambda head, body, n: extra) as server, client() as http:
        assert (await http.get(server.url())).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await http.get(server.url())).content == b"ok"  # not "EXTRA..." read as an answer
    assert server.connections == 2


@pytest.mark.parametrize("reply, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the body's end"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.1 answer"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: 1\r\n" * 101 + b"\r\n",
     "more than 100 trailer lines"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 101 + OK, "more than 100 informational answers"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", f"exceed {MAX_HEAD} bytes"),
])
async def test_a_bad_answer_is_a_protocol_error_naming_what_is_wrong(reply, message):
    async with Scripted(lambda head, body, n: (reply, CLOSE)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await http.get(server.url())


async def test_a_silent_server_is_a_read_timeout():
    async with Scripted(lambda head, body, n: b"") as server:
        async with httpx.AsyncClient(transport=WireTransport(ssl.create_default_context(), max_idle=1),
                                     timeout=httpx.Timeout(0.3)) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url())


async def test_nothing_listening_is_a_connect_error():
    async with Scripted(lambda head, body, n: OK) as server:
        port = server.port
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/v2/")


async def test_the_write_timeout_is_per_piece_so_a_slow_long_upload_goes_through():
    """Each piece must leave within the timeout; the whole upload may take many times longer."""
    received = bytearray()

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(received) < length:
            received.extend(await reader.read(256 << 10))
            await asyncio.sleep(0.01)  # ~25 MB/s: the 40 MiB body takes ~1.7 s
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = bytes(range(256)) * (160 << 10)

    async def parts():
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]
    try:
        async with httpx.AsyncClient(transport=WireTransport(ssl.create_default_context(), max_idle=1),
                                     timeout=httpx.Timeout(1.0)) as http:
            response = await http.put(f"http://127.0.0.1:{port}/up", content=parts(),
                                      headers={"Content-Length": str(len(body))})
    finally:
        server.close()
    assert response.status_code == 201 and bytes(received) == body
