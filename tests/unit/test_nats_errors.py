"""How nats-py's exceptions become domain errors: a cluster moving a leader is 503 (retry
later), never 500. The exceptions are built as nats-py builds them from a server's answer."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest

from adapters.nats.errors import translated
from domain.errors import (
    BackendError,
    BackendUnavailableError,
    DomainError,
    PayloadTooLargeError,
)


def from_server(code: int, err_code: int, description: str) -> nats.js.errors.APIError:
    """The exception nats-py raises for this JetStream API error."""
    try:
        nats.js.errors.APIError.from_error(
            {"code": code, "err_code": err_code, "description": description}
        )
    except nats.js.errors.APIError as exc:
        return exc
    raise AssertionError("nats-py raised nothing")


def raised_through_translated(exc: Exception) -> DomainError:
    with pytest.raises(DomainError) as caught, translated("resolve t1"):
        raise exc
    return caught.value


@pytest.mark.parametrize(
    "exc",
    [
        nats.js.errors.NoStreamResponseError(),
        nats.errors.NoRespondersError(),
        nats.errors.TimeoutError(),
        from_server(503, 10008, "JetStream system temporarily unavailable"),
        from_server(500, 10009, "JetStream cluster can not handle request"),
        from_server(500, 10118, "stream is offline"),
        from_server(500, 10119, "consumer is offline"),
    ],
    ids=repr,
)
def test_a_leaderless_stream_or_a_cluster_in_election_is_unavailable(exc: Exception) -> None:
    translated_error = raised_through_translated(exc)

    assert type(translated_error) is BackendUnavailableError
    assert str(translated_error).startswith("resolve t1: NATS unavailable")


def test_the_message_says_what_jetstream_said() -> None:
    leaderless = from_server(500, 10009, "JetStream cluster can not handle request")

    detail = str(raised_through_translated(leaderless))

    assert detail == "resolve t1: NATS unavailable (JetStream cluster can not handle request)"


@pytest.mark.parametrize(
    "exc",
    [
        from_server(500, 10074, "replicas > 1 not supported in non-clustered mode"),
        from_server(400, 10058, "stream name already in use with a different configuration"),
        from_server(500, 10049, "message size exceeds maximum allowed"),
    ],
    ids=repr,
)
def test_other_api_errors_stay_faults_and_keep_their_description(exc: Exception) -> None:
    translated_error = raised_through_translated(exc)

    assert type(translated_error) is BackendError
    assert str(exc) in str(translated_error)


def test_a_payload_over_max_payload_is_too_large() -> None:
    too_large = nats.errors.MaxPayloadError()

    translated_error = raised_through_translated(too_large)

    assert isinstance(translated_error, PayloadTooLargeError)
    assert str(translated_error) == "resolve t1: larger than the NATS server's max_payload"


def test_the_nats_fault_is_the_cause_of_its_domain_error() -> None:
    timeout = nats.errors.TimeoutError()

    translated_error = raised_through_translated(timeout)

    assert translated_error.__cause__ is timeout


@pytest.mark.parametrize("exc", [ValueError("not NATS"), asyncio.CancelledError()], ids=repr)
def test_what_is_not_a_nats_fault_goes_on_as_it_is(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as caught, translated("resolve t1"):
        raise exc

    assert caught.value is exc
