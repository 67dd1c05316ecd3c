"""Async client for the OCI distribution API, one registry host at a time.

Everything a pull, push or sync needs: manifests kept byte-for-byte, blobs
streamed in bounded memory (downloads resumable with Range requests), cross
repository mounts, chunked uploads. Transient trouble (connection errors,
timeouts, 5xx, 429) is retried with capped exponential backoff; auth and TLS
refusals are not, they end at once in AuthError (exit 3).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import itertools
import random
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, TypeVar, Union

import anyio
import httpx

from ..model import oci
from ..errors import AuthError, IntegrityError, MirrorError, NotFoundError, RegistryError, UsageError
from ..model.oci import Descriptor, Manifest, digest_hex
from ..model.reference import endpoint_host
from .auth import CATALOG_SCOPE, Authenticator, pull_scope, push_scope
from .credentials import AuthFiles
from .settings import Credentials, RegistrySettings

CHUNK_SIZE = 1 << 20
SMALL_UPLOAD = 16 << 20  # at most this: one PUT; above: PATCH then PUT
BACKOFF_BASE = 0.5  # seconds before the first retry; doubles per attempt, with jitter
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0
MAX_REDIRECTS = 5
CANCEL_TIMEOUT = 5.0
_REDIRECTS = (301, 302, 303, 307, 308)

T = TypeVar("T")
BlobSource = Union[bytes, Path, Callable[[], AsyncIterator[bytes]], AsyncIterator[bytes]]
Content = Union[bytes, Callable[[], AsyncIterator[bytes]], None]


class _Transient(Exception):
    """A failure worth another attempt: connection trouble, timeout, 5xx or 429."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


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


