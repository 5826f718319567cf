"""A request cut when the drain's grace ends gets 503 problem+json, not a 500 and a trace."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.http.cut import AnswerCutRequests
from domain.services.drain import Drain

SCOPE: Any = {"type": "http", "method": "POST", "path": "/v1/tasks/r1.s1/resolve"}


async def nothing_more() -> Any:
    return {"type": "http.disconnect"}


def sending_into(sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return send


async def stuck_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()


async def stuck_after_the_headers(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.Event().wait()


async def cut(app: Any, drain: Drain, sent: list[dict[str, Any]]) -> asyncio.Task[None]:
    """Run `app` behind AnswerCutRequests until it waits, then cancel it as uvicorn does."""
    request = asyncio.ensure_future(
        AnswerCutRequests(app, drain)(SCOPE, nothing_more, sending_into(sent))
    )
    await asyncio.sleep(0)  # let the request reach its wait
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    return request


async def test_a_request_cut_while_draining_is_answered_503_and_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drain, sent = Drain(), list[dict[str, Any]]()
    drain.begin()

    request = await cut(stuck_app, drain, sent)

    start, body = sent
    headers = dict(start["headers"])
    assert not request.cancelled()
    assert start["status"] == 503
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["status"] == 503
    assert "POST /v1/tasks/r1.s1/resolve cut" in caplog.text


async def test_a_request_cut_after_its_headers_went_gets_no_second_answer() -> None:
    drain, sent = Drain(), list[dict[str, Any]]()
    drain.begin()

    request = await cut(stuck_after_the_headers, drain, sent)

    assert not request.cancelled()
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_a_request_cancelled_before_any_drain_stays_cancelled() -> None:
    sent: list[dict[str, Any]] = []

    request = await cut(stuck_app, Drain(), sent)

    assert request.cancelled()
    assert sent == []
