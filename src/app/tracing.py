"""Trace export: an OpenTelemetry SDK TracerProvider for the process, when the SDK is installed
(the `otel` extra) and the standard OTEL_* variables ask for export.

`OTEL_TRACES_EXPORTER` names the exporters (`otlp`, `console`, any other registered one,
comma-separated; `none` for none); unset, it is `otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and export is off otherwise. `otlp` speaks
`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` by
default, as the specification says, or `grpc`). Everything else (endpoint, headers, sampler,
service name, batching) is the SDK's own reading of its variables.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Final

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("dagnats_bridge")

SERVICE_NAME: Final = "dagnats-bridge"
EXPORTER_ENTRY_POINTS: Final = "opentelemetry_traces_exporter"
OTLP: Final = "otlp"
OTLP_BY_PROTOCOL: Final = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
DEFAULT_OTLP_PROTOCOL: Final = "http/protobuf"
INSTALL_HINT: Final = "pip install 'dagnats-bridge[otel]'"


def exporter_names() -> list[str]:
    """The exporters the environment asks for; [] when it asks for no export."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = os.environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        return [OTLP] if any(os.environ.get(name) for name in endpoints) else []
    chosen = (name.strip().lower() for name in names.split(","))
    return [name for name in chosen if name and name != "none"]


def tracer_provider() -> TracerProvider | None:
    """A provider with a batch processor per exporter asked for; None when export is off or
    cannot be had (said in the log: tracing is never a reason not to serve)."""
    names = exporter_names()
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - the optional extra
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning(
            "traces not exported: the OpenTelemetry SDK is not installed (%s)", INSTALL_HINT
        )
        return None
    exporters = [exporter for name in names if (exporter := _exporter(name)) is not None]
    if not exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource.create({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _exporter(name: str) -> SpanExporter | None:
    """The exporter `name` asks for; None, said in the log, when it cannot be had."""
    entry_name = _otlp_entry_point() if name == OTLP else name
    if entry_name is None:
        return None
    found = entry_points(group=EXPORTER_ENTRY_POINTS, name=entry_name)
    if not found:
        log.warning(
            "traces not exported to %r: no such exporter installed (%s)", name, INSTALL_HINT
        )
        return None
    try:
        exporter: SpanExporter = next(iter(found)).load()()
    except Exception as exc:
        # Whatever a third-party exporter raises; its message is left out of the log, as it
        # may quote the endpoint or headers, credentials included.
        log.warning(
            "traces not exported to %r: the exporter failed to start (%s)",
            name,
            type(exc).__name__,
        )
        return None
    return exporter


def _otlp_entry_point() -> str | None:
    """The OTLP exporter of the protocol asked for; None, said in the log, for an unknown one."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", DEFAULT_OTLP_PROTOCOL
    )
    entry_name = OTLP_BY_PROTOCOL.get(protocol.strip().lower())
    if entry_name is None:
        log.warning(
            "traces not exported to %r: unknown OTLP protocol %r (want one of %s)",
            OTLP,
            protocol,
            ", ".join(OTLP_BY_PROTOCOL),
        )
    return entry_name


@asynccontextmanager
async def tracing_lifespan() -> AsyncIterator[None]:
    """Install the provider for the life of the app, and flush its spans on the way out.

    A provider installed before (e.g. by `opentelemetry-instrument`) is left to rule.
    """
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield
        return
    provider = tracer_provider()
    if provider is None:
        yield
        return
    trace.set_tracer_provider(provider)
    log.info("traces exported to %s", ", ".join(exporter_names()))
    try:
        yield
    finally:
        # Shutdown flushes through the exporters, which block: off the event loop.
        await asyncio.to_thread(provider.shutdown)
