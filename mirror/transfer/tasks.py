"""The one fan-out every operation uses: work on many items, a bounded number at once."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Awaitable, Callable, Iterable, TypeVar

import anyio
import anyio.abc

T = TypeVar("T")


async def each(items: Iterable[T], work: Callable[[T], Awaitable[object]], limit: int) -> None:
    """Await ``work(item)`` for every item, at most ``limit`` running at a time, in order of start.

    ``limit`` workers share one iterator, so a million items cost ``limit``
    tasks, not a million. The first exception cancels the rest and propagates
    as itself (not inside an exception group), so a caller's ``except
    MirrorError`` sees it; several at once stay a group.
    """
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # one event loop: no two workers take the same item
            await work(item)

    async with task_group() as group:
        for _ in range(max(1, limit)):
            group.start_soon(worker)


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """anyio's task group, whose one exception propagates as itself (several at once stay a group)."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as raised:
        if len(raised.exceptions) == 1:
            raise raised.exceptions[0] from None
        raise
