"""examples/worker.py, in process: how it retries a poll around a dropped connect stream, what it
does with an output it cannot send, and which settings it refuses. The bridge is an httpx
MockTransport: what matters here is what the worker sends, and when."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

WORKER_PATH = Path(__file__).parents[2] / "examples" / "worker.py"
SETTLE_S = 0.3
"""Long enough for a retry that must not happen to show itself: nothing to await in its absence."""
PATIENCE_S = 5.0


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("example_worker", WORKER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


Answer = Callable[[httpx.Request], httpx.Response]


def bridge(answer: Answer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url="http://bridge", transport=httpx.MockTransport(answer))


def unreachable(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def worker(example: ModuleType, http: httpx.AsyncClient) -> Any:
    return example.Worker(
        http=http, handlers={}, worker_id="w-1", concurrency=1, heartbeat_every_s=1.0
    )


def open_stream(connected: Any) -> None:
    """What the worker does when its connect stream opens."""
    connected.stream_closed = asyncio.Event()
    connected.connected.set()


def close_stream(connected: Any) -> None:
    """What the worker does when its connect stream closes."""
    connected.connected.clear()
    connected.stream_closed.set()


async def test_a_poll_that_fails_as_the_stream_drops_is_retried_only_on_a_new_stream(
    example: ModuleType,
) -> None:
    polls: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        polls.append(json.loads(request.content))
        if len(polls) == 1:
            close_stream(patient)
            return httpx.Response(503, headers={"Retry-After": "30"})
        return httpx.Response(200, json=[])

    async with bridge(answer) as http:
        patient = worker(example, http)
        open_stream(patient)
        polling = asyncio.create_task(patient.poll("demo.echo", 1))

        done, _ = await asyncio.wait({polling}, timeout=SETTLE_S)
        assert not done
        assert len(polls) == 1
        open_stream(patient)
        # At once, not after the Retry-After of 30 s: the new stream says the bridge is back.
        assert await asyncio.wait_for(polling, PATIENCE_S) == []

    assert len(polls) == 2
    assert polls[1]["poll_id"] != polls[0]["poll_id"]


async def test_a_poll_that_fails_while_the_stream_stays_open_is_retried_with_its_poll_id(
    example: ModuleType,
) -> None:
    polls: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        polls.append(json.loads(request.content))
        if len(polls) == 1:
            raise httpx.ReadError("the answer was lost", request=request)
        return httpx.Response(200, json=[])

    async with bridge(answer) as http:
        steady = worker(example, http)
        open_stream(steady)
        assert await asyncio.wait_for(steady.poll("demo.echo", 1), PATIENCE_S) == []

    assert [poll["poll_id"] for poll in polls] == [polls[0]["poll_id"]] * 2


@pytest.mark.parametrize(
    "output", [{1, 2}, {"at": object()}, math.nan, [math.inf]], ids=["set", "object", "nan", "inf"]
)
async def test_an_output_that_is_not_json_fails_the_task_for_good_naming_why(
    example: ModuleType, output: Any
) -> None:
    async def handler(_: Any) -> Any:
        return output

    task = example.Task("demo.x", "task-1", "run-1", "step-1", attempt=1, lease_id="lease-1")
    async with bridge(unreachable) as http:
        resolution = await worker(example, http).outcome(handler, task)

    assert resolution["action"] == "fail"
    assert resolution["failure_type"] == "non_retriable"
    assert resolution["error"].startswith("the handler's output is not JSON: ")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2.5", 2.5), ("0", 0.0), ("-1", 0.0), ("inf", 0.0), ("nan", 0.0), ("1e9", 0.0), ("x", 0.0)],
)
def test_retry_after_is_used_only_when_it_is_a_sane_number_of_seconds(
    example: ModuleType, header: str, seconds: float
) -> None:
    response = httpx.Response(503, headers={"Retry-After": header})

    assert example.retry_after_s(response) == seconds


@pytest.mark.parametrize("flag", ["--max-backoff", "--stream-timeout", "--heartbeat-every"])
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_durations_must_be_positive_and_finite(
    example: ModuleType, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        example.parse_args([flag, value])

    assert f"{flag} must be a positive number of seconds" in capsys.readouterr().err
