"""The transport under the registry API: one host, every request's plumbing.

Concurrency limit (a streamed body holds its slot until closed), the auth
round trip (401 -> token or basic, once refreshed), redirects followed by
hand so Authorization never leaves the registry, transient trouble
(connection errors, timeouts, 5xx, 429) retried with capped exponential
backoff and Retry-After, TLS and auth refusals ended at once in AuthError
(exit 3); what an answer says, and the error it becomes, is answers.py's,
and how a request reaches the wire sender.py's. Every request asks for
identity and no answer is decoded; a body read whole is capped
(docs/architecture.md, "What a registry may send").
"""

from __future__ import annotations

import itertools
import random
import ssl
import time
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, TypeVar, Union

import anyio
import httpx

from ..errors import (
    AuthError, MirrorError, RegistryError, Unreachable, UsageError,
)
from ..model.numbers import ascii_int
from ..model.reference import endpoint_host
from . import answers
from .auth import Authenticator
from .credentials import AuthFiles
from .sender import Sender
from .settings import Credentials, RegistrySettings, windows
from .window import Window
from .wire import NEW_CONNECTION, MalformedAnswer

MAX_ANSWER = 1 << 20  # a body read whole (token, /v2/, upload and manifest PUT answers): refused past this
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles per attempt, with jitter
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0
MAX_REDIRECTS = 5
MAX_DRAINED = 4096  # bytes of an unwanted answer's declared body read to keep its connection (``discard``)
_REDIRECTS = (301, 302, 303, 307, 308)

T = TypeVar("T")
Content = Union[bytes, Callable[[], AsyncIterator[bytes]], None]


class Transient(Exception):
    """A failure worth another attempt: connection trouble, timeout, 5xx or 429."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


class Stalled(Exception):
    """A body arriving slower than the settings' min_rate: cut, and retried like a dropped connection."""


