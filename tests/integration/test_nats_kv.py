"""NatsKeyValue, NatsBuckets and bucket provisioning against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig
from nats.js.errors import APIError
from nats.js.kv import KV_OP

from adapters.nats.jetstream import JetStream, LastMessages
from adapters.nats.kv import (
    KEYS_PER_READ,
    BatchedGets,
    NatsBuckets,
    NatsKeyValue,
    ensure_leases_bucket,
    ensure_polls_bucket,
    provision_buckets,
)
from adapters.wire import (
    CHECKPOINTS_BUCKET,
    LEASES_BUCKET,
    POLLS_BUCKET,
    SIGNALS_BUCKET,
    WORKERS_TTL,
)
from app.embedded import EmbeddedNats
from domain.errors import BackendError, DomainError, InvalidRequestError
from domain.models import KvEntry
from domain.ports import KeyValueBuckets
from tests.integration.kv_helpers import bucket_name, consumer_count, fresh_bucket, until

pytestmark = pytest.mark.integration

LONG = timedelta(seconds=10)
"""A wait the test ends long before, by a put."""
SHORT = timedelta(milliseconds=200)


@pytest.fixture
async def js(nats_client: NatsClient) -> JetStream:
    return JetStream(nats_client)


@pytest.fixture
async def kv(js: JetStream) -> AsyncIterator[NatsKeyValue]:
    async with fresh_bucket(js, watch_idle=timedelta(milliseconds=500)) as bucket:
        yield bucket


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A server of this test's own, for the buckets whose names are fixed."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_js(own_server: EmbeddedNats) -> AsyncIterator[JetStream]:
    client = await nats.connect(own_server.url)
    yield JetStream(client)
    await client.drain()


async def watching(kv: NatsKeyValue, key: str, timeout: timedelta) -> asyncio.Task[KvEntry | None]:
    """A wait_for_value under way, once its watch is open on the server."""
    waiter = asyncio.create_task(kv.wait_for_value(key, timeout))

    async def watch_open() -> bool:
        return await consumer_count(kv) == 1

    await until(watch_open)
    return waiter


# --- get, put, delete, keys ------------------------------------------------------------------


async def test_a_put_reads_back_with_its_revision_and_time(kv: NatsKeyValue) -> None:
    before = datetime.now(UTC)

    revision = await kv.put("run-1.step-1", b'{"ok":true}')
    entry = await kv.get("run-1.step-1")

    assert entry is not None
    assert (entry.key, entry.value, entry.revision) == ("run-1.step-1", b'{"ok":true}', revision)
    assert before - timedelta(seconds=1) <= entry.created <= datetime.now(UTC)


async def test_revisions_are_per_bucket_and_a_delete_consumes_one(kv: NatsKeyValue) -> None:
    first = await kv.put("a", b"1")
    second = await kv.put("b", b"2")
    await kv.delete("a")
    after_delete = await kv.put("a", b"3")

    assert (first, second, after_delete) == (1, 2, 4)


async def test_an_absent_key_reads_as_none(kv: NatsKeyValue) -> None:
    assert await kv.get("never") is None


@pytest.mark.parametrize("value", [b'{"progress": 50}', b'"abc"', b"", b"\x00\xff"])
async def test_values_are_stored_byte_exact(kv: NatsKeyValue, value: bytes) -> None:
    await kv.put("run-1.step-1", value)

    entry = await kv.get("run-1.step-1")

    assert entry is not None
    assert entry.value == value


async def test_a_delete_leaves_a_marker_and_the_key_reads_as_absent(kv: NatsKeyValue) -> None:
    await kv.put("a", b"1")
    await kv.put("b", b"2")

    await kv.delete("a")
    marker = await kv.js.get_last_msg(kv.stream, f"$KV.{kv.name}.a")

    assert await kv.get("a") is None
    assert await kv.keys() == ["b"]
    assert marker.headers is not None
    assert marker.headers[KV_OP] == "DEL"


async def test_a_purged_key_reads_as_absent(kv: NatsKeyValue) -> None:
    await kv.put("a", b"1")

    await kv.bucket.purge("a")

    assert await kv.get("a") is None
    assert await kv.keys() == []


@pytest.mark.parametrize("direct", [True, False], ids=["direct gets", "no direct gets"])
async def test_get_many_reads_the_latest_value_of_each_key_that_has_one(
    js: JetStream, direct: bool
) -> None:
    async with fresh_bucket(js, direct=direct) as kv:
        await kv.put("a", b"1")
        await kv.put("b", b"2")
        await kv.put("a", b"3")
        await kv.put("c", b"4")
        await kv.delete("c")
        await kv.put("d", b"5")
        await kv.bucket.purge("d")

        found = await kv.get_many(["a", "b", "c", "d", "never", "a"])

    assert {key: (e.key, e.value, e.revision) for key, e in found.items()} == {
        "a": ("a", b"3", 3),
        "b": ("b", b"2", 2),
    }


async def test_get_many_reads_more_keys_than_one_batched_get_asks_for(kv: NatsKeyValue) -> None:
    keys = [f"run-{n}.step" for n in range(KEYS_PER_READ * 2 + 3)]
    stored = keys[::7] + keys[-1:]
    for key in stored:
        await kv.put(key, key.encode())

    found = await kv.get_many(keys)

    assert {key: entry.value for key, entry in found.items()} == {k: k.encode() for k in stored}


async def test_get_many_of_no_keys_asks_nothing(kv: NatsKeyValue) -> None:
    gone = attrs.evolve(kv, stream=f"KV_{bucket_name('gone')}")

    assert await gone.get_many([]) == {}


async def test_get_many_from_a_stream_that_is_gone_faults_as_get_does(kv: NatsKeyValue) -> None:
    gone = attrs.evolve(kv, stream=f"KV_{bucket_name('gone')}")
    with pytest.raises(DomainError) as single:
        await gone.get("a")

    with pytest.raises(DomainError, match=f"get 1 keys from KV {kv.name}") as many:
        await gone.get_many(["a"])

    assert type(many.value) is type(single.value)


class AsksAsAnOldServerIsAsked(JetStream):
    """Sends each batched direct get without its subjects: nats-server 2.15 answers that
    `408 Empty Request`, as 2.10.26 answers a batched get (checked by hand: it knows no
    `multi_last`). Counts the batched gets asked."""

    def __init__(self, conn: NatsClient) -> None:
        super().__init__(conn)
        self.asked = 0

    async def get_last_msgs(self, stream_name: str, subjects: list[str]) -> LastMessages:
        self.asked += 1
        return await super().get_last_msgs(stream_name, [])


class Refuses(JetStream):
    """Refuses each batched direct get with `code` and `description`."""

    def __init__(self, conn: NatsClient, code: int, description: str) -> None:
        super().__init__(conn)
        self.code, self.description = code, description

    async def get_last_msgs(self, stream_name: str, subjects: list[str]) -> LastMessages:
        raise APIError(code=self.code, description=self.description)


async def test_get_many_reads_a_key_at_a_time_once_the_server_refused_batched_gets(
    kv: NatsKeyValue, nats_client: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    await kv.delete("b")
    old_js = AsksAsAnOldServerIsAsked(nats_client)
    old_server = attrs.evolve(kv, js=old_js, batches=BatchedGets())

    first = await old_server.get_many(["a", "b", "c"])
    second = await old_server.get_many(["a", "c"])

    assert {key: entry.value for key, entry in first.items()} == {"a": b"1"}
    assert {key: entry.value for key, entry in second.items()} == {"a": b"1"}
    assert old_js.asked == 1
    assert caplog.text.count("refuses batched direct gets") == 1


@pytest.mark.parametrize(
    ("code", "description"), [(408, "Bad Request"), (500, "Empty Request"), (None, "")]
)
async def test_get_many_faults_on_any_other_refusal_of_a_batched_get(
    kv: NatsKeyValue, nats_client: NatsClient, code: int, description: str
) -> None:
    await kv.put("a", b"1")
    refusing = attrs.evolve(kv, js=Refuses(nats_client, code, description), batches=BatchedGets())

    with pytest.raises(BackendError, match="get 1 keys from KV"):
        await refusing.get_many(["a"])
    assert not refusing.batches.refused


async def test_get_many_reads_a_value_stored_with_a_status_header(kv: NatsKeyValue) -> None:
    await kv.js.publish(f"$KV.{kv.name}.b", b"2", headers={"Status": "ok"})
    await kv.put("a", b"1")

    found = await kv.get_many(["a", "b"])

    assert {key: entry.value for key, entry in found.items()} == {"a": b"1", "b": b"2"}


class StopsHalfway(JetStream):
    """Answers a batched direct get as a server that stops once it has sent its `max_pending`
    bytes (64 MB by default; checked by hand with 4 MB and 100 values of 60 KB: 70 sent,
    then the end of the batch with Nats-Num-Pending 30): the real answer for the first half
    of the subjects, and the rest counted as left out."""

    async def get_last_msgs(self, stream_name: str, subjects: list[str]) -> LastMessages:
        half = len(subjects) // 2
        sent = await super().get_last_msgs(stream_name, subjects[:half])
        return LastMessages(sent.messages, left_out=len(subjects) - half)


async def test_get_many_reads_what_a_batched_get_left_out_on_its_own(
    kv: NatsKeyValue, nats_client: NatsClient
) -> None:
    keys = [f"k{n}" for n in range(10)]
    for key in keys:
        await kv.put(key, key.encode())
    await kv.delete("k7")
    cut_short = attrs.evolve(kv, js=StopsHalfway(nats_client))

    found = await cut_short.get_many(keys)

    assert {key: entry.value for key, entry in found.items()} == {
        key: key.encode() for key in keys if key != "k7"
    }


async def test_a_batched_get_that_sent_everything_left_nothing_out(kv: NatsKeyValue) -> None:
    await kv.put("a", b"1")

    answer = await kv.js.get_last_msgs(kv.stream, [f"$KV.{kv.name}.a", f"$KV.{kv.name}.b"])

    assert ([msg.data for msg in answer.messages], answer.left_out) == ([b"1"], 0)


async def test_get_many_checks_every_key(kv: NatsKeyValue) -> None:
    with pytest.raises(InvalidRequestError):
        await kv.get_many(["a", "not a key"])


async def test_an_empty_bucket_has_no_keys(kv: NatsKeyValue) -> None:
    assert await kv.keys() == []
    assert await kv.entries() == []


async def test_keys_and_entries_list_the_keys_holding_a_value(kv: NatsKeyValue) -> None:
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    await kv.put("a", b"3")
    await kv.put("c", b"4")
    await kv.delete("c")

    keys = await kv.keys()
    entries = await kv.entries()

    assert sorted(keys) == ["a", "b"]
    assert sorted((e.key, e.value, e.revision) for e in entries) == [("a", b"3", 3), ("b", b"2", 2)]


async def test_latest_reads_every_value_through_one_consumer_it_removes_after(
    kv: NatsKeyValue,
) -> None:
    await kv.put("a", b"1")
    await kv.put("run-1.s1", b"2")
    await kv.put("a", b"3")
    await kv.put("c", b"4")
    await kv.delete("c")
    await kv.put("d", b"5")
    await kv.bucket.purge("d")
    before = await kv.entries()

    latest = await kv.latest()

    pairs = zip(
        sorted(latest, key=lambda e: e.key), sorted(before, key=lambda e: e.key), strict=True
    )
    # nats-py reads a delivered message's time as float seconds: equal to a microsecond.
    assert all(abs(got.created - read.created) <= timedelta(microseconds=1) for got, read in pairs)
    assert sorted((e.key, e.value, e.revision) for e in latest) == [
        ("a", b"3", 3),
        ("run-1.s1", b"2", 2),
    ]
    assert await consumer_count(kv) == 0


async def test_latest_reads_a_bucket_larger_than_one_batch(kv: NatsKeyValue) -> None:
    await asyncio.gather(*(kv.put(f"k{n}", str(n).encode()) for n in range(1_500)))

    latest = await kv.latest()

    assert sorted(int(e.value) for e in latest) == list(range(1_500))


async def test_latest_of_an_empty_bucket_is_empty(kv: NatsKeyValue) -> None:
    assert await kv.latest() == []
    assert await consumer_count(kv) == 0


async def test_an_entry_reads_as_absent_once_the_bucket_ttl_has_passed(
    js: JetStream,
) -> None:
    async with fresh_bucket(js, ttl=timedelta(seconds=1)) as kv:
        await kv.put("w1", b"{}")
        fresh = await kv.get("w1")

        async def expired() -> bool:
            return await kv.get("w1") is None

        await until(expired, within_s=3)

    assert fresh is not None


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", "é"])
async def test_a_key_outside_the_kv_alphabet_is_a_client_mistake(
    kv: NatsKeyValue, key: str
) -> None:
    with pytest.raises(InvalidRequestError):
        await kv.get(key)
    with pytest.raises(InvalidRequestError):
        await kv.put(key, b"1")
    with pytest.raises(InvalidRequestError):
        await kv.delete(key)
    with pytest.raises(InvalidRequestError):
        await kv.wait_for_value(key, SHORT)


# --- compare-and-set -------------------------------------------------------------------------


async def test_update_writes_only_over_the_latest_revision(kv: NatsKeyValue) -> None:
    created = await kv.update("k", b"1", last=0)
    assert created is not None

    stale = await kv.update("k", b"2", last=0)
    updated = await kv.update("k", b"3", last=created)

    entry = await kv.get("k")
    assert stale is None
    assert updated is not None
    assert entry is not None
    assert (entry.value, entry.revision) == (b"3", updated)


async def test_a_delete_marker_is_a_revision_that_update_must_name(kv: NatsKeyValue) -> None:
    revision = await kv.put("k", b"1")
    await kv.delete("k")

    assert await kv.update("k", b"2", last=0) is None
    assert await kv.update("k", b"2", last=revision) is None
    assert await kv.update("k", b"2", last=revision + 1) == revision + 2


async def test_delete_at_deletes_only_the_named_revision(kv: NatsKeyValue) -> None:
    old = await kv.put("k", b"1")
    new = await kv.put("k", b"2")

    refused = await kv.delete_at("k", last=old)
    kept = await kv.get("k")
    accepted = await kv.delete_at("k", last=new)

    assert (refused, accepted) == (False, True)
    assert kept is not None
    assert kept.value == b"2"
    assert await kv.get("k") is None


# --- wait_for_value --------------------------------------------------------------------------


async def test_wait_for_value_returns_the_current_value_at_once(kv: NatsKeyValue) -> None:
    revision = await kv.put("run-1.go", b'"now"')

    waited = await kv.wait_for_value("run-1.go", LONG)
    immediate = await kv.wait_for_value("run-1.go", timedelta(0))

    assert waited is not None
    assert immediate == waited
    assert (waited.value, waited.revision) == (b'"now"', revision)


async def test_wait_for_value_wakes_on_a_put(kv: NatsKeyValue) -> None:
    waiter = await watching(kv, "run-1.go", LONG)

    revision = await kv.put("run-1.go", b'{"go":1}')
    entry = await waiter

    assert entry is not None
    assert (entry.key, entry.value, entry.revision) == ("run-1.go", b'{"go":1}', revision)


async def test_wait_for_value_ignores_other_keys_deletes_and_purges(kv: NatsKeyValue) -> None:
    await kv.put("run-1.go", b"old")
    await kv.delete("run-1.go")
    waiter = await watching(kv, "run-1.go", LONG)

    await kv.put("run-1.other", b"not this key")
    await kv.delete("run-1.go")
    await kv.bucket.purge("run-1.go")
    revision = await kv.put("run-1.go", b"new")
    entry = await waiter

    assert entry is not None
    assert (entry.value, entry.revision) == (b"new", revision)


async def test_wait_for_value_times_out_on_a_deleted_key(kv: NatsKeyValue) -> None:
    await kv.put("run-1.go", b"old")
    await kv.delete("run-1.go")
    started = time.monotonic()

    entry = await kv.wait_for_value("run-1.go", SHORT)

    assert entry is None
    assert time.monotonic() - started >= SHORT.total_seconds()


async def test_wait_for_value_with_no_time_left_answers_absent_at_once(kv: NatsKeyValue) -> None:
    assert await kv.wait_for_value("run-1.go", timedelta(0)) is None
    assert await consumer_count(kv) == 0


async def test_the_watch_is_stopped_after_a_timeout_and_after_a_value(kv: NatsKeyValue) -> None:
    async def no_consumers() -> bool:
        return await consumer_count(kv) == 0

    timed_out = await kv.wait_for_value("run-1.go", SHORT)
    await until(no_consumers)
    waiter = await watching(kv, "run-1.go", LONG)
    await kv.put("run-1.go", b"1")
    await waiter
    await until(no_consumers)

    assert timed_out is None


async def test_a_cancelled_wait_stops_its_watch(kv: NatsKeyValue) -> None:
    async def no_consumers() -> bool:
        return await consumer_count(kv) == 0

    waiter = await watching(kv, "run-1.go", LONG)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await until(no_consumers)


# --- NatsBuckets and provisioning ------------------------------------------------------------


async def test_a_missing_bucket_reads_as_none_until_it_is_created(
    own_js: JetStream,
) -> None:
    buckets = NatsBuckets(own_js, recheck_after=timedelta(0))
    before = await buckets.signals()

    await own_js.create_key_value(KeyValueConfig(bucket=SIGNALS_BUCKET))
    after = await buckets.signals()
    again = await buckets.signals()

    assert before is None
    assert after is not None
    assert again is after
    assert after.name == SIGNALS_BUCKET


async def test_a_missing_bucket_is_looked_up_again_only_after_a_while(
    own_js: JetStream,
) -> None:
    buckets = NatsBuckets(own_js, recheck_after=timedelta(minutes=1))
    await buckets.checkpoints()

    await own_js.create_key_value(KeyValueConfig(bucket=CHECKPOINTS_BUCKET))

    assert await buckets.checkpoints() is None
    assert await NatsBuckets(own_js).checkpoints() is not None


async def test_provisioning_creates_the_engine_buckets_as_dagnats_does(
    own_js: JetStream,
) -> None:
    await provision_buckets(own_js)
    buckets = NatsBuckets(own_js)

    for bound, ttl in [
        (await buckets.workers(), WORKERS_TTL.total_seconds()),
        (await buckets.checkpoints(), 0),  # no TTL
        (await buckets.signals(), 0),
    ]:
        assert bound is not None
        status = await bound.bucket.status()
        assert (status.ttl, status.history, bound.direct) == (ttl, 1, True)


async def test_provisioning_leaves_an_existing_bucket_unchanged(
    own_js: JetStream,
) -> None:
    existing = KeyValueConfig(bucket=CHECKPOINTS_BUCKET, ttl=3600, history=5, description="ours")
    kept = await own_js.create_key_value(existing)
    await kept.put("run-1.step-1", b"{}")

    await provision_buckets(own_js)
    await provision_buckets(own_js)
    status = await (await own_js.key_value(CHECKPOINTS_BUCKET)).status()

    assert (status.ttl, status.history, status.values) == (3600, 5, 1)
    assert status.stream_info.config.description == "ours"


async def test_the_lease_bucket_is_created_once_with_its_ttl(own_js: JetStream) -> None:
    await ensure_leases_bucket(own_js, timedelta(hours=1))
    await ensure_leases_bucket(own_js, timedelta(hours=2))

    status = await (await own_js.key_value(LEASES_BUCKET)).status()

    assert status.ttl == 3600
    assert not status.stream_info.config.allow_direct


async def test_the_poll_bucket_is_created_once_with_the_replay_window_as_ttl(
    own_js: JetStream,
) -> None:
    await ensure_polls_bucket(own_js)
    await ensure_polls_bucket(own_js)

    status = await (await own_js.key_value(POLLS_BUCKET)).status()

    assert status.ttl == 60
    assert not status.stream_info.config.allow_direct


async def test_values_put_through_the_engine_buckets_are_the_engines(
    own_js: JetStream,
) -> None:
    await provision_buckets(own_js)
    buckets: KeyValueBuckets = NatsBuckets(own_js)
    signals = await buckets.signals()
    assert signals is not None

    await signals.put("run-1.approve", b'"abc"')
    raw = await (await own_js.key_value(SIGNALS_BUCKET)).get("run-1.approve")

    assert raw.value == b'"abc"'
