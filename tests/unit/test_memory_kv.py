"""MemoryKeyValue and MemoryBuckets: NATS KV semantics on a manual clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from adapters.memory.clock import EPOCH, ManualClock
from adapters.memory.kv import MemoryBuckets, MemoryKeyValue
from domain.models import KvEntry

SAFETY = 1.0
"""Real seconds a test waits before calling a hang a failure; never reached when it passes."""
TICK = timedelta(microseconds=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def bucket(clock: ManualClock) -> MemoryKeyValue:
    return MemoryKeyValue(clock, bucket="signals")


async def yield_to_waiters() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_put_reads_back_with_its_revision_and_time(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    clock.advance(timedelta(seconds=3))

    revision = await bucket.put("run.go", b'{"ok":true}')

    assert await bucket.get("run.go") == KvEntry(
        key="run.go", value=b'{"ok":true}', revision=revision, created=EPOCH + timedelta(seconds=3)
    )


async def test_revisions_are_per_bucket_and_a_delete_consumes_one(clock: ManualClock) -> None:
    bucket, other = MemoryKeyValue(clock), MemoryKeyValue(clock)

    first = await bucket.put("a", b"1")
    second = await bucket.put("b", b"2")
    await bucket.delete("a")
    after_delete = await bucket.put("a", b"3")

    assert (first, second, after_delete) == (1, 2, 4)
    assert await other.put("a", b"x") == 1


async def test_a_deleted_key_reads_as_absent_and_is_not_listed(bucket: MemoryKeyValue) -> None:
    await bucket.put("a", b"1")
    await bucket.put("b", b"2")

    await bucket.delete("a")

    assert await bucket.get("a") is None
    assert await bucket.keys() == ["b"]


async def test_deleting_an_absent_key_leaves_a_marker(bucket: MemoryKeyValue) -> None:
    await bucket.delete("never")

    assert await bucket.get("never") is None
    assert await bucket.put("never", b"now") == 2


async def test_an_entry_reads_as_absent_once_ttl_old(clock: ManualClock) -> None:
    bucket = MemoryKeyValue(clock, bucket="workers", ttl=timedelta(seconds=60))
    await bucket.put("w1", b"{}")

    clock.advance(timedelta(seconds=60) - TICK)
    fresh = await bucket.get("w1")
    clock.advance(TICK)

    assert fresh is not None
    assert await bucket.get("w1") is None
    assert await bucket.keys() == []


async def test_a_re_put_renews_a_ttl_entry(clock: ManualClock) -> None:
    bucket = MemoryKeyValue(clock, ttl=timedelta(seconds=60))
    await bucket.put("w1", b"{}")
    clock.advance(timedelta(seconds=50))

    await bucket.put("w1", b"{}")
    clock.advance(timedelta(seconds=50))

    assert await bucket.keys() == ["w1"]


async def test_wait_for_value_answers_an_existing_value_at_once(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    await bucket.put("run.go", b"1")

    entry = await asyncio.wait_for(bucket.wait_for_value("run.go", timedelta(seconds=5)), SAFETY)

    assert entry is not None
    assert entry.value == b"1"
    assert clock.sleepers == 0


async def test_wait_for_value_ignores_deletes_and_other_keys_then_wakes_on_a_put(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(bucket.wait_for_value("run.go", timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    await bucket.delete("run.go")
    await bucket.put("run.other", b"no")
    await yield_to_waiters()
    still_waiting = not waiting.done()
    await bucket.put("run.go", b"yes")

    entry = await asyncio.wait_for(waiting, SAFETY)
    assert still_waiting
    assert entry is not None
    assert (entry.key, entry.value) == ("run.go", b"yes")
    assert clock.sleepers == 0


async def test_wait_for_value_answers_a_put_even_if_a_delete_follows_it(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(bucket.wait_for_value("run.go", timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    await bucket.put("run.go", b"yes")
    await bucket.delete("run.go")

    entry = await asyncio.wait_for(waiting, SAFETY)
    assert entry is not None
    assert entry.value == b"yes"


async def test_wait_for_value_returns_none_when_the_timeout_passes_on_the_clock(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(bucket.wait_for_value("run.go", timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=5))

    assert await asyncio.wait_for(waiting, SAFETY) is None
    assert clock.sleepers == 0


async def test_wait_for_value_without_timeout_does_not_wait(
    bucket: MemoryKeyValue, clock: ManualClock
) -> None:
    assert await bucket.wait_for_value("run.go", timedelta(0)) is None
    assert clock.sleepers == 0


async def test_buckets_are_all_present_by_default(clock: ManualClock) -> None:
    buckets = MemoryBuckets(clock)

    checkpoints, signals, workers = (
        await buckets.checkpoints(),
        await buckets.signals(),
        await buckets.workers(),
    )

    assert checkpoints is not None
    assert signals is not None
    assert workers is not None
    assert (checkpoints.bucket, signals.bucket, workers.bucket) == (
        "checkpoints",
        "signals",
        "workers",
    )
    assert (checkpoints.ttl, signals.ttl, workers.ttl) == (None, None, timedelta(seconds=60))


async def test_buckets_can_be_left_out(clock: ManualClock) -> None:
    buckets = MemoryBuckets(clock, checkpoints=False, signals=False, workers=False)

    assert await buckets.checkpoints() is None
    assert await buckets.signals() is None
    assert await buckets.workers() is None


async def test_a_bucket_keeps_its_entries_between_lookups(clock: ManualClock) -> None:
    buckets = MemoryBuckets(clock)
    checkpoints = await buckets.checkpoints()
    assert checkpoints is not None

    await checkpoints.put("run.step", b"{}")

    again = await buckets.checkpoints()
    assert again is not None
    assert await again.keys() == ["run.step"]