class RegistryClient:
    """One registry host. Use as ``async with RegistryClient(host, settings) as client:``.

    ``backoff_base`` overrides BACKOFF_BASE (tests use a tiny one).
    """

    def __init__(self, host: str, settings: RegistrySettings = RegistrySettings(), *,
                 auth_files: AuthFiles | None = None, backoff_base: float | None = None):
        self.host = host
        self.settings = settings
        scheme = "http" if settings.plain_http else "https"
        self.base_url = httpx.URL(f"{scheme}://{endpoint_host(host)}")
        self._backoff_base = BACKOFF_BASE if backoff_base is None else backoff_base
        self._unreachable: RegistryError | None = None  # set once retries ran out on connection errors
        self._limiter = anyio.CapacityLimiter(max(1, settings.max_connections))
        self._http = httpx.AsyncClient(
            verify=_tls_context(settings),
            timeout=httpx.Timeout(settings.timeout, pool=None),  # the limiter does the queueing
            limits=httpx.Limits(max_connections=settings.max_connections,
                                max_keepalive_connections=settings.max_connections),
            trust_env=True,
            follow_redirects=False,
        )

        def credentials() -> Credentials | None:
            return settings.credentials or (auth_files or AuthFiles()).lookup(host)

        self._auth = Authenticator(host, credentials, self._send_plain)

    async def __aenter__(self) -> "RegistryClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- operations ---------------------------------------------------------

    async def ping(self) -> None:
        """GET /v2/: the registry is there, speaks the API and accepts our credentials."""
        what = f"registry {self.host}"
        response = await self._request("GET", self._url("/v2/"), what=what)
        await response.aclose()
        if response.status_code != 200:
            raise RegistryError(f"{self.host} answered {response.status_code} at /v2/; is it a container "
                                "registry (OCI distribution API) at that address?", response.status_code)

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        what = f"manifest {_image(self.host, repository, reference)}"
        response = await self._request("GET", self._url(f"/v2/{repository}/manifests/{reference}"),
                                       scopes=[pull_scope(repository)],
                                       headers={"Accept": oci.ACCEPT}, what=what)
        if response.status_code != 200:
            raise await self._failure(response, what)
        try:
            manifest = Manifest.from_bytes(response.content, response.headers.get("content-type"))
        except MirrorError as exc:
            raise type(exc)(f"{what}: {exc}") from None
        if _is_digest(reference) and manifest.digest != reference:
            raise IntegrityError(f"{what}: the served bytes hash to {manifest.digest}; the registry "
                                 "or a proxy in between altered the manifest")
        served = response.headers.get("docker-content-digest", "")
        if served.startswith("sha256:") and served != manifest.digest:
            raise IntegrityError(f"{what}: the registry says its digest is {served} but the bytes "
                                 f"hash to {manifest.digest}; a proxy in between may alter content")
        return manifest

    async def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        what = f"manifest {_image(self.host, repository, reference)}"
        response = await self._request("HEAD", self._url(f"/v2/{repository}/manifests/{reference}"),
                                       scopes=[pull_scope(repository)],
                                       headers={"Accept": oci.ACCEPT}, what=what)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._failure(response, what)
        digest = response.headers.get("docker-content-digest", "")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        length = response.headers.get("content-length", "")
        if not digest.startswith("sha256:") or media_type not in oci.MANIFEST_TYPES or not length.isdigit():
            return (await self.get_manifest(repository, reference)).descriptor  # HEAD said too little
        return Descriptor(media_type, digest, int(length))

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob the registry has in ``repository``; None when absent."""
        what = f"blob {digest} in {self.host}/{repository}"
        response = await self._request("HEAD", self._url(f"/v2/{repository}/blobs/{digest}"),
                                       scopes=[pull_scope(repository)], follow=True, what=what)
        if response.status_code == 404:
            return None
        length = response.headers.get("content-length", "")
        if response.status_code != 200 or not length.isdigit():
            raise await self._failure(response, what)
        return int(length)

    async def download_blob(self, repository: str, digest: str, partial: Path, *,
                            progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``partial``, resuming from what it holds; verify its sha256.

        ``progress(n)`` gets the bytes as they arrive over the network (bytes
        already in ``partial`` are not reported). On a digest mismatch the
        partial file is deleted, so the next run downloads afresh.
        """
        digest_hex(digest)
        what = f"blob {digest} of {self.host}/{repository}"
        url = self._url(f"/v2/{repository}/blobs/{digest}")
        partial = Path(partial)
        hasher = hashlib.sha256()
        offset = await anyio.to_thread.run_sync(_hash_file, partial, hasher) if partial.exists() else 0
        for drops in itertools.count(1):
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            response = await self._request("GET", url, scopes=[pull_scope(repository)], headers=headers,
                                           stream=True, follow=True, what=what)
            try:
                status = response.status_code
                if status == 416 and offset:
                    break  # nothing after what we hold: the hash check below decides
                if status == 206 and offset and _range_start(response) == offset:
                    mode = "ab"
                elif status == 200:
                    mode, offset, hasher = "wb", 0, hashlib.sha256()
                else:
                    raise await self._failure(response, what)
                # Chunks as they arrive (so a drop loses nothing), written in ~1 MiB syscalls.
                with open(partial, mode, buffering=CHUNK_SIZE) as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
                        hasher.update(chunk)
                        offset += len(chunk)
                        if progress:
                            progress(len(chunk))
                break
            except httpx.TransportError as exc:
                if drops > self.settings.retries:
                    raise RegistryError(f"{what}: the connection kept failing mid-download ({_describe(exc)}); "
                                        "run again to resume from the partial file") from exc
                await anyio.sleep(self._delay(drops - 1, None))
            finally:
                await response.aclose()
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            partial.unlink(missing_ok=True)
            raise IntegrityError(f"{what}: the downloaded bytes hash to {actual}; the partial "
                                 "download was deleted, run again to fetch it afresh")

    @contextlib.asynccontextmanager
    async def open_blob(self, repository: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes as an async iterator of ~1 MiB chunks; the caller hashes them.

        The open stream holds one of this client's ``max_connections`` slots
        until the block exits: copying within one registry, use a separate
        client for the writes, or they can wait forever for a slot.
        """
        what = f"blob {digest} of {self.host}/{repository}"
        response = await self._request("GET", self._url(f"/v2/{repository}/blobs/{digest}"),
                                       scopes=[pull_scope(repository)],
                                       headers={"Accept-Encoding": "identity"},
                                       stream=True, follow=True, what=what)
        try:
            if response.status_code != 200:
                raise await self._failure(response, what)

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.aiter_bytes(CHUNK_SIZE):
                        yield chunk
                except httpx.TransportError as exc:
                    raise RegistryError(f"{what}: the connection failed mid-transfer ({_describe(exc)})") from exc

            yield chunks()
        finally:
            await response.aclose()

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another of its repositories; False if it would not."""
        what = f"mount of blob {digest} from {from_repository} into {self.host}/{repository}"
        url = self._url(f"/v2/{repository}/blobs/uploads/").copy_merge_params(
            {"mount": digest, "from": from_repository})
        response = await self._request("POST", url, what=what,
                                       scopes=[push_scope(repository), pull_scope(from_repository)])
        if response.status_code == 201:
            return True
        if response.status_code == 202:  # it started an ordinary upload instead
            if response.headers.get("location"):
                await self._cancel_upload(self._location(response, what), repository)
            return False
        raise await self._failure(response, what)

    async def upload_blob(self, repository: str, digest: str, size: int, source: BlobSource) -> None:
        """Upload a blob; retried as a whole on transient failures.

        A callable source is called once per attempt for a fresh iterator;
        whatever it raises cancels the upload and propagates unchanged. A bare
        async iterator cannot be replayed, so it gets one attempt only.
        """
        digest_hex(digest)
        what = f"upload of blob {digest} to {self.host}/{repository}"
        scopes = [push_scope(repository)]
        retries = None
        if not isinstance(source, (bytes, Path)) and not callable(source):
            stream, retries = source, 0
            source = lambda: stream  # noqa: E731

        async def attempt() -> None:
            response = await self._request("POST", self._url(f"/v2/{repository}/blobs/uploads/"),
                                           scopes=scopes, retry=False, what=what)
            if response.status_code != 202:
                raise await self._failure(response, what)
            location = self._location(response, what)
            try:
                await self._send_upload(location, digest, size, source, scopes, what)
            except BaseException:
                await self._cancel_upload(location, repository)
                raise

        await self._retrying(attempt, what, retries)

    async def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> None:
        """PUT the manifest's bytes exactly as given under a tag or its digest."""
        what = f"manifest {_image(self.host, repository, reference)}"
        if _is_digest(reference) and reference != manifest.digest:
            raise IntegrityError(f"{what}: the manifest's bytes hash to {manifest.digest}")
        response = await self._request("PUT", self._url(f"/v2/{repository}/manifests/{reference}"),
                                       scopes=[push_scope(repository)],
                                       headers={"Content-Type": manifest.media_type},
                                       content=manifest.data, what=what)
        if response.status_code not in (200, 201):
            raise await self._failure(response, what)
        served = response.headers.get("docker-content-digest")
        if served and served != manifest.digest:
            raise IntegrityError(f"{what}: the registry stored it as {served}, not {manifest.digest}; "
                                 "it must have altered the bytes")

    async def list_tags(self, repository: str) -> list[str]:
        """All tags (every page); [] when the repository does not exist."""
        try:
            return await self._paged(f"/v2/{repository}/tags/list", "tags", [pull_scope(repository)],
                                     f"tags of {self.host}/{repository}")
        except NotFoundError:
            return []

    async def catalog(self) -> list[str]:
        """Every repository the registry lists (every page)."""
        return await self._paged("/v2/_catalog", "repositories", [CATALOG_SCOPE],
                                 f"catalog of {self.host}")

    # -- upload steps -------------------------------------------------------

    async def _send_upload(self, location: httpx.URL, digest: str, size: int, source: BlobSource,
                           scopes: list[str], what: str) -> None:
        # Bodies go out in CHUNK_SIZE pieces: httpx sends one large bytes body about
        # twice as slowly (measured: 100 MiB, 0.52 s against 0.25 s on loopback).
        content: Content
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(source, bytes):
            data = source
            content = data if size <= CHUNK_SIZE else (lambda: _bytes_chunks(data))
        elif isinstance(source, Path):
            path = source
            content = lambda: _file_chunks(path)  # noqa: E731
        else:
            content = source
        # The size is always known: chunked framing would only cost h11 a copy of every piece.
        headers["Content-Length"] = str(size)
        if callable(content) and size > SMALL_UPLOAD:
            response = await self._request("PATCH", location, scopes=scopes, content=content, retry=False,
                                           headers=headers, what=what)
            if response.status_code != 202:
                raise await self._failure(response, what)
            location, content = self._location(response, what), b""
            headers = {"Content-Type": "application/octet-stream"}
        response = await self._request("PUT", location.copy_merge_params({"digest": digest}),
                                       scopes=scopes, content=content, retry=False, headers=headers, what=what)
        if response.status_code != 201:
            raise await self._failure(response, what)
        served = response.headers.get("docker-content-digest")
        if served and served != digest:
            raise IntegrityError(f"{what}: the registry stored the blob as {served}")

    async def _cancel_upload(self, location: httpx.URL, repository: str) -> None:
        """Best effort DELETE of an upload session; never raises, never hangs."""
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True):
            try:
                response = await self._authorized("DELETE", location, [push_scope(repository)], {}, None,
                                                  stream=False, follow=False)
                await response.aclose()
            except (MirrorError, _Transient):
                pass

    # -- plumbing -----------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        return self.base_url.join(path)

    def _location(self, response: httpx.Response, what: str) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: {self.host} answered {response.status_code} without a Location header",
                                response.status_code)
        return response.url.join(location)

    def _same_origin(self, url: httpx.URL) -> bool:
        base = self.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)

    async def _paged(self, path: str, key: str, scopes: list[str], what: str) -> list[str]:
        found: list[str] = []
        url: httpx.URL | None = self._url(path)
        seen: set[str] = set()
        while url is not None and str(url) not in seen:
            seen.add(str(url))
            response = await self._request("GET", url, scopes=scopes, what=what)
            if response.status_code != 200:
                raise await self._failure(response, what)
            try:
                found += list(response.json().get(key) or [])
            except (ValueError, AttributeError, TypeError):
                raise RegistryError(f"{what}: {self.host} answered with malformed JSON") from None
            url = _next_link(response)
        return found

    async def _request(self, method: str, url: httpx.URL, *, scopes: Iterable[str] = (),
                       headers: dict[str, str] | None = None, content: Content = None,
                       stream: bool = False, follow: bool = False, retry: bool = True,
                       what: str) -> httpx.Response:
        """Send with registry auth. Transient failures are retried (or, with
        ``retry=False``, raised as _Transient for an enclosing ``_retrying``);
        401/403 end in AuthError; any other answer is the caller's to judge."""
        scopes = list(scopes)

        async def attempt() -> httpx.Response:
            return await self._authorized(method, url, scopes, headers or {}, content, stream=stream,
                                          follow=follow)

        return await (self._retrying(attempt, what) if retry else attempt())

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], what: str, retries: int | None = None) -> T:
        retries = self.settings.retries if retries is None else retries
        if self._unreachable is not None:
            # One request already spent its retries on connection errors: don't make every
            # other request (hundreds, for a Rancher list) wait through the same backoff.
            raise RegistryError(f"{what}: {self._unreachable}", None)
        for number in itertools.count():
            try:
                return await attempt()
            except _Transient as exc:
                if number >= retries:
                    error = RegistryError(f"{what}: {self.host} {exc.reason}, {number + 1} attempt(s); "
                                          "check that the registry is up and reachable, then run again",
                                          exc.status)
                    if exc.status is None:
                        self._unreachable = RegistryError(f"{self.host} {exc.reason}", None)
                    raise error from exc
                await anyio.sleep(self._delay(number, exc.retry_after))
        raise AssertionError("unreachable")

    def _delay(self, number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP)
        return min(BACKOFF_CAP, self._backoff_base * 2 ** number) * random.uniform(0.5, 1.0)

    async def _authorized(self, method: str, url: httpx.URL, scopes: list[str], headers: dict[str, str],
                          content: Content, *, stream: bool, follow: bool) -> httpx.Response:
        refreshed = False
        while True:
            authorization = await self._auth.authorization(scopes)
            sent = dict(headers)
            if authorization:
                sent["Authorization"] = authorization
            response = await self._exchange(method, url, sent, content, stream=stream, follow=follow)
            status = response.status_code
            if status in (401, 403) and self._same_origin(response.url):
                await response.aclose()
                if status == 403:
                    raise AuthError(f"{self.host} denied access to {', '.join(scopes) or '/v2/'} (403); "
                                    "the account lacks permission for it")
                self._auth.unauthorized(response, scopes, sent=authorization, refreshed=refreshed)
                refreshed = refreshed or authorization is not None
                continue
            if status == 429 or status >= 500:
                if stream:
                    await response.aread()
                await response.aclose()
                raise _Transient(f"answered {status}{_error_detail(response)}",
                                 _retry_after(response.headers.get("retry-after")), status)
            return response

    async def _exchange(self, method: str, url: httpx.URL, headers: dict[str, str], content: Content, *,
                        stream: bool, follow: bool) -> httpx.Response:
        """One request, following redirects by hand so Authorization never leaves the registry."""
        for _ in range(MAX_REDIRECTS + 1):
            body = content() if callable(content) else content
            request = self._http.build_request(method, url, headers=headers, content=body)
            response = await self._send_limited(request, stream)
            if not (follow and response.status_code in _REDIRECTS and response.headers.get("location")):
                return response
            await response.aclose()
            url = response.url.join(response.headers["location"])
            if not self._same_origin(url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host} redirected {method} {url.path} more than {MAX_REDIRECTS} times")

    async def _send_limited(self, request: httpx.Request, stream: bool) -> httpx.Response:
        """Send within this registry's concurrency limit; a streamed body holds its slot until closed."""
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)

        def release() -> None:
            self._limiter.release_on_behalf_of(borrower)

        try:
            response = await self._http.send(request, stream=stream)
        except (httpx.TransportError, ssl.SSLError) as exc:  # TLS 1.3 alerts arrive unwrapped, on read
            release()
            raise _transport_failure(exc, request) from exc
        except BaseException:
            release()
            raise
        if stream:
            response.stream = _ReleasingStream(response.stream, release)
        else:
            release()
        return response

    async def _send_plain(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                          params: Any = None, data: dict[str, str] | None = None) -> httpx.Response:
        """A request outside the registry's auth (the token endpoint), with retries."""

        async def attempt() -> httpx.Response:
            request = self._http.build_request(method, url, headers=headers, params=params, data=data)
            response = await self._send_limited(request, stream=False)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(f"token endpoint answered {response.status_code}",
                                 _retry_after(response.headers.get("retry-after")), response.status_code)
            return response

        return await self._retrying(attempt, f"token request for {self.host}")

    async def _failure(self, response: httpx.Response, what: str) -> MirrorError:
        """The error for an answer we cannot use, with the registry's own error code."""
        try:
            await response.aread()
        except httpx.TransportError:
            pass
        finally:
            await response.aclose()
        status = response.status_code
        detail = _error_detail(response)
        if status == 404:
            return NotFoundError(f"{what} not found on {self.host}{detail}", status)
        if status == 400 and any(code in detail for code in ("DIGEST_INVALID", "SIZE_INVALID")):
            return IntegrityError(f"{what}: {self.host} refused the content as not matching its "
                                  f"digest{detail}")
        return RegistryError(f"{what}: {self.host} answered {status}{detail}", status)


