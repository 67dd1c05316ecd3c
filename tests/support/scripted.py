"""A scripted HTTP server on loopback, in the test's own event loop: it answers each request with the
bytes a test chose, so the wire's handling of every odd answer can be checked in-process."""

from __future__ import annotations

import asyncio


class Scripted:
    """A TCP server; ``answer(head, body, n)`` for the n-th request returns the bytes to send, the
    bytes and CLOSE to close the connection after them, or None to close without answering."""

    def __init__(self, answer):
        self.answer, self.connections, self.requests = answer, 0, []

    async def __aenter__(self) -> "Scripted":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                reply = self.answer(head, body, len(self.requests))
                if reply is None:
                    break
                data, close = reply if isinstance(reply, tuple) else (reply, False)
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str = "/v2/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"