class RateGuard:
    """Watches one body: fails it when fewer than ``min_rate`` bytes/s arrive over ``window`` seconds.

    A source that drips a byte every few seconds never trips the idle
    timeout and would hold a transfer (and a work dir) for ever.
    """

    def __init__(self, settings: RegistrySettings):
        self.min_rate, self.window = settings.min_rate, settings.rate_window
        self._total = 0
        self._marks: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def feed(self, size: int) -> None:
        if self.min_rate <= 0:
            return
        now = time.monotonic()
        self._total += size
        if now - self._marks[-1][0] >= 1.0:  # a mark a second at most: memory stays ~window entries
            self._marks.append((now, self._total))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window:
            self._marks.popleft()  # keep one mark at least a window old
        since, then = self._marks[0]
        if now - since >= self.window and self._total - then < self.min_rate * (now - since):
            raise Stalled(f"under {self.min_rate} bytes/s for {now - since:.0f} s")


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives back its concurrency slot when closed."""

    def __init__(self, inner: Any, release: Callable[[], None]):
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._release:
                self._release, release = None, self._release
                release()


class Transport:
    """Requests to one registry host. ``backoff_base`` overrides BACKOFF_BASE (tests use a tiny one)."""

    def __init__(self, host: str, settings: RegistrySettings, *, auth_files: AuthFiles | None = None,
                 backoff_base: float | None = None, http_transport: httpx.AsyncBaseTransport | None = None):
        self.host = host
        self.settings = settings
        scheme = "http" if settings.plain_http else "https"
        self.base_url = httpx.URL(f"{scheme}://{endpoint_host(host)}")
        self._origin = str(self.base_url).rstrip("/")  # what url() puts before a path
        self._backoff_base = BACKOFF_BASE if backoff_base is None else backoff_base
        self._unreachable: RegistryError | None = None  # set once retries ran out on connection errors
        # Blob bodies, small blobs and small requests (manifests, HEADs, tokens, upload sessions) queue
        # apart: over a long link, resolving hundreds of images must not wait behind their downloads, nor a
        # small blob behind large ones. Each window grows from its start while the registry answers as fast
        # as it did (window.py).
        (transfers_start, transfers), (small_start, small), (calls_start, calls) = windows(settings.max_connections)
        self._transfers, self._small_blobs = Window(transfers, transfers_start), Window(small, small_start)
        self._calls = Window(calls, calls_start)
        # wire.py's connections or the environment's proxies (sender.py); ``http_transport``: the tests' fake
        self._sender = Sender(settings, transfers + small + calls, http_transport)

        def credentials() -> Credentials | None:
            return settings.credentials or (auth_files or AuthFiles()).lookup(host)

        self._auth = Authenticator(host, credentials, self._send_plain)

    async def aclose(self) -> None:
        await self._sender.aclose()

    def transfer_room(self, small: bool = False) -> bool:
        """A blob transfer (``small``: a small blob's, held whole in memory) would start now, not wait."""
        return (self._small_blobs if small else self._transfers).room

    def expect(self, scopes: Iterable[str]) -> None:
        """Scopes the run will need, for tokens that open several at once (auth.py ``expect``)."""
        self._auth.expect(scopes)

    def url(self, path: str) -> httpx.URL:
        """``path`` on this registry. A path from the root is put after the origin and parsed once:
        ``join`` parses three times (httpx checks every character each time), a cost per request."""
        if path.startswith("/") and not path.startswith("//"):
            return httpx.URL(self._origin + path)
        return self.base_url.join(path)

    def location(self, response: httpx.Response, what: str) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: {self.host} answered {response.status_code} without a Location header",
                                response.status_code)
        return self.resolve(response, location, what)

    def resolve(self, response: httpx.Response, target: str, what: str) -> httpx.URL:
        return answers.resolve(response, target, what)

    def content_length(self, response: httpx.Response, what: str) -> int | None:
        return answers.content_length(self.host, response, what)

    async def discard(self, response: httpx.Response) -> None:
        """Close an answer whose body is not wanted. One declaring a short body (MAX_DRAINED bytes at
        most) is read to its end first: its connection then serves the next request, where closing it
        would cost a new one (referrers are asked per manifest, and distribution 2.8 answers 404 each)."""
        try:
            length = ascii_int(response.headers.get("content-length", ""))
            if length is not None and length <= MAX_DRAINED and not response.is_stream_consumed:
                guard = RateGuard(self.settings)
                async for chunk in response.aiter_raw():
                    guard.feed(len(chunk))
        except (httpx.TransportError, httpx.StreamError, ssl.SSLError, Stalled):
            pass  # the connection is closed below, as it would have been
        finally:
            await response.aclose()

    def same_origin(self, url: httpx.URL) -> bool:
        base = self.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    async def request(self, method: str, url: httpx.URL | str, *, scopes: Iterable[str] = (),
                      headers: dict[str, str] | None = None, content: Content = None,
                      stream: bool = False, follow: bool = False, retry: bool = True,
                      small_blob: bool = False, what: str) -> httpx.Response:
        """Send with registry auth; a ``url`` given as a path is on this registry.

        Transient failures are retried (or, with ``retry=False``, raised as
        Transient for an enclosing ``retrying``); 401/403 end in AuthError;
        any other answer is the caller's to judge. ``small_blob``: a GET of
        a small blob, in the small blobs' window.
        """
        scopes = list(scopes)
        target = self.url(url) if isinstance(url, str) else url

        async def attempt() -> httpx.Response:
            return await self.authorized(method, target, scopes, headers or {}, content, stream=stream,
                                         follow=follow, small_blob=small_blob, what=what)

        return await (self.retrying(attempt, what) if retry else attempt())

    async def retrying(self, attempt: Callable[[], Awaitable[T]], what: str, retries: int | None = None) -> T:
        retries = self.settings.retries if retries is None else retries
        if self._unreachable is not None:
            # One request already spent its retries on connection errors: don't make every
            # other request (hundreds, for a Rancher list) wait through the same backoff.
            raise Unreachable(f"{what}: {self._unreachable}", self.host)
        started = time.monotonic()
        for number in itertools.count():
            try:
                return await attempt()
            except Transient as exc:
                # A peer that accepts nothing or answers nothing fails within give_up_after, not
                # after retries x timeout; a registry that says when to come back is waited for.
                late = exc.status is None and time.monotonic() - started >= self.settings.give_up_after
                if number >= retries or late:
                    message = (f"{what}: {self.host} {exc.reason}, {number + 1} attempt(s); "
                               "check that the registry is up and reachable, then run again")
                    if exc.status is not None:
                        raise RegistryError(message, exc.status) from exc
                    self._unreachable = Unreachable(f"{self.host} {exc.reason}", self.host)
                    raise Unreachable(message, self.host) from exc
                await anyio.sleep(self.delay(number, exc.retry_after))
        raise AssertionError("unreachable")

    def delay(self, number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP)
        return min(BACKOFF_CAP, self._backoff_base * 2 ** number) * random.uniform(0.5, 1.0)

    async def authorized(self, method: str, url: httpx.URL, scopes: list[str], headers: dict[str, str],
                          content: Content, *, stream: bool, follow: bool, what: str,
                          small_blob: bool = False) -> httpx.Response:
        """``_exchange`` with this registry's credentials, which go only to its origin (scheme, host,
        port: the one whose challenge they answer); a Link page or upload Location elsewhere is
        asked without them, as Docker and containerd do."""
        refreshed = False
        while True:
            authorization = await self._auth.authorization(scopes) if self.same_origin(url) else None
            sent = dict(headers)
            if authorization:
                sent["Authorization"] = authorization
            response = await self._exchange(method, url, sent, content, stream=stream, follow=follow,
                                            small_blob=small_blob, what=what)
            status = response.status_code
            if status in (401, 403) and self.same_origin(response.url):
                await response.aclose()
                if status == 403:
                    raise AuthError(f"{self.host} denied access to {', '.join(scopes) or '/v2/'} (403); "
                                    "the account lacks permission for it")
                self._auth.unauthorized(response, scopes, sent=authorization, refreshed=refreshed)
                refreshed = refreshed or authorization is not None
                continue
            if status == 429 or status >= 500:
                body = await answers.error_body(response)
                full = answers.storage_full(self.host, response, body, what)
                if full is not None:  # no retry: its disk stays full, for every image
                    raise full
                detail = answers.error_detail(response, body)
                raise Transient(f"answered {status}{detail}", answers.retry_after(response.headers.get("retry-after")),
                                status)
            return response

    async def _exchange(self, method: str, url: httpx.URL, headers: dict[str, str], content: Content, *,
                        stream: bool, follow: bool, what: str, small_blob: bool = False) -> httpx.Response:
        """One request, following redirects by hand so Authorization never leaves the registry."""
        window = self._calls  # kept across redirects
        if _moves_a_blob(method, url):
            window = self._small_blobs if small_blob else self._transfers
        raw = method in ("GET", "HEAD") and _names_a_blob(url)  # a blob as sent, wherever it is redirected
        for _ in range(MAX_REDIRECTS + 1):
            body = content() if callable(content) else content
            request = self._sender.build(method, url, headers, body)
            response = await self._send_limited(request, stream, window, what, raw=raw)
            if not (follow and response.status_code in _REDIRECTS and response.headers.get("location")):
                return response
            await response.aclose()
            url = self.resolve(response, response.headers["location"], what)
            if not self.same_origin(url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host} redirected {method} {url.path} more than {MAX_REDIRECTS} times")

    async def _send_limited(self, request: httpx.Request, stream: bool, window: Window,
                            what: str, *, raw: bool = False) -> httpx.Response:
        """Send within one of this registry's windows; a streamed body holds its place until closed.

        The window hears how long the answer's head took (or that it was 429 or 503).
        Nothing is ever decoded (docs/architecture.md, "What a registry may send"): an answer
        with a Content-Encoding is refused unless ``raw`` (a blob's bytes, judged by their
        digest, read with ``aiter_raw``). A body not streamed is read here, up to MAX_ANSWER.
        """
        ticket = await window.acquire()
        try:
            sent = time.monotonic()
            response = await self._sender.send(request)
        except (httpx.TransportError, ssl.SSLError) as exc:  # TLS 1.3 alerts arrive unwrapped, on read
            window.release()
            raise _transport_failure(exc, request) from exc
        except BaseException:
            window.release()
            raise
        if response.status_code in (429, 503):
            window.overloaded(ticket)
        else:
            # A new connection's handshakes are not the registry's answer time (wire.py says; None elsewhere).
            window.answered(ticket, None if response.extensions.get(NEW_CONNECTION) else time.monotonic() - sent)
        response.stream = _ReleasingStream(response.stream, window.release)
        try:
            encoding = answers.content_encoding(response)
            if encoding and not raw:
                raise RegistryError(f"{what}: {request.url.netloc.decode()} answered with Content-Encoding "
                                    f"{encoding[:40]!r} though mirror asks for identity; a compressed answer can "
                                    "expand without bound, so it was not read", response.status_code)
            if not stream:
                await _read_whole(response, what)
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _send_plain(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                          params: Any = None, data: dict[str, str] | None = None) -> httpx.Response:
        """A request outside the registry's auth (the token endpoint), with retries."""

        what = f"token request for {self.host}"

        async def attempt() -> httpx.Response:
            request = self._sender.build_plain(method, url, headers, params, data)
            response = await self._send_limited(request, False, self._calls, what)
            if response.status_code == 429 or response.status_code >= 500:
                raise Transient(f"token endpoint answered {response.status_code}",
                                 answers.retry_after(response.headers.get("retry-after")), response.status_code)
            return response

        return await self.retrying(attempt, what)

    def plain_http_refused(self, response: httpx.Response, body: bytes) -> UsageError | None:
        return answers.plain_http_refused(self.host, response, body, self.settings.plain_http)

    async def failure(self, response: httpx.Response, what: str) -> MirrorError:
        """The error for an answer we cannot use, with the registry's own error code."""
        return await answers.failure(self.host, response, what, self.settings.plain_http)


