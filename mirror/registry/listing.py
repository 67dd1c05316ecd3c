"""Listings: a repository's tags and the registry's catalog, page by page.

Pages follow ``Link: rel="next"`` (on another origin, asked without
credentials); each page is capped and typed, and an entry that is no name is
passed on marked, for the caller to refuse and report.
"""

from __future__ import annotations

import json

import httpx

from ..errors import AuthError, NotFoundError, RegistryError, Unreachable
from .answers import resolve
from .auth import CATALOG_SCOPE, pull_scope
from .transport import Transport, read_capped

MAX_LISTING = 16 << 20  # one page of tags or repositories: 200 000 names of 80 characters
MAX_NAME = 255  # characters: no tag (128) or repository name (255 with its host) is longer
MAX_ENTRY = 128  # characters of a listed entry that is not a name, passed on for the caller to report


class Listing:
    """The listings of one registry (``RegistryClient.list_tags``, ``tags_within``, ``catalog``)."""

    def __init__(self, transport: Transport):
        self._transport = transport

    async def tags(self, repository: str) -> list[str]:
        """All tags (every page); [] when the repository does not exist."""
        try:
            return await self._paged(f"/v2/{repository}/tags/list", "tags", [pull_scope(repository)],
                                     f"tags of {self._transport.host}/{repository}")
        except NotFoundError:
            return []

    async def tags_within(self, repository: str, pages: int) -> list[str] | None:
        """All tags when they come in at most ``pages`` pages; None when there are more, or the
        registry will not list them (a listing is an optimisation to its callers, never a need)."""
        try:
            return await self._paged(f"/v2/{repository}/tags/list", "tags", [pull_scope(repository)],
                                     f"tags of {self._transport.host}/{repository}", pages)
        except NotFoundError:
            return []
        except _TooManyPages:
            return None
        except (RegistryError, AuthError) as exc:
            if isinstance(exc, Unreachable) or (getattr(exc, "status", None) or 0) >= 500:
                raise  # the registry is in trouble, not just unwilling: the next request would fail too
            return None

    async def catalog(self) -> list[str]:
        """Every repository the registry lists (every page)."""
        return await self._paged("/v2/_catalog", "repositories", [CATALOG_SCOPE],
                                 f"catalog of {self._transport.host}")

    async def _paged(self, path: str, key: str, scopes: list[str], what: str, pages: int | None = None) -> list[str]:
        """Every page's ``key`` list (``_listed``), following ``Link: rel="next"``; _TooManyPages past ``pages``."""
        host = self._transport.host
        found: list[str] = []
        url: httpx.URL | None = self._transport.url(path)
        seen: set[str] = set()
        while url is not None and str(url) not in seen:
            if pages is not None and len(seen) >= pages:
                raise _TooManyPages()
            seen.add(str(url))
            response = await self._transport.request("GET", url, scopes=scopes, stream=True, what=what)
            try:
                if response.status_code != 200:
                    raise await self._transport.failure(response, what)
                body = await read_capped(self._transport, response, what, MAX_LISTING, RegistryError(
                    f"{what}: {host} serves more than {MAX_LISTING} bytes in one page, so it was not read"))
            finally:
                await response.aclose()
            found += _listed(body, key, f"{what}: {host}")
            url = _next_link(response, what)
        return found


def _listed(body: bytes, key: str, what: str) -> list[str]:
    """The ``key`` list of a tags or catalog page (``{"tags": [...]}``; null or absent: none).

    An entry that is no string (or a string longer than any name) is passed on
    as ``<JSON text>``, cut to MAX_ENTRY characters: the brackets make it no
    valid tag or repository name (``5`` or ``null`` alone would be one), so the
    caller's name check refuses and reports it instead of it vanishing here.
    """
    try:
        page = json.loads(body)
    except (ValueError, RecursionError):
        page = None
    entries = page.get(key) if isinstance(page, dict) else None
    if not isinstance(page, dict) or not isinstance(entries, (list, type(None))):
        raise RegistryError(f"{what} answered with no JSON object holding a {key!r} list")
    return [entry if isinstance(entry, str) and len(entry) <= MAX_NAME
            else f"<{json.dumps(entry, separators=(',', ':'))[:MAX_ENTRY - 2]}>" for entry in entries or []]


class _TooManyPages(Exception):
    """A listing longer than its caller wanted to read."""


def _next_link(response: httpx.Response, what: str) -> httpx.URL | None:
    """The ``rel="next"`` target of a Link header, resolved against the request."""
    for part in response.headers.get_list("link", split_commas=True):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return resolve(response, target.strip().strip("<>"), what)
    return None
