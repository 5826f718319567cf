"""Which trace export the OTEL_* environment turns on (app.tracing)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, EntryPoints

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.tracing import EXPORTER_ENTRY_POINTS, exporter_names, tracer_provider
from tests.factories import memory_container

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, []),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_environment_chooses_the_exporters(
    clean_environment: pytest.MonkeyPatch, variables: dict[str, str], names: list[str]
) -> None:
    for name, value in variables.items():
        clean_environment.setenv(name, value)

    assert exporter_names() == names


def test_no_provider_when_no_export_is_asked_for() -> None:
    assert tracer_provider() is None


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    ],
)
def test_a_provider_named_after_the_bridge_when_export_is_asked_for(
    clean_environment: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        clean_environment.setenv(name, value)

    provider = tracer_provider()

    assert provider is not None
    provider.shutdown()
    assert provider.resource.attributes["service.name"] == "dagnats-bridge"


def test_the_service_name_of_the_environment_wins(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("OTEL_TRACES_EXPORTER", "console")
    clean_environment.setenv("OTEL_SERVICE_NAME", "bridge-eu-1")

    provider = tracer_provider()

    assert provider is not None
    provider.shutdown()
    assert provider.resource.attributes["service.name"] == "bridge-eu-1"


def test_an_exporter_that_is_not_installed_turns_export_off_and_says_so(
    clean_environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_environment.setenv("OTEL_TRACES_EXPORTER", "zipkin-of-nowhere")

    assert tracer_provider() is None
    assert "no such exporter installed" in caplog.text
    assert "dagnats-bridge[otel]" in caplog.text


def test_an_unknown_otlp_protocol_turns_export_off_and_names_it(
    clean_environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    clean_environment.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")

    assert tracer_provider() is None
    assert "unknown OTLP protocol 'http/json'" in caplog.text
    assert "no such exporter installed" not in caplog.text


class ExporterThatCannotStart:
    def __init__(self) -> None:
        raise RuntimeError("bad header Authorization=Bearer s3cret")


BROKEN_EXPORTERS = {
    "constructor": f"{__name__}:ExporterThatCannotStart",
    "import": "exporter_module_that_is_not_there:Exporter",
}


@pytest.fixture(params=list(BROKEN_EXPORTERS.values()), ids=list(BROKEN_EXPORTERS))
def broken_exporter(
    clean_environment: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> pytest.MonkeyPatch:
    """OTEL_TRACES_EXPORTER asks for an installed exporter that raises when loaded or built."""
    broken = EntryPoint(name="broken", value=request.param, group=EXPORTER_ENTRY_POINTS)
    clean_environment.setattr("app.tracing.entry_points", lambda **_: EntryPoints([broken]))
    clean_environment.setenv("OTEL_TRACES_EXPORTER", "broken")
    return clean_environment


def test_an_exporter_that_fails_to_start_turns_export_off_and_says_so(
    broken_exporter: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert tracer_provider() is None
    assert "traces not exported to 'broken': the exporter failed to start" in caplog.text
    assert "s3cret" not in caplog.text


async def test_the_bridge_serves_when_its_exporter_fails_to_start(
    broken_exporter: pytest.MonkeyPatch,
) -> None:
    async with AsyncTestClient(create_app(memory_container())) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