def _moves_a_blob(method: str, url: httpx.URL) -> bool:
    """A blob's body down (GET) or up (PATCH, the upload's closing PUT): a transfer, not a call."""
    return ((method == "GET" and _names_a_blob(url))
            or (method in ("PATCH", "PUT") and "/blobs/uploads/" in url.path))


def _names_a_blob(url: httpx.URL) -> bool:
    return "/blobs/sha256:" in url.path


async def read_capped(transport: Transport, response: httpx.Response, what: str, limit: int,
                      too_large: MirrorError) -> bytes:
    """A streamed body read whole, refused (``too_large``) past ``limit`` before it is read, or as
    soon as it gets there; a connection lost or too slow on the way is a RegistryError."""
    declared = transport.content_length(response, what)
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    guard = RateGuard(transport.settings)
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise too_large
            guard.feed(len(chunk))
    except (httpx.TransportError, Stalled) as exc:
        raise RegistryError(f"{what}: the connection failed mid-transfer ({describe(exc)})") from exc
    return bytes(body)


class _Capped(httpx.AsyncByteStream):
    """A body that fails once it passes ``limit`` bytes."""

    def __init__(self, inner: Any, limit: int, too_large: Callable[[], Exception]):
        self._inner, self._limit, self._too_large = inner, limit, too_large

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._inner:
            received += len(chunk)
            if received > self._limit:
                raise self._too_large()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _read_whole(response: httpx.Response, what: str) -> None:
    """Read a body not streamed (``response.content`` after), refused past MAX_ANSWER."""
    def too_large() -> RegistryError:
        return RegistryError(f"{what}: {response.url.netloc.decode()} answered with more than {MAX_ANSWER} "
                             "bytes; no answer of this kind is that large, so it was not read", response.status_code)

    response.stream = _Capped(response.stream, MAX_ANSWER, too_large)
    try:
        await response.aread()
    except (httpx.TransportError, ssl.SSLError) as exc:
        raise _transport_failure(exc, response.request) from exc


def _transport_failure(exc: Exception, request: httpx.Request) -> Exception:
    """TLS refusals are final (AuthError), so is an answer that breaks HTTP (RegistryError); anything
    else is worth retrying."""
    host = request.url.netloc.decode()
    if isinstance(exc, MalformedAnswer):
        return RegistryError(f"{host} answered {request.method} {request.url.path} outside HTTP/1.1: {exc}")
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return AuthError(f"TLS certificate of {host} could not be verified ({cause.verify_message}); "
                         "pass --ca-file with the CA that signed it (or --insecure to skip verification)")
    if isinstance(cause, ssl.SSLError):
        return AuthError(f"TLS handshake with {host} failed ({cause.reason or cause}); if it serves "
                         "plain HTTP use --plain-http, if it wants a client certificate pass one")
    return Transient(f"could not be reached ({describe(exc)})")


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


