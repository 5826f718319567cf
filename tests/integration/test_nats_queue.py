"""NatsTaskQueue on a real nats-server: the wire facts of TASK_QUEUES and its consumers.

Each test works under a prefix of its own on the shared TASK_QUEUES (see jetstream.py). Waits
for a real AckWait or NAK delay use a 1 s AckWait and sub-second delays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from adapters.nats import pulls
from adapters.nats.jsapi import pull_subject
from adapters.nats.queue import NatsTaskQueue, _Arrivals
from adapters.wire import consumer_filter, consumer_name, overlap_conflict
from app.embedded import EmbeddedNats
from domain.errors import BackendUnavailableError, ConsumerConflictError, DomainError
from domain.models import Delivery, StepId, TaskPayload, TaskType
from tests.integration.jetstream import TaskStream, stored, task_queue

pytestmark = pytest.mark.integration

NO_WAIT: Final = timedelta(0)
SHORT_ACK_WAIT: Final = timedelta(seconds=1)
LONG_ENOUGH: Final = timedelta(seconds=5)
"""A timeout that a passing test never reaches."""
WAKE_LIMIT_S: Final = 0.2
"""Slack over the 50 ms wake-up target, for a loaded test machine."""


@pytest.fixture
async def quick_queue(nats_client: NatsClient, stream: TaskStream) -> AsyncIterator[NatsTaskQueue]:
    """Its consumers get a 1 s AckWait."""
    async with task_queue(nats_client, stream, SHORT_ACK_WAIT) as created:
        yield created


@pytest.fixture
async def other_client(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    """A second connection, as another bridge replica or a restarted bridge has."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def publish(
    queue: NatsTaskQueue, stream: TaskStream, step: str, suffix: str = "email"
) -> None:
    task = TaskPayload(run_id=stream.run_id, step_id=StepId(step))
    await queue.publish_task(stream.type(suffix), task, msg_id=f"{stream.run_id}.{step}.queued")


async def fetch_one(queue: NatsTaskQueue, task_type: TaskType) -> Delivery:
    [delivery] = await queue.fetch(task_type, 1, LONG_ENOUGH)
    return delivery


def steps(deliveries: list[Delivery]) -> list[str]:
    return [d.task.step_id for d in deliveries if d.task is not None]


async def consumer(
    js: JetStreamContext, stream: TaskStream, task_type: TaskType
) -> api.ConsumerInfo:
    info: api.ConsumerInfo = await js.consumer_info(stream.name, consumer_name(task_type))
    return info


async def test_a_consumer_is_created_as_protocol_4_1_says(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    task_type = stream.type("send.email")

    await queue.fetch(task_type, 1, NO_WAIT)

    config = (await consumer(js, stream, task_type)).config
    assert config.name == config.durable_name == f"workers-{stream.prefix}-send-email"
    assert config.filter_subject == f"task.{stream.prefix}.send.email.>"
    assert config.ack_policy == api.AckPolicy.EXPLICIT
    assert config.deliver_policy == api.DeliverPolicy.ALL
    assert config.ack_wait == 300
    assert config.max_deliver == -1


async def test_an_existing_consumer_is_adopted_untouched_and_its_ack_wait_reported(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    task_type = stream.type()
    native = api.ConsumerConfig(
        name=consumer_name(task_type),
        durable_name=consumer_name(task_type),
        filter_subject=consumer_filter(task_type),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=42,
        max_ack_pending=7,
    )
    await js.add_consumer(stream.name, native)
    before = (await consumer(js, stream, task_type)).config
    await publish(queue, stream, "s1")

    delivery = await fetch_one(queue, task_type)

    assert delivery.ack_wait == timedelta(seconds=42)
    assert (await consumer(js, stream, task_type)).config == before


async def test_concurrent_first_users_both_adopt_the_consumer_that_won(
    nats_client: NatsClient, js: JetStreamContext, stream: TaskStream
) -> None:
    task_type = stream.type()
    async with (
        task_queue(nats_client, stream, timedelta(seconds=30)) as first,
        task_queue(nats_client, stream, timedelta(seconds=60)) as second,
    ):
        await publish(first, stream, "s1")
        await publish(first, stream, "s2")

        # Both look the consumer up before either creates it; the loser gets 10148 and adopts.
        got = await asyncio.gather(
            first.fetch(task_type, 1, LONG_ENOUGH), second.fetch(task_type, 1, LONG_ENOUGH)
        )

    actual = timedelta(seconds=(await consumer(js, stream, task_type)).config.ack_wait or 0)
    assert [d.ack_wait for deliveries in got for d in deliveries] == [actual, actual]


async def test_two_types_with_one_sanitised_name_conflict_naming_both_filters(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await queue.fetch(stream.type("send.email"), 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await queue.fetch(stream.type("send-email"), 1, NO_WAIT)

    assert str(caught.value) == (
        f'consumer "workers-{stream.prefix}-send-email" already serves filter '
        f"task.{stream.prefix}.send.email.> but this poll needs task.{stream.prefix}.send-email.>: "
        "two task types sanitize to the same durable name (dots collapse to hyphens) — rename "
        "one of them"
    )


@pytest.mark.parametrize(("first", "second"), [("a", "a.b"), ("a.b", "a")])
async def test_an_overlapping_filter_conflicts_on_the_work_queue_naming_both_filters(
    queue: NatsTaskQueue, stream: TaskStream, first: str, second: str
) -> None:
    await queue.fetch(stream.type(first), 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await queue.wait_ready([stream.type(second)], NO_WAIT)

    wanted = consumer_filter(stream.type(second))
    blocking = consumer_filter(stream.type(first))
    assert str(caught.value) == overlap_conflict(
        consumer_name(stream.type(second)), wanted, blocking
    )
    assert blocking in str(caught.value)
    assert wanted in str(caught.value)


async def test_a_native_grouped_consumer_blocks_the_ungrouped_type(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    grouped = f"task.{stream.prefix}.email.group-1.>"
    await js.add_consumer(
        stream.name,
        api.ConsumerConfig(durable_name=f"native-{stream.prefix}", filter_subject=grouped),
    )

    with pytest.raises(ConsumerConflictError, match=f"overlapping filter {grouped} "):
        await queue.fetch(stream.type(), 1, NO_WAIT)


async def test_a_consumer_deleted_under_the_queue_is_created_again_after_one_fault(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    await queue.fetch(stream.type(), 1, NO_WAIT)
    await js.delete_consumer(stream.name, consumer_name(stream.type()))
    await publish(queue, stream, "s1")

    with pytest.raises(BackendUnavailableError, match="the consumer is gone"):
        await queue.fetch(stream.type(), 1, NO_WAIT)
    deliveries = await queue.fetch(stream.type(), 1, NO_WAIT)

    assert steps(deliveries) == ["s1"]


async def test_every_poll_waiting_on_a_consumer_deleted_under_it_stops_waiting(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    waiting = [
        asyncio.create_task(queue.wait_ready([stream.type()], LONG_ENOUGH)) for _ in range(3)
    ]
    await pulls_waiting(js, stream, stream.type())
    started = time.monotonic()

    await js.delete_consumer(stream.name, consumer_name(stream.type()))
    ended = await asyncio.gather(*waiting, return_exceptions=True)

    assert time.monotonic() - started < LONG_ENOUGH.total_seconds() / 2
    assert not [outcome for outcome in ended if not isinstance(outcome, DomainError | None)]
    await publish(queue, stream, "s1")
    assert steps(await queue.fetch(stream.type(), 1, LONG_ENOUGH)) == ["s1"]


async def test_fetch_returns_a_partial_batch_at_once(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await publish(queue, stream, "s1")
    await publish(queue, stream, "s2")
    started = time.monotonic()

    deliveries = await queue.fetch(stream.type(), 5, timedelta(seconds=30))

    assert steps(deliveries) == ["s1", "s2"]
    assert time.monotonic() - started < 1


async def test_fetch_never_pulls_more_than_it_hands_out(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    for step in ("s1", "s2", "s3"):
        await publish(queue, stream, step)

    first = await queue.fetch(stream.type(), 2, NO_WAIT)

    info = await consumer(js, stream, stream.type())
    assert steps(first) == ["s1", "s2"]
    assert (info.num_ack_pending, info.num_pending) == (2, 1)
    assert steps(await queue.fetch(stream.type(), 5, NO_WAIT)) == ["s3"]


async def test_fetch_answers_at_once_when_the_consumer_is_at_its_max_ack_pending(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    task_type = stream.type()
    limited = api.ConsumerConfig(
        durable_name=consumer_name(task_type),
        filter_subject=consumer_filter(task_type),
        max_ack_pending=1,
    )
    await js.add_consumer(stream.name, limited)
    await publish(queue, stream, "s1")
    await publish(queue, stream, "s2")
    first = await fetch_one(queue, task_type)
    started = time.monotonic()

    held_back = await queue.fetch(task_type, 1, NO_WAIT)
    answered_in = time.monotonic() - started
    await queue.ack(first.handle)

    assert held_back == []
    assert answered_in < 0.5
    assert steps([await fetch_one(queue, task_type)]) == ["s2"]


async def test_fetch_without_a_timeout_returns_nothing_at_once(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    started = time.monotonic()

    assert await queue.fetch(stream.type(), 3, NO_WAIT) == []
    assert time.monotonic() - started < 1


async def test_a_delivery_carries_the_message_facts(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    body = b'{"run_id":"r","step_id":"s","attempt":3,"input":{"a": 1}}'
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    await queue.publish_raw(
        stream.type(), body, run_id=stream.run_id, msg_id=f"{stream.run_id}.s.queued", headers=trace
    )

    delivery = await fetch_one(queue, stream.type())

    assert delivery.handle.startswith(f"$JS.ACK.{stream.name}.{consumer_name(stream.type())}.1.")
    assert delivery.delivery_count == 1
    assert delivery.task_type == stream.type()
    assert delivery.task is not None
    assert (delivery.task.attempt, delivery.task.input) == (3, b'{"a": 1}')
    assert delivery.headers == trace  # JetStream's own Nats-* headers are left out


async def test_an_undecodable_body_is_delivered_with_the_problem(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await queue.publish_raw(
        stream.type(), b"not json", run_id=stream.run_id, msg_id=f"{stream.run_id}.s.queued"
    )

    delivery = await fetch_one(queue, stream.type())

    assert delivery.task is None
    assert delivery.problem.startswith("invalid JSON")


async def test_publish_task_goes_to_the_type_and_run_subject_with_its_msg_id(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    task = TaskPayload(run_id=stream.run_id, step_id=StepId("s1"))
    msg_id = f"{stream.run_id}.s1.queued"

    await queue.publish_task(stream.type(), task, msg_id=msg_id)
    await queue.publish_task(stream.type(), task, msg_id=msg_id)

    message = await js.get_msg(stream.name, seq=1, subject=stream.subjects, next=True)
    assert await stored(js, stream.name, stream.subjects) == 1
    assert message.subject == f"task.{stream.prefix}.email.{stream.run_id}"
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == msg_id


async def test_wait_ready_wakes_on_a_publish(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    waiting = await waiting_on_the_type(queue, js, stream)

    published = time.monotonic()
    await publish(queue, stream, "s1")
    await waiting

    assert time.monotonic() - published < WAKE_LIMIT_S
    assert steps(await queue.fetch(stream.type(), 5, NO_WAIT)) == ["s1"]


async def pull_requests(client: NatsClient, stream: TaskStream) -> list[bytes]:
    """Pull requests sent from now on for the test's default type, as they are seen."""
    seen: list[bytes] = []

    async def note(msg: Msg) -> None:
        seen.append(msg.data)

    await client.subscribe(pull_subject(stream.name, consumer_name(stream.type())), cb=note)
    await client.flush()
    return seen


async def test_a_wake_up_with_nothing_pending_behind_it_is_handed_out_without_another_pull(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream, other_client: NatsClient
) -> None:
    waiting = await waiting_on_the_type(queue, js, stream)
    requests = await pull_requests(other_client, stream)

    await publish(queue, stream, "s1")
    await waiting
    delivered = await queue.fetch(stream.type(), 5, NO_WAIT)
    await other_client.flush()

    assert steps(delivered) == ["s1"]
    assert requests == []


async def test_a_wake_up_with_messages_pending_behind_it_pulls_them_too(
    queue: NatsTaskQueue, stream: TaskStream, other_client: NatsClient
) -> None:
    for step in ("s1", "s2", "s3"):
        await publish(queue, stream, step)
    requests = await pull_requests(other_client, stream)

    await queue.wait_ready([stream.type()], LONG_ENOUGH)
    delivered = await queue.fetch(stream.type(), 5, NO_WAIT)
    await other_client.flush()

    assert steps(delivered) == ["s1", "s2", "s3"]
    assert [b'"no_wait": true' in request for request in requests] == [False, True]


async def test_a_waiting_request_that_expires_is_renewed_without_waking_the_waiter(
    queue: NatsTaskQueue,
    stream: TaskStream,
    other_client: NatsClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pulls, "LONG_PULL_S", 0.1)
    wake_ups: list[None] = []
    notify = _Arrivals.notify

    def counted(arrivals: _Arrivals) -> None:
        wake_ups.append(None)
        notify(arrivals)

    monkeypatch.setattr(_Arrivals, "notify", counted)
    renewed = asyncio.Event()
    requests: list[bytes] = []

    async def note(msg: Msg) -> None:
        requests.append(msg.data)
        if len(requests) >= 3:
            renewed.set()

    await other_client.subscribe(pull_subject(stream.name, consumer_name(stream.type())), cb=note)
    await other_client.flush()

    waiting = asyncio.create_task(queue.wait_ready([stream.type()], LONG_ENOUGH))
    async with asyncio.timeout(LONG_ENOUGH.total_seconds()):
        await renewed.wait()
    asleep = (len(wake_ups), waiting.done())
    await publish(queue, stream, "s1")
    async with asyncio.timeout(LONG_ENOUGH.total_seconds()):
        await waiting

    assert asleep == (0, False)
    assert wake_ups
    assert steps(await queue.fetch(stream.type(), 5, NO_WAIT)) == ["s1"]


async def test_a_fetch_while_the_waiting_request_is_out_sends_no_pull_of_its_own(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream, other_client: NatsClient
) -> None:
    waiting = await waiting_on_the_type(queue, js, stream)
    requests = await pull_requests(other_client, stream)

    fetched = await queue.fetch(stream.type(), 5, NO_WAIT)
    await publish(queue, stream, "s1")
    await waiting
    await other_client.flush()

    assert fetched == []
    assert requests == []
    assert steps(await queue.fetch(stream.type(), 5, NO_WAIT)) == ["s1"]


async def test_after_a_reconnection_a_fetch_pulls_again_whatever_request_was_out(
    queue: NatsTaskQueue,
    js: JetStreamContext,
    stream: TaskStream,
    other_client: NatsClient,
    nats_client: NatsClient,
) -> None:
    """A reconnection may have lost the waiting request on the server: nats-py counts each
    in `stats["reconnects"]`, counted up here as a reconnection would."""
    waiting = await waiting_on_the_type(queue, js, stream)
    requests = await pull_requests(other_client, stream)

    nats_client.stats["reconnects"] += 1
    fetched = await queue.fetch(stream.type(), 5, NO_WAIT)
    await other_client.flush()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    assert fetched == []
    assert [b'"no_wait": true' in request for request in requests] == [True]


async def test_no_waiting_request_is_renewed_once_its_waiters_have_left(
    queue: NatsTaskQueue,
    js: JetStreamContext,
    stream: TaskStream,
    other_client: NatsClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pulls, "LONG_PULL_S", 0.1)
    await queue.wait_ready([stream.type()], timedelta(milliseconds=150))
    puller = await queue._puller(stream.type())
    last = puller._waiting
    assert last is not None
    requests = await pull_requests(other_client, stream)

    async with asyncio.timeout(LONG_ENOUGH.total_seconds()):
        await last.ended.wait()
    await other_client.flush()

    assert requests == []
    assert puller._waiting is last


async def test_a_waiting_request_whose_end_never_comes_wakes_the_waiter_at_its_deadline(
    queue: NatsTaskQueue,
    js: JetStreamContext,
    stream: TaskStream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As when the connection, and the server with it, lost the request: it is never sent."""
    monkeypatch.setattr(pulls, "LONG_PULL_S", 0.1)
    monkeypatch.setattr(pulls, "EXPIRY_GRACE_S", 0.1)
    send = pulls.TypePuller._request
    lost: list[str] = []

    async def lose_the_first(puller: pulls.TypePuller, pull: Any, body: Any) -> None:
        if pull.token.startswith("w.") and not lost:
            lost.append(pull.token)
            return
        await send(puller, pull, body)

    monkeypatch.setattr(pulls.TypePuller, "_request", lose_the_first)
    waiting = await waiting_on_the_type(queue, js, stream)
    published = time.monotonic()
    await publish(queue, stream, "s1")
    await waiting

    assert lost
    assert time.monotonic() - published < LONG_ENOUGH.total_seconds() / 2
    assert steps(await queue.fetch(stream.type(), 5, NO_WAIT)) == ["s1"]


async def test_a_waiting_request_that_could_not_be_sent_is_not_taken_for_one_in_flight(
    queue: NatsTaskQueue, stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    puller = await queue._puller(stream.type())

    async def unreachable(puller: pulls.TypePuller, pull: Any, body: Any) -> None:
        raise BackendUnavailableError("pull: NATS unavailable")

    monkeypatch.setattr(pulls.TypePuller, "_request", unreachable)

    with pytest.raises(BackendUnavailableError):
        await puller.keep_waiting(1.0)
    assert puller._waiting is None


async def test_a_message_of_one_type_wakes_no_poll_waiting_on_another(
    queue: NatsTaskQueue,
    js: JetStreamContext,
    stream: TaskStream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pulls, "LONG_PULL_S", LONG_ENOUGH.total_seconds())
    quiet, busy = stream.type("quiet"), stream.type()
    looks: list[str] = []
    keep_waiting = pulls.TypePuller.keep_waiting

    async def counted(puller: pulls.TypePuller, seconds: float) -> None:
        looks.append(puller.consumer)
        await keep_waiting(puller, seconds)

    monkeypatch.setattr(pulls.TypePuller, "keep_waiting", counted)
    waiting = asyncio.create_task(queue.wait_ready([quiet], LONG_ENOUGH))
    await pulls_waiting(js, stream, quiet)
    for step in ("s1", "s2", "s3"):
        await publish(queue, stream, step)
        await queue.wait_ready([busy], LONG_ENOUGH)
        assert steps(await queue.fetch(busy, 5, NO_WAIT)) == [step]
    quiet_looks = looks.count(consumer_name(quiet))
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    assert quiet_looks == 1


async def test_wait_ready_wakes_when_a_nak_delay_ends(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await publish(queue, stream, "s1")
    delivery = await fetch_one(queue, stream.type())

    await queue.nak(delivery.handle, timedelta(milliseconds=300))
    nakked = time.monotonic()
    await queue.wait_ready([stream.type()], LONG_ENOUGH)

    assert 0.3 - 0.05 < time.monotonic() - nakked < 0.3 + WAKE_LIMIT_S
    assert (await fetch_one(queue, stream.type())).delivery_count == 2


async def test_wait_ready_returns_at_its_timeout(queue: NatsTaskQueue, stream: TaskStream) -> None:
    started = time.monotonic()

    await queue.wait_ready([stream.type("a"), stream.type("b")], timedelta(milliseconds=300))

    assert 0.3 <= time.monotonic() - started < 0.3 + WAKE_LIMIT_S


async def test_an_unacked_delivery_is_redelivered_after_ack_wait(
    quick_queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await publish(quick_queue, stream, "s1")
    first = await fetch_one(quick_queue, stream.type())

    again = await fetch_one(quick_queue, stream.type())

    assert (first.delivery_count, again.delivery_count) == (1, 2)
    assert again.handle != first.handle


async def test_in_progress_postpones_the_redelivery(
    quick_queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await publish(quick_queue, stream, "s1")
    delivery = await fetch_one(quick_queue, stream.type())
    fetched = time.monotonic()
    await asyncio.sleep(0.6)  # real time must pass on the server's AckWait clock

    await quick_queue.in_progress(delivery.handle)
    early = await quick_queue.fetch(stream.type(), 1, timedelta(milliseconds=700))
    again = await fetch_one(quick_queue, stream.type())

    assert early == []
    assert time.monotonic() - fetched > 1.5
    assert again.delivery_count == 2


async def test_nak_with_a_delay_redelivers_after_the_delay(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    await publish(queue, stream, "s1")
    delivery = await fetch_one(queue, stream.type())

    await queue.nak(delivery.handle, timedelta(milliseconds=500))
    nakked = time.monotonic()
    during = await queue.fetch(stream.type(), 1, NO_WAIT)
    again = await fetch_one(queue, stream.type())

    assert during == []
    assert time.monotonic() - nakked > 0.45
    assert again.delivery_count == 2


@pytest.mark.parametrize("settle", ["ack", "term"])
async def test_ack_and_term_remove_the_message_from_the_work_queue(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream, settle: str
) -> None:
    await publish(queue, stream, "s1")
    delivery = await fetch_one(queue, stream.type())

    await getattr(queue, settle)(delivery.handle)
    await getattr(queue, settle)(delivery.handle)

    assert await stored(js, stream.name, stream.subjects) == 0


async def test_a_handle_settles_through_a_second_connection(
    queue: NatsTaskQueue, other_client: NatsClient, js: JetStreamContext, stream: TaskStream
) -> None:
    await publish(queue, stream, "s1")
    delivery = await fetch_one(queue, stream.type())

    async with task_queue(other_client, stream) as replica:
        await replica.in_progress(delivery.handle)
        await replica.ack(delivery.handle)

    assert await stored(js, stream.name, stream.subjects) == 0


async def test_a_message_pulled_for_a_cancelled_wait_is_handed_out_by_the_next_fetch(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> None:
    waiting = await waiting_on_the_type(queue, js, stream)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)

    await publish(queue, stream, "s1")
    delivery = await fetch_one(queue, stream.type())

    assert delivery.delivery_count == 1


async def test_a_message_pulled_but_not_fetched_is_released_without_delay(
    quick_queue: NatsTaskQueue,
    other_client: NatsClient,
    js: JetStreamContext,
    stream: TaskStream,
) -> None:
    waiting = asyncio.create_task(
        quick_queue.wait_ready([stream.type("a"), stream.type("b")], LONG_ENOUGH)
    )
    await pulls_waiting(js, stream, stream.type("a"), stream.type("b"))
    await publish(quick_queue, stream, "s1", "a")
    await waiting

    # b's waiting pull is still out and takes this one, but nobody here fetches b.
    await publish(quick_queue, stream, "s2", "b")
    async with task_queue(other_client, stream) as replica:
        delivery = await fetch_one(replica, stream.type("b"))

    assert delivery.delivery_count == 2


async def test_close_releases_what_was_pulled_but_not_handed_out(
    nats_client: NatsClient, other_client: NatsClient, stream: TaskStream
) -> None:
    async with task_queue(nats_client, stream) as closing:
        await publish(closing, stream, "s1")
        await closing.wait_ready([stream.type()], LONG_ENOUGH)

    async with task_queue(other_client, stream) as replica:
        delivery = await fetch_one(replica, stream.type())

    assert delivery.delivery_count == 2


async def waiting_on_the_type(
    queue: NatsTaskQueue, js: JetStreamContext, stream: TaskStream
) -> asyncio.Task[None]:
    """A wait_ready on the test's default type, once its waiting request is out."""
    waiting = asyncio.create_task(queue.wait_ready([stream.type()], LONG_ENOUGH))
    await pulls_waiting(js, stream, stream.type())
    return waiting


async def pulls_waiting(js: JetStreamContext, stream: TaskStream, *task_types: TaskType) -> None:
    """Return once each type's consumer exists and has a waiting pull request."""
    for task_type in task_types:
        while True:
            infos: list[api.ConsumerInfo] = await js.consumers_info(stream.name)
            if any(i.name == consumer_name(task_type) and i.num_waiting for i in infos):
                break
            await asyncio.sleep(0.01)  # JetStream has no event for a pull request arriving
