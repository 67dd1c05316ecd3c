"""The transport under the registry API: one host, every request's plumbing.

Concurrency limit (a streamed body holds its slot until closed), the auth
round trip (401 -> token or basic, once refreshed), redirects followed by
hand so Authorization never leaves the registry, transient trouble
(connection errors, timeouts, 5xx, 429) retried with capped exponential
backoff and Retry-After, TLS and auth refusals ended at once in AuthError
(exit 3); what an answer says, and the error it becomes, is answers.py's.
Every request asks for identity and no answer is decoded; a body read whole
is capped (docs/architecture.md, "What a registry may send").
"""

from __future__ import annotations

import functools
import http.cookiejar
import ipaddress
import itertools
import random
import ssl
import time
import urllib.request
from collections import deque
from pathlib import Path
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
from .settings import Credentials, RegistrySettings, calls_window, transfers_window
from .window import Window
from .wire import NEW_CONNECTION, MalformedAnswer, WireTransport

MAX_ANSWER = 1 << 20  # a body read whole (token, /v2/, upload and manifest PUT answers): refused past this
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles per attempt, with jitter
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0
MAX_REDIRECTS = 5
MAX_DRAINED = 4096  # bytes of an unwanted answer's declared body read to keep its connection (``discard``)
IDENTITY = {"accept-encoding": "identity"}  # on every request: nothing compressed comes back to decode
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


class _CookieJar(http.cookiejar.CookieJar):
    """httpx's cookie handling, skipped for answers that set no cookie (nearly all): for each answer
    httpx builds urllib's view of it, its headers copied into an email message, ~20-40 us a request."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        answer = getattr(response, "response", None)  # the httpx.Response that httpx's wrapper holds
        if answer is None or "set-cookie" in answer.headers or "set-cookie2" in answer.headers:
            super().extract_cookies(response, request)


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
        # Blob bodies and small requests (manifests, HEADs, tokens, upload sessions) queue apart:
        # over a long link, resolving hundreds of images must not wait behind their downloads.
        # Each window grows from its start while the registry answers as fast as it did (window.py).
        (transfers_start, transfers), (calls_start, calls) = (transfers_window(settings.max_connections),
                                                              calls_window(settings.max_connections))
        self._transfers, self._calls = Window(transfers, transfers_start), Window(calls, calls_start)
        # Direct connections go through wire.py (or ``http_transport``, injected: the tests' fake registry).
        direct = http_transport or WireTransport(tls_context(settings, alpn=("http/1.1",)), max_idle=transfers + calls)
        mounts = {} if http_transport else _proxy_mounts(settings, transfers + calls)
        self._http = httpx.AsyncClient(
            transport=direct,
            mounts=mounts,
            # The limiters do the queueing, so no pool timeout; a frozen peer fails the attempt.
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0), pool=None),
            trust_env=False,  # the environment's proxies are the mounts above
            cookies=_CookieJar(),
            follow_redirects=False,
        )
        # With no proxy to route to, registry requests skip the client (``_build``, ``_send``); token
        # requests, rare, keep it.
        self._direct = None if mounts else direct
        self._defaults = {name.lower(): value for name, value in self._http.headers.items()}  # User-Agent...
        self._timeouts = self._http.timeout.as_dict()

        def credentials() -> Credentials | None:
            return settings.credentials or (auth_files or AuthFiles()).lookup(host)

        self._auth = Authenticator(host, credentials, self._send_plain)

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def transfer_room(self) -> bool:
        """A blob transfer would start now, not wait for another to end."""
        return self._transfers.room

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
                      what: str) -> httpx.Response:
        """Send with registry auth; a ``url`` given as a path is on this registry.

        Transient failures are retried (or, with ``retry=False``, raised as
        Transient for an enclosing ``retrying``); 401/403 end in AuthError;
        any other answer is the caller's to judge.
        """
        scopes = list(scopes)
        target = self.url(url) if isinstance(url, str) else url

        async def attempt() -> httpx.Response:
            return await self.authorized(method, target, scopes, headers or {}, content, stream=stream,
                                         follow=follow, what=what)

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
                          content: Content, *, stream: bool, follow: bool, what: str) -> httpx.Response:
        """``_exchange`` with this registry's credentials, which go only to its origin (scheme, host,
        port: the one whose challenge they answer); a Link page or upload Location elsewhere is
        asked without them, as Docker and containerd do."""
        refreshed = False
        while True:
            authorization = await self._auth.authorization(scopes) if self.same_origin(url) else None
            sent = dict(headers)
            if authorization:
                sent["Authorization"] = authorization
            response = await self._exchange(method, url, sent, content, stream=stream, follow=follow, what=what)
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
                        stream: bool, follow: bool, what: str) -> httpx.Response:
        """One request, following redirects by hand so Authorization never leaves the registry."""
        window = self._transfers if _moves_a_blob(method, url) else self._calls  # kept across redirects
        raw = method in ("GET", "HEAD") and _names_a_blob(url)  # a blob as sent, wherever it is redirected
        for _ in range(MAX_REDIRECTS + 1):
            body = content() if callable(content) else content
            response = await self._send_limited(self._build(method, url, headers, body), stream, window, what, raw=raw)
            if not (follow and response.status_code in _REDIRECTS and response.headers.get("location")):
                return response
            await response.aclose()
            url = self.resolve(response, response.headers["location"], what)
            if not self.same_origin(url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host} redirected {method} {url.path} more than {MAX_REDIRECTS} times")

    def _build(self, method: str, url: httpx.URL, headers: dict[str, str], content: Any) -> httpx.Request:
        """The request as the client would build it: its default headers, ours, identity, its cookies."""
        if self._direct is None:
            return self._http.build_request(method, url, headers={**headers, **IDENTITY}, content=content)
        sent = {**self._defaults, **{name.lower(): value for name, value in headers.items()}, **IDENTITY}
        request = httpx.Request(method, url, headers=sent, content=content, extensions={"timeout": self._timeouts})
        cookies = self._http.cookies
        if cookies:  # set by a registry's load balancer, to keep a client on one node
            cookies.set_cookie_header(request)
        return request

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` as it is. Straight to the direct transport when no proxy is configured:
        httpx's client around it (auth and redirect flows, a stream wrapper, a urllib request built
        for the cookie jar from every answer) took a third of a small request's CPU and more of a
        blob's, on the one event loop. Through the client, whose mounts route to proxies, otherwise."""
        if self._direct is None:
            return await self._http.send(request, stream=True)
        response = await self._direct.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            self._http.cookies.extract_cookies(response)
        return response

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
            response = await self._send(request)
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
            request = self._http.build_request(method, url, headers={**(headers or {}), **IDENTITY}, params=params,
                                               data=data)
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


