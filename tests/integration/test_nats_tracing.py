"""Trace context on the wire: from a task message's headers on TASK_QUEUES to the headers of
the events on WORKFLOW_HISTORY and of the stream chunks, through the bridge's spans."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Final

import attrs
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.tracing import DISPATCH_SPAN, RESOLVE_SPAN, OtelTracer
from adapters.wire import HISTORY_STREAM, history_subject, stream_subject
from app.embedded import EmbeddedNats
from domain.models import RawJson, RunId, TaskType, TraceContext
from domain.services.actions import ResolveRequest
from tests.integration.nats_harness import NatsHarness, close_harness, open_harness

pytestmark = pytest.mark.integration

WORK: Final = TaskType(f"t{uuid.uuid4().hex[:10]}.work")
TASK_TRACEPARENT: Final = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACEPARENT: Final = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def bridge(nats_server: EmbeddedNats, provider: TracerProvider) -> AsyncIterator[NatsHarness]:
    harness = await open_harness(nats_server.url)
    tracer = OtelTracer.of(provider)
    harness.poll = attrs.evolve(harness.poll, tracer=tracer)
    harness.resolve = attrs.evolve(harness.resolve, tracer=tracer)
    yield harness
    await close_harness(harness, WORK)


def traceparent_of(exporter: InMemorySpanExporter, name: str) -> str:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return _rendered(span)


def _rendered(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def history_headers(bridge: NatsHarness, run_id: RunId) -> list[dict[str, str]]:
    """The trace headers of the first two messages on history.<run>, in order."""
    headers: list[dict[str, str]] = []
    seq = 0
    for _ in range(2):
        message = await bridge.js.get_msg(
            HISTORY_STREAM, seq=seq + 1, subject=history_subject(run_id), next=True
        )
        seq = message.seq or 0
        stored = message.headers or {}
        headers.append({k: v for k, v in stored.items() if k in ("traceparent", "tracestate")})
    return headers


async def publish_task(bridge: NatsHarness, run_id: RunId) -> None:
    await bridge.queue.publish_raw(
        WORK,
        b'{"run_id":"%s","step_id":"s"}' % run_id.encode(),
        run_id=run_id,
        msg_id=f"{run_id}.s.queued",
        headers={"traceparent": TASK_TRACEPARENT, "tracestate": "engine=1"},
    )


async def test_the_trace_of_a_task_message_reaches_the_poll_answer_and_the_history_headers(
    bridge: NatsHarness, exporter: InMemorySpanExporter
) -> None:
    run_id = RunId(f"run{uuid.uuid4().hex[:12]}")
    await publish_task(bridge, run_id)

    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve(
        task.task_id,
        ResolveRequest(action="complete"),
        TraceContext(traceparent=CALLER_TRACEPARENT),
    )

    dispatch = traceparent_of(exporter, DISPATCH_SPAN)
    resolve = traceparent_of(exporter, RESOLVE_SPAN)
    assert dispatch.split("-")[1] == TASK_TRACEPARENT.split("-")[1]
    assert resolve.split("-")[1] == CALLER_TRACEPARENT.split("-")[1]
    assert (task.traceparent, task.tracestate) == (dispatch, "engine=1")
    assert await history_headers(bridge, run_id) == [
        {"traceparent": dispatch, "tracestate": "engine=1"},
        {"traceparent": resolve},
    ]


async def test_a_stream_chunk_carries_the_resolve_span_context(
    bridge: NatsHarness, exporter: InMemorySpanExporter
) -> None:
    run_id = RunId(f"run{uuid.uuid4().hex[:12]}")
    await publish_task(bridge, run_id)
    (task,) = await bridge.poll_now(WORK)
    subscription = await bridge.nc.subscribe(stream_subject(run_id, "s"))

    await bridge.resolve(
        task.task_id,
        ResolveRequest(action="stream", data=RawJson(b'{"progress":50}')),
        TraceContext(traceparent=CALLER_TRACEPARENT, tracestate="caller=1"),
    )

    chunk = await subscription.next_msg(timeout=5)
    await subscription.unsubscribe()
    assert chunk.data == b'{"progress":50}'
    assert chunk.headers == {
        "traceparent": traceparent_of(exporter, RESOLVE_SPAN),
        "tracestate": "caller=1",
    }