def _tls_context(settings: RegistrySettings) -> ssl.SSLContext:
    """System CAs plus --ca-file; --insecure turns verification off; client cert for mTLS."""
    context = ssl.create_default_context()
    if settings.ca_file:
        try:
            context.load_verify_locations(cafile=str(settings.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca-file {settings.ca_file}: not a readable PEM CA certificate ({exc})") from None
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert:
        try:
            context.load_cert_chain(str(settings.client_cert),
                                    str(settings.client_key) if settings.client_key else None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"client certificate {settings.client_cert}: cannot load it with its key "
                             f"({exc})") from None
    return context


def _transport_failure(exc: Exception, request: httpx.Request) -> Exception:
    """TLS refusals are final (AuthError); anything else is worth retrying."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    host = request.url.netloc.decode()
    if isinstance(cause, ssl.SSLCertVerificationError):
        return AuthError(f"TLS certificate of {host} could not be verified ({cause.verify_message}); "
                         "pass --ca-file with the CA that signed it (or --insecure to skip verification)")
    if isinstance(cause, ssl.SSLError):
        return AuthError(f"TLS handshake with {host} failed ({cause.reason or cause}); if it serves "
                         "plain HTTP use --plain-http, if it wants a client certificate pass one")
    return _Transient(f"could not be reached ({_describe(exc)})")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_detail(response: httpx.Response) -> str:
    """`` (CODE: message)`` from the registry's error JSON, when it sent one."""
    try:
        error = response.json()["errors"][0]
        return f" ({error.get('code', '?')}: {error.get('message', '')})"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, httpx.ResponseNotRead):
        return ""


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _next_link(response: httpx.Response) -> httpx.URL | None:
    """The ``rel="next"`` target of a Link header, resolved against the request."""
    for part in response.headers.get_list("link", split_commas=True):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return response.url.join(target.strip().strip("<>"))
    return None


def _range_start(response: httpx.Response) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("content-range", "")
    unit, _, spec = value.partition(" ")
    start = spec.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _is_digest(reference: str) -> bool:
    return ":" in reference


def _image(host: str, repository: str, reference: str) -> str:
    return f"{host}/{repository}{'@' if _is_digest(reference) else ':'}{reference}"


def _hash_file(path: Path, hasher: Any) -> int:
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return size


async def _bytes_chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_SIZE):
        yield view[start:start + CHUNK_SIZE]


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk
