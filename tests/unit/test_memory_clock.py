"""The clocks, id sources and the wait-or-timeout helper of the memory adapters."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory.clock import ManualClock, SystemClock
from adapters.memory.ids import SequentialIds, UuidIds
from adapters.memory.waiting import Broadcast, wait_or_timeout

SAFETY = 1.0
"""Real seconds a test waits before calling a hang a failure; never reached when it passes."""


async def test_manual_clock_starts_at_the_default_epoch() -> None:
    assert ManualClock().now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_manual_clock_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the naive datetime is the point


def test_manual_clock_does_not_move_backwards() -> None:
    clock = ManualClock()

    with pytest.raises(ValueError, match="forward"):
        clock.advance(timedelta(seconds=-1))


@pytest.mark.parametrize("seconds", [0, -5])
async def test_sleeping_no_time_returns_at_once(seconds: float) -> None:
    clock = ManualClock()

    await asyncio.wait_for(clock.sleep(seconds), SAFETY)

    assert clock.sleepers == 0


async def test_sleeper_wakes_only_when_its_time_is_reached() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(10))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=9))
    await asyncio.sleep(0)
    still_sleeping = not sleeper.done()
    clock.advance(timedelta(seconds=1))
    await asyncio.wait_for(sleeper, SAFETY)

    assert still_sleeping
    assert clock.sleepers == 0
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)


async def test_advance_wakes_due_sleepers_in_target_order() -> None:
    clock = ManualClock()
    woken: list[int] = []

    async def sleep_then_record(seconds: int) -> None:
        await clock.sleep(seconds)
        woken.append(seconds)

    tasks = [asyncio.create_task(sleep_then_record(s)) for s in (30, 10, 20, 99)]
    await clock.wait_for_sleepers(4)

    clock.advance(timedelta(seconds=30))
    await asyncio.wait_for(asyncio.gather(*tasks[:3]), SAFETY)

    assert woken == [10, 20, 30]
    assert clock.sleepers == 1
    tasks[3].cancel()
    await asyncio.gather(tasks[3], return_exceptions=True)


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(10))
    await clock.wait_for_sleepers()

    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)

    assert clock.sleepers == 0


async def test_advancing_past_a_sleeper_cancelled_a_moment_ago_is_harmless() -> None:
    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(10))
    await clock.wait_for_sleepers()

    sleeper.cancel()
    clock.advance(timedelta(seconds=10))
    await asyncio.gather(sleeper, return_exceptions=True)

    assert sleeper.cancelled()
    assert clock.sleepers == 0


async def test_system_clock_is_timezone_aware_utc() -> None:
    clock = SystemClock()

    await clock.sleep(0)

    assert clock.now().utcoffset() == timedelta(0)


def test_sequential_ids_count_from_one() -> None:
    ids = SequentialIds()

    assert [ids.new_id(), ids.new_id(), ids.new_id()] == ["id-1", "id-2", "id-3"]


def test_uuid_ids_are_distinct_hex() -> None:
    ids = UuidIds()

    first, second = ids.new_id(), ids.new_id()

    assert first != second
    assert re.fullmatch("[0-9a-f]{32}", first)


async def test_broadcast_wakes_every_waiter_with_the_value() -> None:
    broadcast: Broadcast[str] = Broadcast()
    waiters = [broadcast.waiter(), broadcast.waiter()]

    broadcast.notify("changed")

    assert [w.result() for w in waiters] == ["changed", "changed"]
    late = broadcast.waiter()
    assert not late.done()
    late.cancel()


async def test_wait_or_timeout_returns_true_when_the_waiter_wins() -> None:
    clock = ManualClock()
    broadcast: Broadcast[None] = Broadcast()
    waiting = asyncio.create_task(wait_or_timeout(clock, broadcast.waiter(), timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    broadcast.notify(None)

    assert await asyncio.wait_for(waiting, SAFETY) is True
    assert clock.sleepers == 0


async def test_wait_or_timeout_returns_false_on_the_clock_timeout() -> None:
    clock = ManualClock()
    broadcast: Broadcast[None] = Broadcast()
    waiter = broadcast.waiter()
    waiting = asyncio.create_task(wait_or_timeout(clock, waiter, timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=5))

    assert await asyncio.wait_for(waiting, SAFETY) is False
    assert waiter.cancelled()


async def test_wait_or_timeout_leaves_nothing_behind_when_its_caller_is_cancelled() -> None:
    clock = ManualClock()
    broadcast: Broadcast[None] = Broadcast()
    waiter = broadcast.waiter()
    waiting = asyncio.create_task(wait_or_timeout(clock, waiter, timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    assert waiting.cancelled()
    assert waiter.cancelled()
    assert clock.sleepers == 0
