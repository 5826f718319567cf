"""NatsEventLog and NatsStreams on a real nats-server: what the engine finds on the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Final

import attrs
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.codec import encode
from adapters.nats.events import NatsEventLog
from adapters.nats.streams import NatsStreams
from domain.errors import BackendError
from domain.models import (
    Event,
    FailureType,
    OutboundEvent,
    RawJson,
    RunId,
    StepFailed,
    StepId,
)
from tests.integration.jetstream import decode_event, history_stream, stored

pytestmark = pytest.mark.integration

MOMENT: Final = datetime(2026, 7, 19, 12, 0, 0, 123456, tzinfo=UTC)
TRACEPARENT: Final = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def stream(js: JetStreamContext, run_id: RunId, other_run: RunId) -> AsyncIterator[str]:
    async with history_stream(js, run_id, other_run) as name:
        yield name


@pytest.fixture
def log(js: JetStreamContext, stream: str) -> NatsEventLog:
    return NatsEventLog(js, encode, decode_event, stream=stream)


def started(run_id: RunId, step: str = "s1", attempt: int = 1) -> OutboundEvent:
    return OutboundEvent(
        event=Event(
            type="step.started",
            run_id=run_id,
            step_id=StepId(step),
            timestamp=MOMENT,
            attempt_number=attempt,
        ),
        msg_id=f"{run_id}.{step}.step.started.{attempt}",
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
    )


async def test_the_envelope_is_stored_as_the_codec_encodes_it_with_its_headers(
    log: NatsEventLog, js: JetStreamContext, stream: str, run_id: RunId
) -> None:
    outbound = started(run_id)

    await log.append(outbound)

    message = await js.get_msg(stream, seq=1, subject=f"history.{run_id}", next=True)
    assert message.subject == f"history.{run_id}"
    assert message.data == encode(outbound.event)
    assert message.data == (
        b'{"type":"step.started","run_id":"%s","step_id":"s1",'
        b'"timestamp":"2026-07-19T12:00:00.123456Z","attempt_number":1}' % run_id.encode()
    )
    assert message.headers is not None
    assert {k: message.headers[k] for k in ("Nats-Msg-Id", "traceparent", "tracestate")} == {
        "Nats-Msg-Id": f"{run_id}.s1.step.started.1",
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=1",
    }


async def test_a_failure_payload_is_stored_in_go_key_order(
    log: NatsEventLog, js: JetStreamContext, stream: str, run_id: RunId
) -> None:
    failed = Event(
        type="step.failed",
        run_id=run_id,
        step_id=StepId("s1"),
        timestamp=MOMENT,
        payload=StepFailed(error="boom", failure_type=FailureType.RETRY_AFTER, retry_after_ms=250),
        attempt_number=2,
    )

    await log.append(OutboundEvent(event=failed, msg_id=f"{run_id}.s1.step.failed.2"))

    message = await js.get_msg(stream, seq=1, subject=f"history.{run_id}", next=True)
    assert message.data is not None
    assert (
        b'"payload":{"error":"boom","failure_type":"retry_after","retry_after_ms":250},'
        b'"attempt_number":2}'
    ) in message.data


async def test_a_duplicate_msg_id_within_the_window_is_not_stored_again(
    log: NatsEventLog, js: JetStreamContext, stream: str, run_id: RunId
) -> None:
    first = await log.append(started(run_id))
    again = await log.append(started(run_id))

    assert (first, again) == (True, False)
    assert await stored(js, stream, f"history.{run_id}") == 1


async def test_an_empty_msg_id_is_never_a_duplicate(log: NatsEventLog, run_id: RunId) -> None:
    anonymous = attrs.evolve(started(run_id), msg_id="")

    outcomes = [await log.append(anonymous), await log.append(anonymous)]

    assert outcomes == [True, True]
    assert len(await log.read(run_id)) == 2


async def test_read_returns_the_runs_events_in_append_order(
    log: NatsEventLog, run_id: RunId, other_run: RunId
) -> None:
    await log.append(started(run_id, "s1"))
    await log.append(started(other_run, "s1"))
    await log.append(started(run_id, "s2"))
    await log.append(started(run_id, "s1", attempt=2))

    events = await log.read(run_id)

    assert [(e.step_id, e.attempt_number) for e in events] == [("s1", 1), ("s2", 1), ("s1", 2)]
    assert events[0] == started(run_id).event


async def test_read_of_a_run_without_events_ends_at_once(log: NatsEventLog, run_id: RunId) -> None:
    started_at = time.monotonic()

    assert await log.read(run_id) == []
    assert time.monotonic() - started_at < 1


async def test_read_refuses_a_message_that_is_not_an_event(
    log: NatsEventLog, js: JetStreamContext, run_id: RunId
) -> None:
    await js.publish(f"history.{run_id}", b"not an event")

    with pytest.raises(BackendError, match="is not an event"):
        await log.read(run_id)


async def test_a_stream_chunk_reaches_core_subscribers_and_is_stored_nowhere(
    nats_client: NatsClient, js: JetStreamContext, run_id: RunId
) -> None:
    subject = f"stream.{run_id}.s1"
    subscription = await nats_client.subscribe(subject)

    await NatsStreams(nats_client).publish(run_id, StepId("s1"), RawJson(b'{"progress":50}'))

    received = await subscription.next_msg(timeout=2)
    await subscription.unsubscribe()
    assert received.data == b'{"progress":50}'
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.find_stream_name_by_subject(subject)


async def test_appends_from_concurrent_callers_are_all_stored(
    log: NatsEventLog, run_id: RunId
) -> None:
    outcomes = await asyncio.gather(*(log.append(started(run_id, f"s{i}")) for i in range(20)))

    assert all(outcomes)
    assert len(await log.read(run_id)) == 20
