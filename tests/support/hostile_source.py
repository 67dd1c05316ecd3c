"""A registry that lies, for fault-injection tests: it serves one image whose content misbehaves.

    with HostileSource(layer="oversize") as source:      # or "drip", "honest"; manifest="huge", ...
        ... RegistryClient(source.host, RegistrySettings(plain_http=True)) ...
        source.sent["/blobs/"]                            # body bytes it managed to write, per path kind

Behaviours (chosen per instance):
- layer "honest": the real bytes; "oversize": the declared size, then endless more;
  "drip": one byte every ``drip_interval`` seconds; "zstd-bomb": ``bomb("zstd")``, Content-Encoding zstd.
- manifest "honest"; "huge": Content-Length 300 MB and zeros; "huge-chunked": no length, endless;
  "endless-404": a 404 whose body never ends; "zstd-bomb", "gzip-bomb": ``bomb(...)`` with that
  Content-Encoding, asked for or not.
- frozen=True: accepts connections and never answers (``source.connections`` counts them).
Binds 127.0.0.1 only; every connection thread ends when the test closes the server.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import socket
import threading
import time
import zlib

import zstandard
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPOSITORY = "library/hostile"
TAG = "v1"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=None)
def bomb(encoding: str) -> bytes:
    """Zeros compressed as ``encoding``: 32 KiB that decode to 1 GiB (zstd), 255 KiB to 256 MiB (gzip)."""
    if encoding == "zstd":
        compressor, size = zstandard.ZstdCompressor().compressobj(), 1 << 30
    else:
        compressor, size = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), 256 << 20
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(size >> 20)) + compressor.flush()


class HostileSource:
    def __init__(self, *, layer: str = "honest", manifest: str = "honest", frozen: bool = False,
                 drip_interval: float = 0.3):
        self.layer_mode, self.manifest_mode, self.frozen = layer, manifest, frozen
        self.drip_interval = drip_interval
        self.layer = gzip.compress(b"hostile layer content " * 5000)
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                  "diff_ids": []}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": _digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": _digest(self.layer), "size": len(self.layer)}],
        }).encode()
        self.sent: dict[str, int] = {"/manifests/": 0, "/blobs/": 0}
        self.connections = 0
        self.closed = threading.Event()
        self._lock = threading.Lock()
        if frozen:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
            self._thread = threading.Thread(target=self._accept_and_ignore, daemon=True)
        else:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            self._server.daemon_threads = True
            self._server.source = self  # type: ignore[attr-defined]
            self.host = f"127.0.0.1:{self._server.server_address[1]}"
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def reference(self) -> str:
        return f"{self.host}/{REPOSITORY}:{TAG}"

    @property
    def layer_digest(self) -> str:
        return _digest(self.layer)

    def count(self, kind: str, size: int) -> None:
        with self._lock:
            self.sent[kind] += size

    def _accept_and_ignore(self) -> None:
        held = []
        self._listener.settimeout(0.2)
        while not self.closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
            held.append(connection)  # never read, never answered
        for connection in held:
            connection.close()

    def __enter__(self) -> "HostileSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed.set()
        if self.frozen:
            self._thread.join()
            self._listener.close()
        else:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    @property
    def source(self) -> HostileSource:
        return self.server.source  # type: ignore[attr-defined]

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        source, path = self.source, self.path
        if path == "/v2/":
            return self._send(200, b"{}", "application/json")
        if path.startswith(f"/v2/{REPOSITORY}/manifests/"):
            return self._manifest()
        if path == f"/v2/{REPOSITORY}/blobs/{_digest(source.config)}":
            return self._send(200, source.config, "application/octet-stream")
        if path == f"/v2/{REPOSITORY}/blobs/{source.layer_digest}":
            return self._layer()
        self._send(404, b'{"errors":[{"code":"NOT_FOUND","message":"no"}]}', "application/json")

    def _manifest(self) -> None:
        source = self.source
        media_type = "application/vnd.docker.distribution.manifest.v2+json"
        if source.manifest_mode == "honest":
            return self._send(200, source.manifest, media_type, digest=_digest(source.manifest))
        if source.manifest_mode.endswith("-bomb"):
            encoding = source.manifest_mode.split("-")[0]
            return self._send(200, bomb(encoding), media_type, encoding=encoding)
        self.send_response(404 if source.manifest_mode == "endless-404" else 200)
        self.send_header("Content-Type", media_type)
        if source.manifest_mode == "huge":
            self.send_header("Content-Length", str(300 << 20))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._endless("/manifests/", chunked=source.manifest_mode != "huge", limit=300 << 20)

    def _layer(self) -> None:
        source = self.source
        if source.layer_mode == "honest":
            return self._send(200, source.layer, "application/octet-stream")
        if source.layer_mode == "zstd-bomb":
            return self._send(200, bomb("zstd"), "application/octet-stream", encoding="zstd")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(source.layer) if source.layer_mode == "drip" else 300 << 20))
        self.end_headers()
        if self.command == "HEAD":
            return
        if source.layer_mode == "drip":
            for byte in source.layer:
                if source.closed.is_set() or not self._write(bytes([byte]), "/blobs/"):
                    return
                time.sleep(source.drip_interval)
        else:
            self._write(source.layer, "/blobs/")
            self._endless("/blobs/", chunked=False, limit=(300 << 20) - len(source.layer))

    def _endless(self, kind: str, *, chunked: bool, limit: int) -> None:
        piece = b"\0" * (64 << 10)
        sent = 0
        while sent < limit and not self.source.closed.is_set():
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            if not self._write(data, kind):
                return
            sent += len(piece)

    def _write(self, data: bytes, kind: str) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        self.source.count(kind, len(data))
        return True

    def _send(self, status: int, body: bytes, media_type: str, digest: str | None = None,
              encoding: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command != "HEAD":
            self._write(body, "/blobs/" if "/blobs/" in self.path else "/manifests/")
