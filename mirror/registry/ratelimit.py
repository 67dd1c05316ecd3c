"""A registry's pull budget, from its ``RateLimit-Remaining`` / ``RateLimit-Limit`` answers.

Docker Hub sends ``ratelimit-remaining: 76;w=21600`` (pulls left, and the
window in seconds) on manifest requests, HEADs included. Both numbers come
from the peer, so they go through ascii_int: an unreadable count is no
budget, an unreadable window is no window.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.numbers import ascii_int


@dataclass
class RateLimit:
    remaining: int
    window: int | None  # seconds
    limit: int | None = None  # what the window allows in all (``ratelimit-limit``)

    @classmethod
    def parse(cls, value: str | None) -> "RateLimit | None":
        """``N;w=SECONDS`` (the window optional); None when absent or unreadable."""
        if not value:
            return None
        count, *params = [part.strip() for part in value.split(";")]
        remaining = ascii_int(count)
        if remaining is None:
            return None
        window = next((p[2:] for p in params if p.startswith("w=")), None)
        return cls(remaining, ascii_int(window))

    @classmethod
    def of(cls, remaining: str | None, limit: str | None) -> "RateLimit | None":
        """The budget ``ratelimit-remaining`` and ``ratelimit-limit`` state together; None without the first."""
        budget = cls.parse(remaining)
        if budget is not None:
            allowed = cls.parse(limit)
            budget.limit = allowed.remaining if allowed else None
            budget.window = budget.window if budget.window is not None else (allowed.window if allowed else None)
        return budget
