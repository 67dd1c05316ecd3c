"""How many requests to one registry are in flight at once: a window that follows latency.

Over a long link a small request (a token, a HEAD, a manifest) is one round
trip; a fixed number in flight caps how many round trips a second a pull gets,
however much the link and the registry could take. The window grows while the
registry answers as fast as it did (latency, not bandwidth or the server, is
the limit) and backs off when it says it is overloaded (429, 503) or answers
more slowly (requests queueing somewhere): TCP's congestion window, with the
response head's round trip as the signal (AIMD: additive increase,
multiplicative decrease, after a slow start that doubles).

The rules are decided once a round: a round ends when as many requests sent
after it began have been answered as the window held, about one round trip
when the window is full; its fastest answer is its latency. Start and cap
come from configuration (registry/settings.py), so memory and connections
stay bounded whatever the bundle; the window is never below one request.
"""

from __future__ import annotations

from collections import deque

import anyio

RISE = 1.5  # a round this many times slower than the link's recent best: requests are queueing
SLACK = 0.005  # seconds of scheduling noise not counted as queueing (a busy event loop, a loopback registry)
LATENCY_BACKOFF = 0.75  # the window after a slower round, as a share of what it was
OVERLOAD_BACKOFF = 0.5  # the window after a 429 or 503
BASE_ROUNDS = 100  # the link's best latency is the least of this many recent rounds (it may change)


class Window:
    """A limiter whose size follows the registry's answers, between 1 and ``cap``.

    It opens at ``start``, a number known to be safe; rising latency takes it
    back towards ``start`` but not below (on a busy client, slow answers are
    as often its own event loop as the registry), 429 and 503 down to one.
    ``acquire`` waits for a place and returns a ticket; the caller reports the
    answer (``answered`` with the seconds to its head, or ``overloaded``) and
    ``release``s the place when its body is done.
    """

    def __init__(self, cap: int, start: int):
        self.cap = max(1, cap)
        self.start = self.limit = max(1, min(start, self.cap))
        self.in_flight = 0
        self._waiters: deque[anyio.Event] = deque()
        self._sent = 0  # tickets handed out
        self._round_start = 1  # the first ticket of this round: answers to earlier ones speak of an older window
        self._round_size = self.limit  # answers that end the round
        self._round_answers = 0
        self._round_best: float | None = None  # the fastest answer this round
        self._full = False  # this round's demand reached the limit: the limit is what held it
        self._bests: deque[float] = deque(maxlen=BASE_ROUNDS)  # the fastest answer of each recent round
        self._slow_start = True  # no sign of trouble yet: grow by doubling
        self._quiet_from = 1  # an overload of a ticket before this was answered to a window already cut

    async def acquire(self) -> int:
        """Wait for a place (first come, first served); the ticket names the request to the other calls."""
        if self.room:
            self.in_flight += 1
        else:
            woken = anyio.Event()  # set by _wake with the place already taken for us
            self._waiters.append(woken)
            try:
                await woken.wait()
            except BaseException:
                if woken.is_set():
                    self.release()  # a place handed over as we were cancelled: pass it on
                else:
                    self._waiters.remove(woken)
                raise
        if self.in_flight >= self.limit:
            self._full = True
        self._sent += 1
        return self._sent

    @property
    def room(self) -> bool:
        """A request would go now, not wait."""
        return self.in_flight < self.limit and not self._waiters

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def answered(self, ticket: int, latency: float | None) -> None:
        """The answer's head came ``latency`` seconds after the request went (None: not comparable,
        e.g. the time included opening a connection)."""
        if ticket < self._round_start:
            return
        if latency is not None:
            self._round_best = latency if self._round_best is None else min(self._round_best, latency)
        self._round_answers += 1
        if self._round_answers >= self._round_size:
            self._end_round()

    def overloaded(self, ticket: int) -> None:
        """The registry answered 429 or 503: halve the window, once for all the requests already sent."""
        if ticket < self._quiet_from:
            return
        self.limit = max(1, int(self.limit * OVERLOAD_BACKOFF))
        self._slow_start = False
        self._quiet_from = self._sent + 1
        self._new_round()

    def _end_round(self) -> None:
        best, full = self._round_best, self._full
        base = min(self._bests) if self._bests else None
        if best is not None:
            self._bests.append(best)
        if base is not None and best is not None and best > base * RISE + SLACK:
            if self.limit > self.start:
                self.limit = max(self.start, int(self.limit * LATENCY_BACKOFF))
            self._slow_start = False
        elif full:
            self.limit = min(self.cap, self.limit * 2 if self._slow_start else self.limit + 1)
        self._new_round()
        self._wake()

    def _new_round(self) -> None:
        self._round_start, self._round_size = self._sent + 1, self.limit
        self._round_answers, self._round_best, self._full = 0, None, False

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            self.in_flight += 1
            self._waiters.popleft().set()
