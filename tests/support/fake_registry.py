"""An OCI distribution registry in memory, as an httpx transport: the transfer layer runs in-process.

``RegistryClient(host, settings, http_transport=FakeRegistry())`` talks to it
as to a real registry (go-containerregistry's pkg/registry is the model):
/v2/, manifests by tag and digest (bytes and Content-Type kept), blobs with
Range, uploads (POST, PATCH, PUT ?digest=, monolithic POST ?digest=, mounts
?mount=&from=), tags and the catalog paged with Link, and optionally a Basic
or Bearer challenge. Like distribution, it refuses a manifest whose children
are not in its repository. ``requests`` keeps every request in order;
``fault(request)`` may answer in the registry's place (a Response, best made
with ``answer`` or ``error``) or raise (an httpx.TransportError: a dropped
connection), or return None to go on. ``kinds()`` counts the requests by what
they cost a client (token, HEAD, manifest, blob, ...; scripts/wan.py counts the
benchmark's the same way).
"""

from __future__ import annotations

import base64
import hashlib
import collections
import itertools
import json
import re
from typing import Callable

import anyio
import httpx

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
Fault = Callable[[httpx.Request], "httpx.Response | None"]
MIB = 1 << 20
LARGE_BLOB = bytes(range(251)) * (9 * MIB // 251)  # ~9 MiB: a range of 2 MiB or more left is worth splitting

_ROUTES = [
    ("ping", re.compile(r"/v2/")),
    ("catalog", re.compile(r"/v2/_catalog")),
    ("token", re.compile(r"/token")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list")),
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<session>[^/]*)")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})")),
]


def request_kind(method: str, path: str) -> str:
    """What a request is, for counting round trips: token, HEAD, manifest, blob, referrers, tags or other."""
    if path.startswith("/token"):
        return "token"
    if method == "HEAD":
        return "HEAD"
    if method == "GET":
        for kind, part in (("manifest", "/manifests/"), ("blob", "/blobs/sha256:"), ("referrers", "/referrers/"),
                           ("tags", "/tags/list")):
            if part in path:
                return kind
    return "other"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, *,
           document: object = None) -> httpx.Response:
    """A response as a socket gives it, its body still to be read (httpx reads a ``content=`` body at once,
    and the client reads bodies raw); ``document`` is sent as JSON. A Content-Length given (a HEAD's) wins."""
    if document is not None:
        body, headers = json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
    return httpx.Response(status, headers={"Content-Length": str(len(body)), **(headers or {})},
                          stream=httpx.ByteStream(body))


