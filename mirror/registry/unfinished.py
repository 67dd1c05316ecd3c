"""A pull's downloads as a whole: waiting for a worker, waiting their turn, in progress.

Waiting downloads are heap entries per lane (a registry's small blobs, or its
others: each kind has a window of its own there), largest first, taken by a
fixed pool of workers (``Unfinished.next``); a worker starts one through a
line of its own (``Unfinished.turn``), not the registry's window, so other
requests for blobs (a config an image's resolution needs) go first. Near the
end, a connection with nothing left to start takes over half of what the
largest download in progress still has to come (``Unfinished.help``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from typing import Protocol

import anyio

from .pieces import Pieces
from .settings import SMALL_BLOBS_CAP
from .transport import Transport

ROOM_POLL = 0.02  # seconds: how often the first download in line looks for room freed by other requests

Lane = tuple[str, bool]  # a registry host, and whether its blobs there are small (transport.py's windows)


class InProgress(Protocol):
    """A download in progress as Unfinished sees it (download.py: a blob into pieces, or a small one)."""

    transport: Transport
    pieces: Pieces  # read, and help called, only when ``splittable``
    unfinished: "Unfinished | None"
    small: bool  # held whole in memory until it is in (a small blob's)

    def splittable(self) -> bool: ...

    async def help(self) -> bool: ...


class Unfinished:
    """A pull's downloads: those waiting for a worker, those a worker started (``turn``), and those in
    progress, where a connection with nothing else to do finds work.

    Waiting downloads are heap entries, per lane and largest first: a release has thousands of
    blobs, and a task (or an event) each would grow the pull's memory with the bundle. A fixed pool of
    workers takes them (``next``) and starts each through ``turn``. A registry's small blobs have a lane
    of their own, as they have a window: they start while its large ones wait for a place.
    """

    def __init__(self, at_once: int | None = None) -> None:
        self.at_once = at_once  # downloads in progress at most, all registries together (None: no limit)
        self._downloads: dict[InProgress, None] = {}  # in the order they started
        self._small = 0  # of them, small blobs: held whole in memory, SMALL_BLOBS_CAP at most
        self._changed = anyio.Event()  # a download came or went, or a piece ended (a connection freed)
        self._looking = anyio.Lock()  # held by the one idle connection looking for a range to take over
        self._choosing = anyio.Lock()  # held by the one worker looking for a download to start
        self._startable = anyio.Event()  # a download was queued, or a registry's line emptied, or close
        # per lane, the downloads no worker took yet: a heap of (-size, arrival, item)
        self._waiting: dict[Lane, list[tuple[int, int, str]]] = {}
        self._closed = False
        # per lane, the downloads started and waiting their turn: [-size, arrival, set when first]
        self._lines: dict[Lane, list[list]] = {}
        self._arrivals = itertools.count()

    def queue(self, host: str, size: int, item: str, *, small: bool) -> None:
        """``item`` (a blob of ``host``'s, ``size`` bytes; ``small``: one held whole in memory) waits for a
        worker's ``next``."""
        heapq.heappush(self._waiting.setdefault((host, small), []), (-size, next(self._arrivals), item))
        self._start_one()

    def close(self) -> None:
        """Nothing more is queued: ``next`` returns None once every queued item is taken."""
        self._closed = True
        self._start_one()

    async def next(self) -> str | None:
        """The largest queued item of a lane with no download waiting in ``turn`` (where its worker
        starts it at once, or is first for the next place); None once closed and all are taken.

        A lane's downloads wait here rather than in its line: one at a time goes into the line,
        the next once it started, so the others' workers start other lanes' downloads meanwhile.
        One worker looks at a time, the others queue behind it: a change wakes one, not the pool."""
        async with self._choosing:
            while True:
                open_ = [lane for lane in self._waiting if lane not in self._lines]
                if open_:
                    lane = min(open_, key=lambda each: self._waiting[each][0])  # the largest first
                    heap = self._waiting[lane]
                    item = heapq.heappop(heap)[2]
                    if not heap:
                        del self._waiting[lane]
                    return item
                if self._closed and not self._waiting:
                    return None
                await self._startable.wait()

    def _start_one(self) -> None:
        self._startable.set()
        self._startable = anyio.Event()

    async def turn(self, transport: Transport, size: int, *, small: bool) -> None:
        """Return once a blob transfer to ``transport``'s registry (``small``: in its small blobs' window)
        would start at once, no larger download of the lane waits here (of equal ones, the first to
        come goes first) and fewer than ``at_once`` are in progress (of small ones, which memory
        holds whole, fewer than SMALL_BLOBS_CAP whatever the registry).

        Downloads wait in line here rather than in the registry's window of
        transfers, which serves whoever asked first: a pull queues hundreds of
        blobs as images resolve, and the config an image's resolution still
        needs would wait behind all of them, holding back that image's own
        downloads (and the bundle writer, which starts once every image is
        resolved). Here anything else that asks for a transfer goes first.
        The largest of a lane go first: a large blob asked for late would
        otherwise be the last to arrive, and its join and its copy into the
        bundle would come after the link went quiet. Small blobs, in a lane
        of their own, come beside them.
        """
        lane = (transport.host, small)
        line = self._lines.setdefault(lane, [])
        mine = [-size, next(self._arrivals), anyio.Event()]
        bisect.insort(line, mine)
        try:
            while True:
                if line[0] is not mine:
                    mine[2] = anyio.Event()
                    await mine[2].wait()  # set when it is first in line
                elif transport.transfer_room(small) and self._room(small):
                    return
                else:
                    with anyio.move_on_after(ROOM_POLL):  # room freed by another's request tells nobody
                        await self._changed.wait()
        finally:
            line.remove(mine)
            if line:
                line[0][2].set()
            else:
                del self._lines[lane]
                self._start_one()

    def _room(self, small: bool) -> bool:
        if small and self._small >= SMALL_BLOBS_CAP:
            return False
        return self.at_once is None or len(self._downloads) < self.at_once

    def add(self, download: "InProgress") -> None:
        self._downloads[download] = None
        self._small += download.small
        download.unfinished = self
        self.changed()

    def discard(self, download: "InProgress") -> None:
        if download in self._downloads:
            del self._downloads[download]
            self._small -= download.small
        self.changed()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def help(self) -> bool:
        """Fetch the second half of what the range with the most left has left, of a download here
        whose registry has a transfer's place free and no large download waiting to start (waiting for
        that);
        False once no range has enough left to be worth a request of its own (pieces.py SPLIT_MIN).

        One idle connection looks at a time, the others queue behind it: each change would otherwise
        wake every one of them (up to ``tasks_for(jobs)``) to look over every download in progress,
        for as long as a pull's downloads wait in line (the release bench: 30.7 -> 27.8 CPU-s)."""
        while True:
            async with self._looking:
                chosen = await self._range_to_take()
            if chosen is None:
                return False
            if await chosen.help():  # splits at once, before another connection looks
                return True

    async def _range_to_take(self) -> "InProgress | None":
        """The download whose range has the most left, once its registry has a transfer's place free and no
        large download waiting to start (small ones have a window of their own); None once no range is
        worth splitting."""
        while True:
            splittable = [d for d in self._downloads if d.splittable()]
            if not splittable:
                return None
            free = [d for d in splittable if d.transport.transfer_room() and not self._large_waiting(d.transport.host)]
            if free:
                return max(free, key=lambda d: d.pieces.most_left())
            await self._changed.wait()

    def _large_waiting(self, host: str) -> bool:
        """A download of ``host``'s that is not small waits to start: a free place is for it, not a range."""
        return (host, False) in self._lines or (host, False) in self._waiting