def _proxy_mounts(settings: RegistrySettings, connections: int) -> dict[str, httpx.AsyncBaseTransport | None]:
    """The environment's proxies as the client's mounts: httpx's own transport for proxied requests.

    wire.py speaks only direct HTTP/1.1; a NO_PROXY host maps to None, the client's direct transport.
    """
    routes = proxy_routes()
    if not any(routes.values()):
        return {}  # no proxy: every request is direct
    context = tls_context(settings)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return {pattern: None if url is None else httpx.AsyncHTTPTransport(verify=context, limits=limits, proxy=url)
            for pattern, url in routes.items()}


def proxy_routes() -> dict[str, str | None]:
    """HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY as httpx mount patterns -> proxy URL (None: direct).

    The patterns are the ones httpx makes when it reads the environment itself (``trust_env``).
    """
    found = urllib.request.getproxies()
    routes: dict[str, str | None] = {f"{scheme}://": url if "://" in url else f"http://{url}"
                                     for scheme in ("http", "https", "all") if (url := found.get(scheme))}
    for name in (name.strip() for name in found.get("no", "").split(",")):
        if name == "*":
            return {}
        if name:
            routes[_no_proxy_pattern(name)] = None
    return routes


def _no_proxy_pattern(name: str) -> str:
    """A NO_PROXY entry as a mount pattern: a URL as given, an address or localhost exactly, else a domain suffix."""
    if "://" in name:
        return name
    try:
        address = ipaddress.ip_address(name.split("/")[0])
    except ValueError:
        return f"all://{name}" if name.lower() == "localhost" else f"all://*{name}"
    return f"all://[{name}]" if address.version == 6 else f"all://{name}"


def tls_context(settings: RegistrySettings, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """System CAs plus --ca-file; --insecure turns verification off; client cert for mTLS.

    ``alpn`` pins the protocols offered: wire.py's context offers http/1.1 alone, and is its own
    (httpcore sets ALPN on any context handed to it, so a shared one could come to offer h2).

    One context per distinct TLS setting in a process: loading the system CAs costs ~30 ms, once
    per registry client otherwise (a sync holds two, a pull one per source registry). A file's
    modification time is part of the key, so `sync serve` picks up a renewed CA or certificate.
    """
    files = (settings.ca_file, settings.client_cert, settings.client_key)
    return _tls_context(*files, settings.insecure, tuple(_modified(path) for path in files), alpn)


def _modified(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path else None
    except OSError:
        return None  # the load below names the file


@functools.lru_cache(maxsize=16)
def _tls_context(ca_file: Path | None, client_cert: Path | None, client_key: Path | None, insecure: bool,
                 versions: tuple[int | None, ...], alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(list(alpn))
    if ca_file:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca-file {ca_file}: not a readable PEM CA certificate ({exc})") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        try:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"client certificate {client_cert}: cannot load it with its key ({exc})") from None
    return context


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


