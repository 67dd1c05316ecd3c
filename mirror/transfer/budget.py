"""A source registry's pull budget for one run: manifest GETs paid for, the rest deferred.

Docker Hub meters pulls, and a pull is a manifest GET: HEADs and blobs are
free. Its docs have defined a pull as "up to two GETs" (2020) and as one
pull per architecture of a multi-arch image (since 2025). mirror counts
every manifest GET as one pull: a tag's manifest or index, and each platform
manifest it keeps of an index (an attestation manifest too). That is never
fewer than either definition, so a run never asks for more than the
registry said was left; at worst one pull of a multi-arch image waits for
the next window though the registry would have allowed it.

The budget is read before any GET, with one free HEAD per source registry
(``ratelimit-remaining: N;w=SECONDS`` and ``ratelimit-limit``). Each GET to
that registry then takes one pull; when none is left the image is deferred
(RateLimited, exit 6), or, with ``wait``, the run sleeps until the window
reopens (a 429's Retry-After, else the ``w=`` window after the budget ran
out, re-read with a HEAD every few minutes) and goes on. A 429 that outlasts
the transport's retries spends the budget the same way, on any registry:
someone else behind the same address may have used it.

Nothing fetched is lost: the Resolver keeps each manifest in the work dir as
it arrives, and on a registry with a budget it HEADs a tag (free) and takes
the manifest from the work dir when it is there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

import anyio

from ..clock import utc_after
from ..errors import ExitCode, MirrorError, RegistryError
from ..model.oci import Manifest
from ..model.reference import Reference
from ..model.upstream import SourceMap
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.ratelimit import RateLimit
from ..registry.transport import Transient
from .tasks import each

FALLBACK_WAIT = 60.0  # seconds, when a registry names neither a Retry-After nor a window
RECHECK = 300.0  # while waiting, the budget is read again this often: a rolling window frees pulls as they age
MAX_WAIT = 24 * 3600.0  # one wait at most: a longer window or Retry-After is no honest one
MAX_WAITS = 3  # waits in a row without a manifest fetched: the registry gives nothing, so defer

T = TypeVar("T")


class RateLimited(MirrorError):
    """An image left for a later run: its registry's rate limit is spent."""

    exit_code = ExitCode.DEFERRED

    def __init__(self, message: str, host: str):
        super().__init__(message)
        self.host = host


@dataclass(eq=False)
class Allowance:
    """What one registry lets this run fetch, and when it lets it fetch more."""

    host: str
    probe: tuple[str, str]  # a repository and reference whose HEAD states the budget
    stated: RateLimit | None  # the registry's last word; None: it states none (only a 429 limited it)
    left: int | None  # pulls this run may still take; None: no limit known
    spent: int = 0
    spent_out_at: float | None = None  # time.monotonic() when nothing was left
    retry_at: float | None = None  # time.monotonic() a 429's Retry-After named
    waits: int = 0  # in a row, without a manifest fetched since
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def spent_out(self) -> bool:
        return self.left is not None and self.left <= 0

    def reopens_in(self) -> float | None:
        """Seconds until the window reopens: a Retry-After, else a window after the budget ran out."""
        now = time.monotonic()
        if self.retry_at is not None:
            return min(MAX_WAIT, max(0.0, self.retry_at - now))
        window = self.stated.window if self.stated else None
        if window:
            return min(MAX_WAIT, max(0.0, (self.spent_out_at or now) + window - now))
        return None

    def spent_line(self) -> str:
        """``HOST's rate limit is spent (N pulls this run; it allows L per W s)``."""
        stated = self.stated
        allows = (f"; it allows {stated.limit} per {stated.window} s" if stated and stated.limit is not None
                  and stated.window else "")
        return f"{self.host}'s rate limit is spent ({self.spent} pulls this run{allows})"

    def describe(self) -> str:
        """``spent_line`` and when the window reopens."""
        reopens = self.reopens_in()
        when = (f"its window reopens by {utc_after(reopens)}" if reopens is not None
                else "it did not say when its window reopens")
        return f"{self.spent_line()} and {when}"

    def to_json(self) -> dict[str, Any]:
        reopens = self.reopens_in() if self.spent_out else None
        return {"remaining": self.stated.remaining if self.stated else None,
                "limit": self.stated.limit if self.stated else None,
                "window": self.stated.window if self.stated else None,
                "spent": self.spent, "reopens": utc_after(reopens) if reopens is not None else None}


def _silent(line: str) -> None:
    pass


