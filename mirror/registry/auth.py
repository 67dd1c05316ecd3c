"""Registry authentication: the /v2/ challenge, basic auth and bearer tokens.

The registry says how to authenticate in ``WWW-Authenticate`` on a 401.
``Basic`` means send the credentials on every request; ``Bearer`` means fetch
a token for the scopes a request needs from the realm (with the credentials
when we have them, anonymously otherwise) and send that. Tokens are cached
per scope set until they expire. Secrets never go into a message or a log.

A token server takes several ``scope`` parameters in one request (Docker Hub's
does, and distribution's token spec says so), so the pull scopes a run will
need (``expect``) are asked for up to SCOPES_PER_TOKEN at a time: a Rancher
list of 700 images in 200 repositories costs about 13 token round trips, not
200. A registry that refuses such a shared token for a repository, or a token
server that refuses the shared request, gets one token per scope again.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable

import anyio
import httpx

from ..errors import AuthError, RegistryError
from ..model.numbers import ascii_int
from .credentials import IDENTITY_TOKEN_USER
from .settings import Credentials

CATALOG_SCOPE = "registry:catalog:*"
DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token server does not say (distribution spec)
EXPIRY_MARGIN = 5.0
# Scopes in one shared token: a JWT grows ~150 bytes per scope, and 16 keep its Authorization
# header near 3 KB, well under the 8 KB a proxy in front of a registry allows a header line.
SCOPES_PER_TOKEN = 16

_TOKEN = re.compile(r"[\x21-\x7e]+")  # it goes into a header line: no spaces, controls or line breaks
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')

Send = Callable[..., Awaitable[httpx.Response]]


def _lifetime(expires_in: object) -> float:
    """A token's ``expires_in`` seconds (a JSON integer, or digits in a string); DEFAULT_TOKEN_LIFETIME
    when it is absent, zero or anything else."""
    if isinstance(expires_in, int) and not isinstance(expires_in, bool):
        expires_in = str(expires_in)
    seconds = ascii_int(expires_in) if isinstance(expires_in, str) else None
    return float(seconds or DEFAULT_TOKEN_LIFETIME)


def _is_http_url(text: str) -> bool:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def delete_scope(repository: str) -> str:
    """What a manifest DELETE needs: distribution asks a token for ``delete``, not ``push``."""
    return f"repository:{repository}:delete"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str | None) -> "Challenge | None":
        """The first Basic or Bearer challenge in a WWW-Authenticate header."""
        if not header:
            return None
        scheme, _, rest = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme not in ("basic", "bearer"):
            return None
        params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
                  for m in _PARAM.finditer(rest)}
        return cls(scheme, {k: v.replace('\\"', '"') for k, v in params.items()})


def refused_message(host: str) -> str:
    return (f"credentials for {host} were refused; check --username/--password-stdin "
            "or your docker login")


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Authenticator:
    """Authorization headers for one registry host.

    ``credentials`` is called at most once, when a challenge first needs
    them, so an unreadable auth file only matters to registries that ask.
    ``send(method, url, headers=..., params=..., data=...)`` performs a
    request without registry auth (the caller's retrying transport).
    """

    def __init__(self, host: str, credentials: Callable[[], Credentials | None], send: Send):
        self.host = host
        self._credentials_source = credentials
        self._credentials: Credentials | None = None
        self._looked_up = False
        self._send = send
        self.challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}
        # One lock per scope set: a token is fetched once per scope, while tokens for other
        # repositories are fetched at the same time (a Rancher list is hundreds of repositories).
        self._locks: dict[frozenset[str], anyio.Lock] = {}
        self._expected: dict[str, None] = {}  # single scopes the run will need, in the order it needs them
        self._fetching: dict[str, anyio.Event] = {}  # expected scopes whose shared token is on its way
        self._shared: set[frozenset[str]] = set()  # cached tokens that came from a shared request
        self._alone: set[str] = set()  # scopes a shared token did not open: asked for one by one
        self._sharing = True  # False once the token server refused a shared request

    @property
    def credentials(self) -> Credentials | None:
        if not self._looked_up:
            self._credentials = self._credentials_source()
            self._looked_up = True
        return self._credentials

    def expect(self, scopes: Iterable[str]) -> None:
        """Scopes (each a request's only one, e.g. a repository's pull) this run will need: their
        tokens are then fetched several at a time."""
        self._expected.update(dict.fromkeys(scopes))

    async def authorization(self, scopes: Iterable[str]) -> str | None:
        """The Authorization header to send, or None while no challenge is known."""
        if self.challenge is None:
            return None
        if self.challenge.scheme == "basic":
            return basic_header(self.credentials) if self.credentials else None
        key = frozenset(scopes)
        if len(key) == 1 and self._sharing and not key & self._alone and next(iter(key)) in self._expected:
            return await self._shared_authorization(next(iter(key)))
        async with self._locks.setdefault(key, anyio.Lock()):
            cached = self._cached(key)
            if cached:
                return cached
            token, lifetime = await self._fetch_token(sorted(key))
            self._keep(token, lifetime, [key])
            return "Bearer " + token

    def _cached(self, key: frozenset[str]) -> str | None:
        cached = self._tokens.get(key)
        return "Bearer " + cached[0] if cached and cached[1] > time.monotonic() else None

    def _keep(self, token: str, lifetime: float, keys: list[frozenset[str]]) -> None:
        expires = time.monotonic() + max(lifetime - EXPIRY_MARGIN, 1.0)
        for key in keys:
            self._tokens[key] = (token, expires)

    async def _shared_authorization(self, scope: str) -> str:
        """A token opening ``scope`` and the next expected scopes without one, in one request; a
        request for a scope already on its way waits for that token."""
        key = frozenset([scope])
        while True:
            cached = self._cached(key)
            if cached:
                return cached
            pending = self._fetching.get(scope)
            if pending is None:
                break
            await pending.wait()
        order = list(self._expected)
        at = order.index(scope)
        batch = [scope] + [s for s in order[at + 1:] + order[:at] if s not in self._fetching  # the next ones first
                           and s not in self._alone and not self._cached(frozenset([s]))][:SCOPES_PER_TOKEN - 1]
        done, asked = anyio.Event(), batch
        self._fetching.update(dict.fromkeys(asked, done))
        try:
            token, lifetime = await self._fetch_token(asked)
        except AuthError:
            if len(asked) == 1:
                raise
            self._sharing = False  # refused the shared request (one repository it will not open?): one by one
            batch = [scope]
            token, lifetime = await self._fetch_token(batch)
        finally:
            for s in asked:
                self._fetching.pop(s, None)
            done.set()
        keys = [frozenset([s]) for s in batch]
        self._keep(token, lifetime, keys)
        if len(batch) > 1:
            self._shared.update(keys)
        return "Bearer " + token

    def unauthorized(self, response: httpx.Response, scopes: Iterable[str], *, sent: str | None,
                     refreshed: bool) -> None:
        """React to a 401: learn the challenge or drop a stale token; raise when retrying is pointless.

        Returns normally when the request should be sent again.
        """
        challenge = Challenge.parse(response.headers.get("www-authenticate"))
        if challenge is None:
            raise AuthError(f"{self.host} refused the request (401) without an authentication "
                            "challenge we understand (Basic or Bearer)")
        if sent is None:
            self.challenge = challenge
            if challenge.scheme == "basic" and not self.credentials:
                raise self._needs_credentials()
            return
        self.challenge = challenge
        if challenge.scheme == "bearer" and sent.startswith("Bearer ") and not refreshed:
            key = frozenset(scopes)
            self._tokens.pop(key, None)  # expired or revoked: fetch once more
            if key in self._shared:  # or the shared token did not open this repository: its own token
                self._shared.discard(key)
                self._alone |= key
            return
        raise AuthError(refused_message(self.host)) if self.credentials else self._needs_credentials()

    def _needs_credentials(self) -> AuthError:
        return AuthError(f"{self.host} requires authentication and no credentials were found; "
                         "use --username/--password-stdin or docker login")

    async def _fetch_token(self, scopes: list[str]) -> tuple[str, float]:
        assert self.challenge is not None
        realm = self.challenge.params.get("realm")
        if not realm:
            raise AuthError(f"{self.host} asked for a bearer token but named no realm to get it from")
        if not _is_http_url(realm):
            raise AuthError(f"{self.host} named a token realm {realm[:100]!r}, which is no http(s) URL")
        service = self.challenge.params.get("service")
        credentials = self.credentials
        if credentials and credentials.username == IDENTITY_TOKEN_USER:
            data = {"grant_type": "refresh_token", "refresh_token": credentials.password,
                    "client_id": "mirror", "scope": " ".join(scopes)}
            if service:
                data["service"] = service
            response = await self._send("POST", realm, data=data)
        else:
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params += [("scope", s) for s in scopes]
            headers = {"Authorization": basic_header(credentials)} if credentials else {}
            response = await self._send("GET", realm, params=params, headers=headers)
        if response.status_code in (401, 403):
            if credentials:
                raise AuthError(refused_message(self.host))
            raise AuthError(f"the token server for {self.host} refused anonymous access "
                            f"({response.status_code}); use --username/--password-stdin or docker login")
        if response.status_code != 200:
            raise RegistryError(f"token server for {self.host} answered {response.status_code}",
                                response.status_code)
        try:
            doc = json.loads(response.content)
        except (ValueError, RecursionError):
            doc = None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise RegistryError(f"token server for {self.host} answered without a token (one line of "
                                "printable ASCII)")
        return token, _lifetime(doc.get("expires_in"))
