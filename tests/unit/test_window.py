"""The window of requests in flight to one registry follows its answers: driven by observed latencies, no clock."""

from __future__ import annotations

import anyio
import pytest

from mirror.registry.window import Window

pytestmark = pytest.mark.anyio

LINK = 0.040  # seconds: a round trip over the WAN model


async def full_round(window: Window, latency: float) -> int:
    """Fill the window, then answer every request after ``latency``; the limit after that round."""
    tickets = [await window.acquire() for _ in range(window.limit)]
    for ticket in tickets:
        window.answered(ticket, latency)
        window.release()
    return window.limit


async def test_the_window_grows_while_latency_stays_flat():
    window = Window(cap=64, start=4)
    limits = [await full_round(window, LINK) for _ in range(6)]
    assert limits == sorted(limits) and limits[-1] > 4 * limits[0] // 2
    assert limits[-1] == 64


async def test_the_window_never_exceeds_its_cap():
    window = Window(cap=10, start=4)
    assert max([await full_round(window, LINK) for _ in range(50)]) == 10


async def test_a_window_not_filled_does_not_grow():
    window = Window(cap=64, start=8)
    for _ in range(10):
        ticket = await window.acquire()
        window.answered(ticket, LINK)
        window.release()
    assert window.limit == 8


async def test_429_or_503_halves_the_window_once_per_round():
    window = Window(cap=64, start=32)
    tickets = [await window.acquire() for _ in range(32)]
    for ticket in tickets:  # a whole window of requests answered 429: one cut, not 32
        window.overloaded(ticket)
        window.release()
    assert window.limit == 16
    tickets = [await window.acquire() for _ in range(16)]
    window.overloaded(tickets[0])  # sent after the cut: the registry is still overloaded
    assert window.limit == 8


async def test_the_window_never_falls_below_one():
    window = Window(cap=64, start=8)
    for _ in range(20):
        ticket = await window.acquire()
        window.overloaded(ticket)
        window.release()
    assert window.limit == 1  # twenty 429s, and still one request goes at a time


async def test_rising_latency_shrinks_the_window_back_to_its_start_not_below():
    window = Window(cap=64, start=8)
    limits = [await full_round(window, LINK) for _ in range(3)]
    assert limits[-1] == 64
    shrinking = [await full_round(window, LINK * 3) for _ in range(10)]  # the registry queues: fewer at once
    assert shrinking[0] < 64 and shrinking == sorted(shrinking, reverse=True)
    assert shrinking[-1] == 8  # slow answers alone never take it below what was always sent


async def test_scheduling_noise_is_not_rising_latency():
    window = Window(cap=64, start=8)
    await full_round(window, 0.0003)  # a loopback registry
    assert await full_round(window, 0.002) > 8


async def test_after_a_back_off_the_window_grows_one_by_one():
    window = Window(cap=64, start=32)
    await full_round(window, LINK)
    ticket = await window.acquire()
    window.overloaded(ticket)
    window.release()
    cut = window.limit
    assert [await full_round(window, LINK) for _ in range(3)] == [cut + 1, cut + 2, cut + 3]


async def test_the_link_s_best_latency_is_forgotten_after_a_while():
    """A registry that has become slower for good is the new normal: the window grows again."""
    window = Window(cap=64, start=16)
    await full_round(window, LINK)
    await full_round(window, LINK)
    limits = [await full_round(window, LINK * 4) for _ in range(150)]
    assert min(limits) == 16 and limits[-1] > 16


async def test_requests_past_the_limit_wait_their_turn_in_order():
    window = Window(cap=2, start=2)
    first, _ = await window.acquire(), await window.acquire()
    order = []

    async def later(name: str) -> None:
        await window.acquire()
        order.append(name)

    async with anyio.create_task_group() as group:
        for name in ("a", "b"):
            group.start_soon(later, name)
            await anyio.wait_all_tasks_blocked()
        assert order == [] and window.in_flight == 2
        window.answered(first, LINK)
        window.release()
        await anyio.wait_all_tasks_blocked()
        assert order == ["a"]
        window.release()
    assert order == ["a", "b"]


async def test_a_cancelled_waiter_keeps_no_place():
    window = Window(cap=1, start=1)
    await window.acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(window.acquire)
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    window.release()
    assert window.in_flight == 0
    await window.acquire()  # the place is free, not kept for the cancelled waiter (else this waits for ever)
    assert window.in_flight == 1