class Budget:
    """Every source registry's allowance for one run; ``get_manifest`` pays for each GET from it."""

    def __init__(self, pool: ClientPool, *, wait: bool = False, log: Callable[[str], None] = _silent):
        self.pool, self.wait, self.log = pool, wait, log
        self.allowances: dict[str, Allowance] = {}
        self._unmetered: dict[str, int] = {}  # GETs to a registry before it had an allowance (until its 429)

    async def survey(self, sources: SourceMap, refs: Iterable[Reference]) -> None:
        """Read each source registry's budget with one free HEAD (of its first image), before any GET."""
        first: dict[str, tuple[str, str]] = {}
        for ref in refs:
            location = sources.locate(ref)
            first.setdefault(location.host, (location.repository, ref.identifier))

        async def read(item: tuple[str, tuple[str, str]]) -> None:
            host, probe = item
            stated = await self._read(host, probe)
            if stated is not None:
                self.allowances[host] = Allowance(host, probe, stated, stated.remaining)

        await each(first.items(), read, len(first))

    def stated(self, host: str, probe: tuple[str, str], stated: RateLimit) -> None:
        """Budget ``host`` by what a HEAD already made stated (sync's check), instead of a survey of its own."""
        self.allowances.setdefault(host, Allowance(host, probe, stated, stated.remaining))

    async def in_order(self, items: Sequence[T], host_of: Callable[[T], str],
                       fetch: Callable[[T], Awaitable[None]], jobs: int) -> None:
        """``fetch`` each item, a metered registry's one at a time in the order given (its registries side by
        side, the others' ``jobs`` at a time): the first items whose GETs fit get them; once one does not
        fit, the allowance is spent and every later item of that registry meets RateLimited before any GET.
        """
        queues: dict[str, list[T]] = {}
        free: list[T] = []
        for item in items:
            host = host_of(item)
            (queues.setdefault(host, []) if self.limits(host) else free).append(item)

        async def in_turn(queue: list[T]) -> None:
            for item in queue:
                await fetch(item)

        async with anyio.create_task_group() as group:
            for queue in queues.values():
                group.start_soon(in_turn, queue)
            group.start_soon(each, free, fetch, jobs)

    def limits(self, host: str) -> bool:
        """Whether ``host`` meters this run: its tags are then HEADed first, to find their manifests stored."""
        return host in self.allowances

    def spent_out(self) -> list[Allowance]:
        return [a for a in self.allowances.values() if a.spent_out]

    async def get_manifest(self, client: RegistryClient, repository: str, reference: str) -> Manifest:
        """GET a manifest as one pull from its registry's allowance; RateLimited when none is left."""
        while True:
            allowance = self.allowances.get(client.host)
            if allowance is not None:
                await self._take(allowance)
            try:
                manifest = await client.get_manifest(repository, reference)
            except RegistryError as exc:
                if exc.status != 429:
                    raise
                self._refused(client.host, (repository, reference), exc, paid=allowance is not None)
                continue
            if allowance is not None:
                allowance.waits = 0
            else:
                self._unmetered[client.host] = self._unmetered.get(client.host, 0) + 1
            return manifest

    async def _take(self, allowance: Allowance) -> None:
        while allowance.spent_out:
            if not self.wait:
                raise RateLimited(f"{allowance.host}'s rate limit is spent; the next run fetches it", allowance.host)
            async with allowance.lock:  # one task waits and reads the budget again; the others queue here
                if allowance.spent_out:
                    await self._wait(allowance)
        if allowance.left is not None:
            allowance.left -= 1
            if allowance.left == 0:
                allowance.spent_out_at = time.monotonic()
        allowance.spent += 1

    def _refused(self, host: str, probe: tuple[str, str], error: RegistryError, paid: bool) -> None:
        """A 429 the transport's retries did not outlast: nothing is left until the registry says so."""
        allowance = self.allowances.get(host)
        if allowance is None:
            allowance = self.allowances[host] = Allowance(host, probe, None, 0, spent=self._unmetered.get(host, 0))
        elif paid:
            allowance.spent -= 1  # refused, so not counted
        now = time.monotonic()
        allowance.left, allowance.spent_out_at = 0, now
        cause = error.__cause__  # the transport's last Transient, with the answer's Retry-After
        retry_after = cause.retry_after if isinstance(cause, Transient) else None
        allowance.retry_at = now + retry_after if retry_after is not None else None

    async def _wait(self, allowance: Allowance) -> None:
        """Sleep until the window reopens, reading the budget again on the way; RateLimited if it never does."""
        if allowance.waits >= MAX_WAITS:
            raise RateLimited(f"{allowance.host}'s rate limit is still spent after {allowance.waits} waits; "
                              "the next run fetches it", allowance.host)
        allowance.waits += 1
        delay = allowance.reopens_in()
        delay = FALLBACK_WAIT if delay is None else delay
        self.log(f"{allowance.spent_line()}: waiting until {utc_after(delay)} for its window to reopen "
                 "(--wait-for-limit); what was fetched is kept")
        deadline = time.monotonic() + delay
        while True:
            await anyio.sleep(max(0.0, min(deadline - time.monotonic(), RECHECK)))
            stated = await self._read(allowance.host, allowance.probe)
            if stated is not None:
                allowance.stated = stated
            if stated is not None and stated.remaining > 0:
                allowance.left = stated.remaining
                break
            if time.monotonic() >= deadline:  # still nothing stated as left: 0 waits again, None tries
                allowance.left = stated.remaining if stated is not None else None
                break
        allowance.spent_out_at = time.monotonic() if allowance.spent_out else None
        allowance.retry_at = None

    async def _read(self, host: str, probe: tuple[str, str]) -> RateLimit | None:
        """What ``host`` states on a free HEAD; None when it states nothing or the HEAD fails (a GET says why)."""
        client = await self.pool.get(host)
        client.last_ratelimit = client.last_ratelimit_limit = None  # this answer's, not an earlier one's
        try:
            await client.head_manifest(*probe)
        except MirrorError:
            return None
        return RateLimit.of(client.last_ratelimit, client.last_ratelimit_limit)
