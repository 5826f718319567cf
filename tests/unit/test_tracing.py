"""Trace context through the bridge, recorded by the OpenTelemetry SDK's in-memory exporter:
task message -> `bridge.dispatch` -> poll item and step.started; resolve request ->
`bridge.resolve` -> the events it publishes (PROTOCOL.md 4.5, 7)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Final

import attrs
import pytest
from dependency_injector import providers
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from adapters.codec import encode
from adapters.tracing import DISPATCH_SPAN, OUTCOME, RESOLVE_SPAN, SCOPE, OtelTracer
from app.container import Container
from app.main import create_app
from domain.errors import (
    AlreadySettledError,
    BackendUnavailableError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from domain.models import (
    OutboundEvent,
    RawJson,
    RunId,
    StepId,
    TaskId,
    TaskPayload,
    TaskType,
    TraceContext,
)
from domain.ports import Tracer
from domain.services.actions import ResolveRequest
from domain.services.simulator import EnqueueCommand
from domain.tracing import (
    MAX_TRACESTATE_CHARS,
    TRACEPARENT_PATTERN,
    TRACESTATE_PATTERN,
    NoTracer,
    trace_context,
)
from tests.factories import Harness, UnreachableEventLog, memory_container

WORK: Final = TaskType("work")
TASK_TRACE_ID: Final = "0af7651916cd43dd8448eb211c80319c"
TASK_SPAN_ID: Final = "b7ad6b7169203331"
TASK_TRACEPARENT: Final = f"00-{TASK_TRACE_ID}-{TASK_SPAN_ID}-01"
CALLER_TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID: Final = "00f067aa0ba902b7"
CALLER_TRACEPARENT: Final = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"


@pytest.fixture
def bridge(provider: TracerProvider) -> Harness:
    return traced(Harness(), OtelTracer.of(provider))


def traced(harness: Harness, tracer: Tracer) -> Harness:
    harness.poll = attrs.evolve(harness.poll, tracer=tracer)
    harness.resolve = attrs.evolve(harness.resolve, tracer=tracer)
    return harness


async def publish(
    bridge: Harness, run_id: str = "r1", headers: dict[str, str] | None = None
) -> None:
    body = b'{"run_id":"%s","step_id":"s"}' % run_id.encode()
    await bridge.queue.publish_raw(
        WORK, body, run_id=RunId(run_id), msg_id=f"{run_id}.s.queued", headers=headers
    )


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parent_span_id(span: ReadableSpan) -> str:
    assert span.parent is not None
    return f"{span.parent.span_id:016x}"


def trace_id(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}"


def headers_of(bridge: Harness, event_type: str, run_id: str = "r1") -> dict[str, str]:
    (outbound,) = [o for o in bridge.events.outbound(RunId(run_id)) if o.event.type == event_type]
    return outbound.headers


async def test_a_task_with_trace_context_is_handed_out_in_a_dispatch_span_child_of_it(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge, headers={"traceparent": TASK_TRACEPARENT, "tracestate": "k=v"})

    (task,) = await bridge.poll_now(WORK)

    dispatch = only(exporter, DISPATCH_SPAN)
    assert (trace_id(dispatch), parent_span_id(dispatch)) == (TASK_TRACE_ID, TASK_SPAN_ID)
    assert dispatch.instrumentation_scope is not None
    assert dispatch.instrumentation_scope.name == SCOPE
    assert dict(dispatch.attributes or {}) == {"run_id": "r1", "step_id": "s", "attempt": 1}
    assert (task.traceparent, task.tracestate) == (traceparent_of(dispatch), "k=v")
    assert task.traceparent != TASK_TRACEPARENT
    assert headers_of(bridge, "step.started") == {
        "traceparent": traceparent_of(dispatch),
        "tracestate": "k=v",
    }


async def test_the_trace_context_of_a_task_body_counts_when_its_headers_have_none(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    task = TaskPayload(run_id=RunId("r1"), step_id=StepId("s"), traceparent=TASK_TRACEPARENT)
    await bridge.queue.publish_raw(WORK, encode(task), run_id=RunId("r1"), msg_id="r1.s.queued")

    await bridge.poll_now(WORK)

    assert trace_id(only(exporter, DISPATCH_SPAN)) == TASK_TRACE_ID


async def test_a_resolve_with_a_traceparent_continues_it_and_its_events_carry_the_resolve_span(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge, headers={"traceparent": TASK_TRACEPARENT})
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve(
        task.task_id,
        ResolveRequest(action="complete"),
        TraceContext(traceparent=CALLER_TRACEPARENT, tracestate="caller=1"),
    )

    resolve = only(exporter, RESOLVE_SPAN)
    assert (trace_id(resolve), parent_span_id(resolve)) == (CALLER_TRACE_ID, CALLER_SPAN_ID)
    assert dict(resolve.attributes or {}) == {"task_id": "r1.s", "action": "complete"}
    assert headers_of(bridge, "step.completed") == {
        "traceparent": traceparent_of(resolve),
        "tracestate": "caller=1",
    }


async def test_a_resolve_without_a_traceparent_continues_the_dispatch_span(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge, headers={"traceparent": TASK_TRACEPARENT})
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(task, "fail", error="boom")

    dispatch, resolve = only(exporter, DISPATCH_SPAN), only(exporter, RESOLVE_SPAN)
    assert trace_id(resolve) == TASK_TRACE_ID
    assert parent_span_id(resolve) == traceparent_of(dispatch).split("-")[2]
    assert headers_of(bridge, "step.failed") == {"traceparent": traceparent_of(resolve)}


async def test_a_resolve_that_is_the_clients_mistake_records_it_without_failing_its_span(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge)
    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "complete")

    with pytest.raises(InvalidRequestError):
        await bridge.resolve_action(task, "pause")
    with pytest.raises(AlreadySettledError):
        await bridge.resolve_action(task, "fail", error="too late")

    spans = [s for s in exporter.get_finished_spans() if s.name == RESOLVE_SPAN]
    assert [(s.attributes or {}).get(OUTCOME) for s in spans] == [None, "invalid", "conflict"]
    assert {s.status.status_code for s in spans} == {StatusCode.UNSET}
    assert not any(s.events for s in spans)


async def test_a_resolve_the_backend_fails_marks_its_span_failed(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge)
    (task,) = await bridge.poll_now(WORK)
    bridge.resolve = attrs.evolve(bridge.resolve, events=UnreachableEventLog())

    with pytest.raises(BackendUnavailableError):
        await bridge.resolve_action(task, "complete")

    resolve = only(exporter, RESOLVE_SPAN)
    assert resolve.status.status_code is StatusCode.ERROR
    assert (resolve.attributes or {}).get(OUTCOME) == "failed"
    assert [event.name for event in resolve.events] == ["exception"]


class RefusingLargeValues(UnreachableEventLog):
    """An event log whose server takes no value as large as the one sent."""

    async def append(self, outbound: OutboundEvent) -> bool:
        raise PayloadTooLargeError("publish event: larger than the NATS server's max_payload")


async def test_a_value_too_large_for_the_backend_is_the_clients_mistake_not_a_failed_span(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge)
    (task,) = await bridge.poll_now(WORK)
    bridge.resolve = attrs.evolve(bridge.resolve, events=RefusingLargeValues())

    with pytest.raises(PayloadTooLargeError):
        await bridge.resolve_action(task, "complete")

    resolve = only(exporter, RESOLVE_SPAN)
    assert resolve.status.status_code is StatusCode.UNSET
    assert (resolve.attributes or {}).get(OUTCOME) == "invalid"


async def test_a_stream_chunk_carries_the_resolve_span_context(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve(
        task.task_id,
        ResolveRequest(action="stream", data=RawJson(b'"chunk"')),
        TraceContext(traceparent=CALLER_TRACEPARENT, tracestate="caller=1"),
    )

    resolve = only(exporter, RESOLVE_SPAN)
    assert bridge.streams.chunk_headers(RunId("r1"), StepId("s")) == [
        {"traceparent": traceparent_of(resolve), "tracestate": "caller=1"}
    ]


async def test_a_dispatch_whose_step_started_is_not_stored_marks_its_span_failed(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge, headers={"traceparent": TASK_TRACEPARENT})
    bridge.poll = attrs.evolve(bridge.poll, events=UnreachableEventLog())

    with pytest.raises(BackendUnavailableError):
        await bridge.poll_now(WORK)

    dispatch = only(exporter, DISPATCH_SPAN)
    assert dispatch.status.status_code is StatusCode.ERROR
    assert trace_id(dispatch) == TASK_TRACE_ID


async def test_an_idle_poll_makes_no_span(bridge: Harness, exporter: InMemorySpanExporter) -> None:
    assert await bridge.poll_now(WORK) == []

    assert exporter.get_finished_spans() == ()


async def test_one_dispatch_span_per_task_handed_out(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    for run_id in ("r1", "r2", "r3"):
        await publish(bridge, run_id)

    tasks = await bridge.poll_now(WORK, max_tasks=3)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [DISPATCH_SPAN] * 3
    assert sorted(str(dict(s.attributes or {})["run_id"]) for s in spans) == ["r1", "r2", "r3"]
    assert {t.traceparent for t in tasks} == {traceparent_of(s) for s in spans}


async def test_with_a_recording_tracer_a_task_without_trace_context_starts_a_trace(
    bridge: Harness, exporter: InMemorySpanExporter
) -> None:
    await publish(bridge)

    (task,) = await bridge.poll_now(WORK)

    dispatch = only(exporter, DISPATCH_SPAN)
    assert dispatch.parent is None
    assert task.traceparent == traceparent_of(dispatch)


@pytest.mark.parametrize(
    "tracer", [NoTracer(), OtelTracer.of(trace.NoOpTracerProvider())], ids=["none", "api-only"]
)
async def test_without_an_sdk_a_task_without_trace_context_has_no_trace_keys(
    tracer: Tracer,
) -> None:
    bridge = traced(Harness(), tracer)
    await publish(bridge)

    tasks = await bridge.poll_now(WORK)

    (item,) = json.loads(encode(tasks))
    assert "traceparent" not in item
    assert "tracestate" not in item
    assert headers_of(bridge, "step.started") == {}


@pytest.mark.parametrize(
    "tracer", [NoTracer(), OtelTracer.of(trace.NoOpTracerProvider())], ids=["none", "api-only"]
)
async def test_without_an_sdk_the_task_trace_context_passes_through_unchanged(
    tracer: Tracer,
) -> None:
    bridge = traced(Harness(), tracer)
    await publish(bridge, headers={"traceparent": TASK_TRACEPARENT, "tracestate": "k=v"})

    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "complete")

    assert (task.traceparent, task.tracestate) == (TASK_TRACEPARENT, "k=v")
    assert headers_of(bridge, "step.completed")["traceparent"] == TASK_TRACEPARENT


async def test_an_enqueued_task_carries_its_trace_context_in_headers_and_body() -> None:
    bridge = Harness()
    command = EnqueueCommand(task_type=WORK, run_id=RunId("r1"), traceparent=TASK_TRACEPARENT)

    await bridge.enqueue(command)

    (delivery,) = await bridge.queue.fetch(WORK, 1, timedelta(0))
    assert delivery.headers == {"traceparent": TASK_TRACEPARENT}
    assert delivery.task is not None
    assert delivery.task.traceparent == TASK_TRACEPARENT


async def test_a_malformed_traceparent_is_not_enqueued() -> None:
    command = EnqueueCommand(task_type=WORK, traceparent="01-xyz")

    with pytest.raises(InvalidRequestError) as raised:
        await Harness().enqueue(command)

    assert raised.value.field == "traceparent"


async def test_an_error_quotes_only_the_start_of_a_long_malformed_traceparent() -> None:
    command = EnqueueCommand(task_type=WORK, traceparent="0" * 1_000_000)

    with pytest.raises(InvalidRequestError) as raised:
        await Harness().enqueue(command)

    assert len(str(raised.value)) < 200
    assert "1000000 characters" in str(raised.value)


@pytest.mark.parametrize(
    "tracestate",
    ["k=" + "v" * MAX_TRACESTATE_CHARS, "k=v\nother=1", "k=caf\u00e9"],
    ids=["too-long", "control-character", "not-ascii"],
)
async def test_a_malformed_tracestate_is_not_enqueued(tracestate: str) -> None:
    command = EnqueueCommand(task_type=WORK, traceparent=TASK_TRACEPARENT, tracestate=tracestate)

    with pytest.raises(InvalidRequestError) as raised:
        await Harness().enqueue(command)

    assert raised.value.field == "tracestate"
    assert len(str(raised.value)) < 200


async def test_an_enqueued_task_carries_its_tracestate() -> None:
    bridge = Harness()
    command = EnqueueCommand(
        task_type=WORK, run_id=RunId("r1"), traceparent=TASK_TRACEPARENT, tracestate="k=v,o=1"
    )

    await bridge.enqueue(command)

    (delivery,) = await bridge.queue.fetch(WORK, 1, timedelta(0))
    assert delivery.headers == {"traceparent": TASK_TRACEPARENT, "tracestate": "k=v,o=1"}


@pytest.mark.parametrize("tracestate", ["k=" + "v" * MAX_TRACESTATE_CHARS, "k=\x00"])
def test_a_malformed_tracestate_from_headers_is_dropped(tracestate: str) -> None:
    context = trace_context(TASK_TRACEPARENT, tracestate)

    assert context == TraceContext(traceparent=TASK_TRACEPARENT)


def traced_app(provider: TracerProvider) -> tuple[Container, Litestar]:
    container = memory_container()
    container.tracer.override(providers.Object(OtelTracer.of(provider)))
    return container, create_app(container)


async def test_over_http_a_trace_goes_from_the_enqueued_task_to_the_poll_answer_and_events(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    container, app = traced_app(provider)
    async with AsyncTestClient(app) as client:
        enqueued = await client.post(
            "/v1/sim/tasks",
            json={"task_type": "work", "run_id": "r1", "traceparent": TASK_TRACEPARENT},
        )
        polled = await client.post("/v1/tasks/poll", json={"task_types": ["work"]})
        (item,) = polled.json()
        resolved = await client.post(
            f"/v1/tasks/{item['task_id']}/resolve",
            json={"action": "complete", "lease_id": item["lease_id"]},
            headers={"traceparent": CALLER_TRACEPARENT},
        )
        outbound = container.history().outbound(RunId("r1"))

    assert (enqueued.status_code, polled.status_code, resolved.status_code) == (201, 200, 200)
    dispatch, resolve = only(exporter, DISPATCH_SPAN), only(exporter, RESOLVE_SPAN)
    assert (trace_id(dispatch), parent_span_id(dispatch)) == (TASK_TRACE_ID, TASK_SPAN_ID)
    assert item["traceparent"] == traceparent_of(dispatch)
    assert "tracestate" not in item
    assert (trace_id(resolve), parent_span_id(resolve)) == (CALLER_TRACE_ID, CALLER_SPAN_ID)
    assert [(o.event.type, o.headers["traceparent"]) for o in outbound[:2]] == [
        ("step.started", traceparent_of(dispatch)),
        ("step.completed", traceparent_of(resolve)),
    ]


async def test_over_http_a_malformed_resolve_traceparent_is_ignored(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    _, app = traced_app(provider)
    async with AsyncTestClient(app) as client:
        await client.post(
            "/v1/sim/tasks",
            json={"task_type": "work", "run_id": "r1", "traceparent": TASK_TRACEPARENT},
        )
        (item,) = (await client.post("/v1/tasks/poll", json={"task_types": ["work"]})).json()
        resolved = await client.post(
            f"/v1/tasks/{item['task_id']}/resolve",
            json={"action": "complete"},
            headers={"traceparent": "00-not-a-trace-01"},
        )

    assert resolved.status_code == 200
    resolve = only(exporter, RESOLVE_SPAN)
    assert trace_id(resolve) == TASK_TRACE_ID
    assert parent_span_id(resolve) == item["traceparent"].split("-")[2]


@pytest.mark.parametrize(
    ("trace", "field"),
    [
        ({"traceparent": "not-a-traceparent"}, "traceparent"),
        ({"traceparent": TASK_TRACEPARENT, "tracestate": "k=" + "v" * 1_000_000}, "tracestate"),
    ],
)
async def test_over_http_a_malformed_sim_trace_context_is_400_naming_the_field(
    trace: dict[str, str], field: str
) -> None:
    async with AsyncTestClient(create_app(memory_container())) as client:
        answer = await client.post("/v1/sim/tasks", json={"task_type": "work", **trace})

    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert len(answer.json()["detail"]) < 200


PARENTS = st.none() | st.builds(
    TraceContext,
    traceparent=st.from_regex(TRACEPARENT_PATTERN, fullmatch=True),
    tracestate=st.none() | st.from_regex(TRACESTATE_PATTERN, fullmatch=True),
)


@given(PARENTS)
def test_with_no_provider_installed_the_tracer_hands_on_what_a_non_recording_span_would(
    parent: TraceContext | None,
) -> None:
    """The process's tracer makes no span while no provider is installed (as in this test
    process): its context is the one the API's own spans give."""
    shortcut, api_spans = OtelTracer(), OtelTracer.of(trace.NoOpTracerProvider())
    assert shortcut._records_nothing()
    assert not api_spans._records_nothing()

    run, step, task = RunId("r1"), StepId("s1"), TaskId("r1.s1")
    with shortcut.dispatch(parent, run_id=run, step_id=step, attempt=1) as handed_on:
        pass
    with api_spans.dispatch(parent, run_id=run, step_id=step, attempt=1) as expected:
        pass
    with shortcut.resolve(parent, task_id=task, action="complete") as resolved:
        pass

    assert handed_on == expected == resolved
