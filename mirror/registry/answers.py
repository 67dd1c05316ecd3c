"""Reading a registry's answers: what an answer says, and the error it becomes.

The judgments that need no connection: the length an answer declares, where
its Location or Link points, the Content-Encoding it names (mirror asks for
identity and decodes nothing), the registry's own error JSON quoted short on
one line, a disk-full 5xx told apart from a transient one, and Retry-After
(docs/architecture.md, "What a registry may send").
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
from datetime import datetime, timezone
from typing import Any

import httpx

from ..errors import IntegrityError, MirrorError, NotFoundError, RegistryError, StorageFull, UsageError
from ..model.numbers import ascii_int

MAX_ERROR_BODY = 64 << 10  # of an error answer, read for its message; the rest is left unread
MAX_DETAIL = 300  # characters of a registry's error message quoted in ours
_ABSOLUTE = re.compile(r"https?://[^/?#]", re.IGNORECASE)  # a URL with its own scheme and host


def content_length(host: str, response: httpx.Response, what: str) -> int | None:
    """The length an answer declares; None when it declares none, RegistryError when it is no number."""
    declared = response.headers.get("content-length")
    if declared is None:
        return None
    length = ascii_int(declared)
    if length is None:
        raise RegistryError(f"{what}: {host} declared Content-Length {declared[:40]!r}, which is no length",
                            response.status_code)
    return length


def resolve(response: httpx.Response, target: str, what: str) -> httpx.URL:
    """A Location or Link target, against the answer that named it: an http(s) URL with a host.

    It may be on another origin; the transport sends no credentials there.
    """
    target = target.strip()
    try:
        # An absolute target (an upload's Location, long with its state) is parsed once, not joined.
        url: httpx.URL | None = httpx.URL(target) if _ABSOLUTE.match(target) else response.url.join(target)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise RegistryError(f"{what}: {response.url.netloc.decode()} pointed to {target[:100]!r}, which is no "
                            "http(s) URL", response.status_code)
    return url


def plain_http_refused(host: str, response: httpx.Response, body: bytes, plain_http: bool) -> UsageError | None:
    """A TLS port answering our plain HTTP (Go's servers say "HTTP request to an HTTPS server")."""
    if response.status_code == 400 and plain_http and b"HTTPS" in body:
        return UsageError(f"{host} speaks TLS, not plain HTTP: drop the plain-HTTP option for it "
                          "(and pass --ca-file if a private CA signed its certificate)")
    return None


async def failure(host: str, response: httpx.Response, what: str, plain_http: bool) -> MirrorError:
    """The error for an answer we cannot use, with the registry's own error code."""
    body = await error_body(response)
    status = response.status_code
    refused = plain_http_refused(host, response, body, plain_http)
    if refused:
        return refused
    detail = error_detail(response, body)
    if status == 404:
        return NotFoundError(f"{what} not found on {host}{detail}", status)
    if status == 400 and any(code in detail for code in ("DIGEST_INVALID", "SIZE_INVALID")):
        return IntegrityError(f"{what}: {host} refused the content as not matching its digest{detail}")
    return RegistryError(f"{what}: {host} answered {status}{detail}", status)


def content_encoding(response: httpx.Response) -> str | None:
    """The Content-Encoding an answer names, None for none (or identity): mirror asks for identity."""
    encoding = response.headers.get("content-encoding", "").strip()
    return encoding if encoding and encoding.lower() != "identity" else None



async def error_body(response: httpx.Response) -> bytes:
    """At most MAX_ERROR_BODY bytes of an answer we will not use, as sent; the answer is closed after."""
    try:
        return response.content[:MAX_ERROR_BODY]  # read whole already, within MAX_ANSWER
    except httpx.ResponseNotRead:
        pass
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except (httpx.TransportError, httpx.StreamError, ssl.SSLError):
        pass  # the status says enough
    finally:
        await response.aclose()
    return bytes(body[:MAX_ERROR_BODY])



def error_detail(response: httpx.Response, body: bytes) -> str:
    """`` (CODE: message)`` from the registry's error JSON, when it sent one, on one line and short."""
    error = _first_error(response, body)
    if error is None:
        return ""
    try:
        text = f"{error.get('code', '?')}: {error.get('message', '')}"
    except AttributeError:
        return ""
    return f" ({_printable(text)})"


def _first_error(response: httpx.Response, body: bytes) -> Any:
    """The first entry of a registry's ``{"errors": [...]}`` answer, whatever its shape; None without one."""
    if content_encoding(response):
        return None
    try:
        return json.loads(body)["errors"][0]
    except (ValueError, RecursionError, KeyError, IndexError, TypeError):
        return None


def _printable(text: str) -> str:
    """A peer's words on one line of ours, and short."""
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_DETAIL])


_NO_SPACE = ("no space left on device", "disk quota exceeded")  # how Go words ENOSPC and EDQUOT ...
_NO_SPACE_ERRNOS = (28, 122)  # ... and their numbers on Linux, in distribution's {"Enclosed": {"Err": N}}
_STORAGE_TREE = "/docker/registry/v2/"  # where distribution's filesystem driver keeps everything under its root


def storage_full(host: str, response: httpx.Response, body: bytes, what: str) -> StorageFull | None:
    """A 5xx saying the registry's own disk is full, as distribution words it: its error's ``detail`` is
    the driver's error, either text ("write PATH: no space left on device") or ``{"Enclosed": {"Op",
    "Path", "Err": 28}}``. ``where`` is the storage root the path is under, as the registry names it."""
    error = _first_error(response, body)
    detail = error.get("detail") if isinstance(error, dict) else None
    enclosed = detail.get("Enclosed") if isinstance(detail, dict) else None
    if isinstance(enclosed, dict) and type(enclosed.get("Err")) is int and enclosed["Err"] in _NO_SPACE_ERRNOS:
        path = enclosed.get("Path")
    elif isinstance(detail, str) and any(words in detail.lower() for words in _NO_SPACE):
        path = next((word.rstrip(":") for word in detail.split() if word.startswith("/")), None)
    else:
        return None
    where = _printable(path.split(_STORAGE_TREE)[0]) if isinstance(path, str) and path else None
    return StorageFull(f"{what}: registry storage full: {host} answered {response.status_code}, no space left on "
                       f"its disk{f' (under {where})' if where else ''}", response.status_code, host, where)


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None (the usual backoff) if neither."""
    if not value:
        return None
    seconds = ascii_int(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year of twenty digits
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
