"""How a registry request reaches the wire: wire.py's direct connections (or an injected transport, the
tests' fake registry), or the environment's proxies through httpx's client; and the TLS context of both.

With no proxy to route to, a request skips httpx's client: its auth and redirect flows, a stream wrapper
and a urllib request built from every answer for the cookie jar took a third of a small request's CPU, on
the one event loop. The client's default headers and its cookies (a load balancer's, to keep a client on
one node) are put on by hand, as it would. Every request asks for identity: nothing comes back encoded.
"""

from __future__ import annotations

import functools
import http.cookiejar
import ipaddress
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from ..errors import UsageError
from .settings import RegistrySettings
from .wire import WireTransport

IDENTITY = {"accept-encoding": "identity"}  # on every request: nothing compressed comes back to decode


class Sender:
    """Builds and sends the requests of one registry host, ``connections`` at most at once."""

    def __init__(self, settings: RegistrySettings, connections: int,
                 http_transport: httpx.AsyncBaseTransport | None = None):
        direct = http_transport or WireTransport(tls_context(settings, alpn=("http/1.1",)), max_idle=connections)
        mounts = {} if http_transport else _proxy_mounts(settings, connections)
        self._http = httpx.AsyncClient(
            transport=direct,
            mounts=mounts,
            # The transport's windows do the queueing, so no pool timeout; a frozen peer fails the attempt.
            timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0), pool=None),
            trust_env=False,  # the environment's proxies are the mounts above
            cookies=_CookieJar(),
            follow_redirects=False,
        )
        self._direct = None if mounts else direct  # None: through the client, which routes to the proxies
        self._defaults = {name.lower(): value for name, value in self._http.headers.items()}  # User-Agent...
        self._timeouts = self._http.timeout.as_dict()

    async def aclose(self) -> None:
        await self._http.aclose()

    def build(self, method: str, url: httpx.URL, headers: dict[str, str], content: Any) -> httpx.Request:
        """The request as the client would build it: its default headers, ours, identity, its cookies."""
        if self._direct is None:
            return self._http.build_request(method, url, headers={**headers, **IDENTITY}, content=content)
        sent = {**self._defaults, **{name.lower(): value for name, value in headers.items()}, **IDENTITY}
        request = httpx.Request(method, url, headers=sent, content=content, extensions={"timeout": self._timeouts})
        cookies = self._http.cookies
        if cookies:
            cookies.set_cookie_header(request)
        return request

    def build_plain(self, method: str, url: str, headers: dict[str, str] | None, params: Any,
                    data: dict[str, str] | None) -> httpx.Request:
        """A request outside the registry's API (the token endpoint), built by the client."""
        return self._http.build_request(method, url, headers={**(headers or {}), **IDENTITY}, params=params,
                                        data=data)

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` as it is, its body streamed: straight to the direct transport where no proxy is
        configured, else through the client."""
        if self._direct is None:
            return await self._http.send(request, stream=True)
        response = await self._direct.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            self._http.cookies.extract_cookies(response)
        return response


class _CookieJar(http.cookiejar.CookieJar):
    """httpx's cookie handling, skipped for answers that set no cookie (nearly all): for each answer
    httpx builds urllib's view of it, its headers copied into an email message, ~20-40 us a request."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        answer = getattr(response, "response", None)  # the httpx.Response that httpx's wrapper holds
        if answer is None or "set-cookie" in answer.headers or "set-cookie2" in answer.headers:
            super().extract_cookies(response, request)



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