def error(status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    return answer(status, headers=headers, document={"errors": [{"code": code, "message": message}]})


class FakeRegistry(httpx.AsyncBaseTransport):
    """One registry: content-addressed blobs and manifests, linked per repository, and tags.

    ``auth``: None, "basic" or "bearer"; ``credentials`` (user, password) are required when
    given (for bearer, by the token endpoint at /token), else tokens are handed out to anyone.
    ``page_size``: the most names one catalog or tags page lists (a client follows Link).
    A bearer token opens the repositories its scopes name; ``scopes_per_token`` grants only the
    first so many scopes of a token request (as a token server that ignores the rest would).
    """

    def __init__(self, *, auth: str | None = None, credentials: tuple[str, str] | None = None,
                 page_size: int = 100, fault: Fault | None = None, scopes_per_token: int | None = None):
        assert auth in (None, "basic", "bearer")
        self.auth, self.credentials, self.page_size, self.fault = auth, credentials, page_size, fault
        self.scopes_per_token = scopes_per_token
        self.blobs: dict[str, bytes] = {}  # digest -> bytes, every repository's
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest -> (bytes, media type)
        self.repositories: dict[str, set[str]] = {}  # repository -> digests linked into it (blobs, manifests)
        self.tags: dict[str, dict[str, str]] = {}  # repository -> tag -> digest
        self.uploads: dict[str, tuple[str, bytearray]] = {}  # session -> (repository, bytes so far)
        self.requests: list[str] = []  # "METHOD /path?query", in the order they came
        self.scopes: list[str] = []  # scopes the token endpoint was asked for
        self.token_requests: list[list[str]] = []  # the scopes of each token request, in order
        self._tokens: dict[str, set[str]] = {}  # token -> the repositories it opens ("" for /v2/ and the catalog)
        self._sessions = itertools.count(1)

    # -- for tests: put content in place, read what is there ------------------------------

    def add_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        self.repositories.setdefault(repository, set()).add(digest)
        return digest

    def add_manifest(self, repository: str, data: bytes, media_type: str, tag: str | None = None) -> str:
        """A manifest as given, its children unchecked (seeding may build anything)."""
        digest = digest_of(data)
        self.manifests[digest] = (data, media_type)
        self.repositories.setdefault(repository, set()).add(digest)
        if tag is not None:
            self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def has(self, repository: str, digest: str) -> bool:
        return digest in self.repositories.get(repository, ())

    def kinds(self) -> collections.Counter:
        """The requests so far by kind (``request_kind``)."""
        return collections.Counter(request_kind(*line.split(" ", 1)) for line in self.requests)

    def writes(self) -> list[str]:
        """The requests that change something (no GET or HEAD), in order."""
        return [line for line in self.requests if not line.startswith(("GET ", "HEAD "))]

    # -- the transport ----------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.raw_path.decode()}")
        body = await request.aread()  # a source stream that raises fails the request, as a broken upload
        if self.fault is not None:
            answer = self.fault(request)
            if answer is not None:
                return answer
        for route, pattern in _ROUTES:
            match = pattern.fullmatch(request.url.path)
            if match:
                break
        else:
            return error(404, "NOT_FOUND", request.url.path)
        if route == "token":
            return self._token(request)
        refused = self._refused(request, match.groupdict().get("name", ""))
        if refused is not None:
            return refused
        handler = getattr(self, f"_{route}")
        return handler(request, body, **match.groupdict())

    def _refused(self, request: httpx.Request, repository: str) -> httpx.Response | None:
        """The challenge for a request without valid credentials or token; None when it may pass."""
        sent = request.headers.get("authorization", "")
        if self.auth == "basic" and not self._basic_ok(sent):
            return error(401, "UNAUTHORIZED", headers={"WWW-Authenticate": 'Basic realm="fake"'})
        opens = self._tokens.get(sent.removeprefix("Bearer ")) if sent.startswith("Bearer ") else None
        if self.auth == "bearer" and (opens is None or (repository and repository not in opens)):
            realm = f"{request.url.scheme}://{request.url.netloc.decode()}/token"
            return error(401, "UNAUTHORIZED", headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'})
        return None

    def _basic_ok(self, sent: str) -> bool:
        if self.credentials is None:
            return self.auth != "basic" or sent.startswith("Basic ")
        user, password = self.credentials
        return sent == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _token(self, request: httpx.Request) -> httpx.Response:
        if self.credentials is not None and not self._basic_ok(request.headers.get("authorization", "")):
            return error(401, "UNAUTHORIZED", "token refused")
        asked = request.url.params.get_list("scope")
        self.scopes += asked
        self.token_requests.append(asked)
        token = f"token-{len(self._tokens) + 1}"
        self._tokens[token] = {scope.split(":")[1] for scope in asked[:self.scopes_per_token] if scope.count(":") == 2}
        return answer(200, document={"token": token, "expires_in": 300})

    # -- the API --------------------------------------------------------------------------

    def _ping(self, request: httpx.Request, body: bytes) -> httpx.Response:
        return answer(200, document={}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    def _catalog(self, request: httpx.Request, body: bytes) -> httpx.Response:
        return self._page(request, "repositories", sorted(self.repositories), {})

    def _tags(self, request: httpx.Request, body: bytes, name: str) -> httpx.Response:
        if name not in self.repositories:
            return error(404, "NAME_UNKNOWN", name)
        return self._page(request, "tags", sorted(self.tags.get(name, {})), {"name": name})

    def _page(self, request: httpx.Request, key: str, names: list[str], doc: dict) -> httpx.Response:
        """Names after ``last``, at most ``n`` (or page_size); a Link to the next page when more are left."""
        params = request.url.params
        size = min(int(params.get("n", self.page_size)), self.page_size)
        names = [n for n in names if n > params.get("last", "")]
        headers = {}
        if len(names) > size:
            headers["Link"] = f'<{request.url.path}?last={names[size - 1]}&n={size}>; rel="next"'
        return answer(200, document={**doc, key: names[:size]}, headers=headers)

    def _manifest(self, request: httpx.Request, body: bytes, name: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            return self._put_manifest(name, ref, body, request.headers.get("content-type", ""))
        if request.method not in ("GET", "HEAD"):
            return error(405, "UNSUPPORTED", request.method)
        digest = ref if ref.startswith("sha256:") else self.tags.get(name, {}).get(ref)
        if digest is None or not self.has(name, digest) or digest not in self.manifests:
            return error(404, "MANIFEST_UNKNOWN", f"{name}:{ref}")
        data, media_type = self.manifests[digest]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Content-Length": str(len(data))}
        return answer(200, b"" if request.method == "HEAD" else data, headers)

    def _put_manifest(self, name: str, ref: str, data: bytes, media_type: str) -> httpx.Response:
        digest = digest_of(data)
        if ref.startswith("sha256:") and ref != digest:
            return error(400, "DIGEST_INVALID", f"the body hashes to {digest}")
        try:
            document = json.loads(data)
            children = document.get("manifests", []) if media_type in INDEX_TYPES else (
                [document["config"], *document.get("layers", [])])
            missing = [c["digest"] for c in children if not self.has(name, c["digest"])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return error(400, "MANIFEST_INVALID", "not a manifest of its Content-Type")
        if missing:
            return error(400, "MANIFEST_BLOB_UNKNOWN", missing[0])
        self.add_manifest(name, data, media_type, None if ref.startswith("sha256:") else ref)
        return answer(201, headers={"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"})

    def _blob(self, request: httpx.Request, body: bytes, name: str, digest: str) -> httpx.Response:
        if request.method not in ("GET", "HEAD"):
            return error(405, "UNSUPPORTED", request.method)
        if not self.has(name, digest) or digest not in self.blobs:
            return error(404, "BLOB_UNKNOWN", digest)
        data = self.blobs[digest]
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        status, start, end = 200, 0, len(data)
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if wanted:
            start, end = int(wanted[1]), min(int(wanted[2]) + 1 if wanted[2] else len(data), len(data))
            if start >= len(data):
                return error(416, "RANGE_INVALID", headers={"Content-Range": f"bytes */{len(data)}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = str(end - start)
        return answer(status, b"" if request.method == "HEAD" else data[start:end], headers)

    def _upload(self, request: httpx.Request, body: bytes, name: str, session: str) -> httpx.Response:
        params = request.url.params
        if request.method == "POST" and not session:
            source, digest = params.get("from"), params.get("mount")
            if digest and source and self.has(source, digest) and digest in self.blobs:
                return self._stored(name, digest, self.blobs[digest])
            if params.get("digest"):  # monolithic: the whole blob in the POST
                return self._finish(name, bytearray(body), params["digest"])
            session = str(next(self._sessions))
            self.uploads[session] = (name, bytearray(body))
            return self._progress(name, session)
        if session not in self.uploads or self.uploads[session][0] != name:
            return error(404, "BLOB_UPLOAD_UNKNOWN", session)
        if request.method == "DELETE":
            del self.uploads[session]
            return answer(204)
        received = self.uploads[session][1]
        received += body
        if request.method == "PATCH":
            return self._progress(name, session)
        if request.method == "PUT" and params.get("digest"):
            del self.uploads[session]
            return self._finish(name, received, params["digest"])
        return error(400, "DIGEST_INVALID" if request.method == "PUT" else "UNSUPPORTED", "no digest")

    def _progress(self, name: str, session: str) -> httpx.Response:
        received = len(self.uploads[session][1])
        return answer(202, headers={"Location": f"/v2/{name}/blobs/uploads/{session}",
                                    "Range": f"0-{max(received - 1, 0)}", "Docker-Upload-UUID": session})

    def _finish(self, name: str, data: bytearray, digest: str) -> httpx.Response:
        if digest_of(bytes(data)) != digest:
            return error(400, "DIGEST_INVALID", f"the upload hashes to {digest_of(bytes(data))}")
        return self._stored(name, digest, bytes(data))

    def _stored(self, name: str, digest: str, data: bytes) -> httpx.Response:
        self.add_blob(name, data)
        return answer(201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


class Held(httpx.AsyncByteStream):
    """A body that sends its first MiB, then waits until ``go`` is set to send the rest."""

    def __init__(self, data: bytes):
        self.data, self.go = data, anyio.Event()

    async def __aiter__(self):
        yield self.data[:MIB]
        await self.go.wait()
        for start in range(MIB, len(self.data), MIB):
            yield self.data[start:start + MIB]


def by_host(registries: dict[str, httpx.AsyncBaseTransport]) -> httpx.MockTransport:
    """Several registries behind one injected transport, each answering for its host[:port]."""

    async def route(request: httpx.Request) -> httpx.Response:
        return await registries[request.url.netloc.decode()].handle_async_request(request)

    return httpx.MockTransport(route)
