"""The OpenAPI document describes every body and header the handlers read, and nothing they
do not, so clients and fuzzers can rely on it (the handlers read raw bytes, which Litestar
cannot document on its own); every field, answer and error is described, with examples that
fit their schemas."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import jsonschema_rs
import pytest
from litestar.openapi.spec import OpenAPIResponse

from adapters.http.openapi import STATUS, documented
from adapters.http.schemas import (
    ClockAdvanceBody,
    ConnectBody,
    PollBody,
    SimSignalBody,
    SimTaskBody,
)
from app.main import create_app
from domain.services.actions import ResolveRequest
from tests.factories import memory_container

BODIES = {
    "/v1/workers/connect": ConnectBody,
    "/v1/tasks/poll": PollBody,
    "/v1/tasks/{task_id}/resolve": ResolveRequest,
    "/v1/sim/tasks": SimTaskBody,
    "/v1/sim/signals": SimSignalBody,
    "/v1/sim/clock/advance": ClockAdvanceBody,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document served at /schema/openapi.json."""
    return create_app(memory_container()).openapi_schema.to_schema()


def documented_fields(schema: dict[str, Any]) -> set[str]:
    variants = schema.get("oneOf", [schema])
    return {name for variant in variants for name in variant.get("properties", {})}


@pytest.mark.parametrize(("path", "body"), BODIES.items())
def test_the_documented_fields_are_those_a_handler_reads(
    document: dict[str, Any], path: str, body: type[Any]
) -> None:
    request = document["paths"][path]["post"]["requestBody"]

    schema = request["content"]["application/json"]["schema"]

    assert {field.name for field in attrs.fields(body)} == documented_fields(schema)


def test_every_v1_error_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    v1_operations = [
        operation
        for path, item in document["paths"].items()
        if path.startswith("/v1/")
        for operation in item.values()
    ]

    for operation in v1_operations:
        for status in ("400", "401", "503"):
            assert "application/problem+json" in operation["responses"][status]["content"]


def test_every_v1_operation_asks_for_the_bearer_token(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    secured = {
        path: operation.get("security")
        for path, item in document["paths"].items()
        for operation in item.values()
    }

    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert secured == {
        path: [{"bearer": []}] if path.startswith("/v1/") else None for path in secured
    }


@pytest.mark.parametrize("path", ["/v1/tasks/{task_id}/resolve", "/v1/tasks/resolve"])
def test_the_trace_headers_a_resolve_reads_are_documented(
    document: dict[str, Any], path: str
) -> None:
    parameters = document["paths"][path]["post"]["parameters"]

    headers = {p["name"]: p for p in parameters if p["in"] == "header"}

    assert set(headers) == {"traceparent", "tracestate"}
    assert not any(header["required"] for header in headers.values())


def test_an_operation_without_a_generated_success_answer_keeps_litestars_answers() -> None:
    moved = OpenAPIResponse(description="Moved")

    operation = documented(answer=STATUS, errors=(400,))(responses={"301": moved})

    assert operation.responses is not None
    assert set(operation.responses) == {"301", "400"}


def fits(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True).is_valid(value)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def body_and_answer_schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema of the document: components, request bodies and answers, by where."""
    yield from document["components"].get("schemas", {}).items()
    for where, operation in operations(document):
        for kind, media in operation.get("requestBody", {}).get("content", {}).items():
            yield f"{where} {kind} body", media["schema"]
        for status, response in operation["responses"].items():
            for kind, media in response.get("content", {}).items():
                yield f"{where} {status} {kind}", media["schema"]


def properties_of(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The schema's properties, through nested objects, array items and variants."""
    for name, subschema in schema.get("properties", {}).items():
        yield f"{where}.{name}", subschema
        yield from properties_of(subschema, f"{where}.{name}")
    if "items" in schema:
        yield from properties_of(schema["items"], f"{where}[]")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for index, variant in enumerate(schema.get(keyword, [])):
            yield from properties_of(variant, f"{where}/{keyword}/{index}")


def every_property(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        found
        for where, schema in body_and_answer_schemas(document)
        for found in properties_of(schema, where)
    ]


def test_every_property_has_a_description_and_examples_that_fit_it(
    document: dict[str, Any],
) -> None:
    properties = every_property(document)

    undescribed = [where for where, schema in properties if not schema.get("description")]
    without_examples = [where for where, schema in properties if not schema.get("examples")]
    misfits = [
        (where, example)
        for where, schema in properties
        for example in schema.get("examples", [])
        if not fits(schema, example)
    ]

    assert len(properties) > 200
    assert (undescribed, without_examples, misfits) == ([], [], [])


def test_every_answer_has_a_description(document: dict[str, Any]) -> None:
    undescribed = [
        f"{where} {status}"
        for where, operation in operations(document)
        for status, response in operation["responses"].items()
        if not response.get("description")
    ]

    assert undescribed == []


def test_every_error_has_example_problems_of_its_status_that_fit_the_schema(
    document: dict[str, Any],
) -> None:
    errors = [
        (f"{where} {status}", int(status), response["content"]["application/problem+json"])
        for where, operation in operations(document)
        for status, response in operation["responses"].items()
        if not status.startswith("2")
    ]

    without_examples = [where for where, _, media in errors if not media.get("examples")]
    misfits = [
        (where, name)
        for where, status, media in errors
        for name, example in media.get("examples", {}).items()
        if not fits(media["schema"], example["value"]) or example["value"]["status"] != status
    ]

    assert errors
    assert (without_examples, misfits) == ([], [])


def test_a_503_tells_when_to_retry(document: dict[str, Any]) -> None:
    answers = [
        operation["responses"]["503"]
        for _, operation in operations(document)
        if "503" in operation["responses"]
    ]

    assert answers
    assert all(answer["headers"]["Retry-After"]["required"] for answer in answers)


def test_every_path_parameter_is_described_with_an_example_that_fits_it(
    document: dict[str, Any],
) -> None:
    parameters = [
        (f"{where} {parameter['name']}", parameter)
        for where, operation in operations(document)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    ]

    undescribed = [
        where
        for where, parameter in parameters
        if not parameter.get("description") or not parameter["schema"].get("examples")
    ]
    misfits = [
        (where, example)
        for where, parameter in parameters
        for example in parameter["schema"].get("examples", [])
        if not fits(parameter["schema"], example)
    ]

    assert parameters
    assert (undescribed, misfits) == ([], [])
