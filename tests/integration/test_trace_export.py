"""A served bridge exports its spans over OTLP when the OTEL_* environment asks for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.integration.conftest import start_bridge

pytestmark = pytest.mark.integration

TASK_TRACE_ID: Final = "0af7651916cd43dd8448eb211c80319c"
TASK_SPAN_ID: Final = "b7ad6b7169203331"
CALLER_TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID: Final = "00f067aa0ba902b7"


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[Span] = []
        self.resources: list[dict[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            self.server.resources.append(
                {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            )
            for scope_spans in resource_spans.scope_spans:
                self.server.spans.extend(scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what was received, not the access log."""


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_the_spans_of_a_served_bridge_reach_an_otlp_collector(
    tmp_path: Path, collector: Collector
) -> None:
    bridge = start_bridge(
        tmp_path, "--backend", "memory", OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint
    )
    try:
        httpx.post(
            f"{bridge.url}/v1/sim/tasks",
            json={
                "task_type": "work",
                "run_id": "r1",
                "traceparent": f"00-{TASK_TRACE_ID}-{TASK_SPAN_ID}-01",
            },
        ).raise_for_status()
        (item,) = httpx.post(f"{bridge.url}/v1/tasks/poll", json={"task_types": ["work"]}).json()
        httpx.post(
            f"{bridge.url}/v1/tasks/r1.step-1/resolve",
            json={"action": "complete"},
            headers={"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"},
        ).raise_for_status()
    finally:
        bridge.stop()  # the batched spans are flushed on the way out

    spans = {span.name: span for span in collector.spans}
    assert sorted(spans) == ["bridge.dispatch", "bridge.resolve"]
    dispatch, resolve = spans["bridge.dispatch"], spans["bridge.resolve"]
    assert (dispatch.trace_id.hex(), dispatch.parent_span_id.hex()) == (
        TASK_TRACE_ID,
        TASK_SPAN_ID,
    )
    assert item["traceparent"] == f"00-{TASK_TRACE_ID}-{dispatch.span_id.hex()}-01"
    assert (resolve.trace_id.hex(), resolve.parent_span_id.hex()) == (
        CALLER_TRACE_ID,
        CALLER_SPAN_ID,
    )
    assert {r["service.name"] for r in collector.resources} == {"dagnats-bridge"}
    assert "traces exported to otlp" in bridge.log.read_text()
