"""The outermost layer: a request cut when the drain's grace ends gets 503 problem+json, not
a 500 and a trace, and every request is counted with the status it was answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from adapters.http.boundary import RequestBoundary
from domain.services.drain import Drain

SCOPE: Any = {"type": "http", "method": "POST", "path": "/v1/tasks/r1.s1/resolve"}


def fresh_scope(**changes: Any) -> Any:
    """A scope of its own: the router writes into it."""
    return {**SCOPE, **changes}


class Counts:
    def __init__(self) -> None:
        self.answered: list[tuple[str, str, int]] = []

    def request_answered(self, method: str, route: str, status: int) -> None:
        self.answered.append((method, route, status))


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


async def cut(
    app: Any, drain: Drain, sent: list[dict[str, Any]], counts: Counts | None = None
) -> asyncio.Task[None]:
    """Run `app` behind RequestBoundary until it waits, then cancel it as uvicorn does."""
    boundary = RequestBoundary(app, counts or Counts(), drain)
    request: asyncio.Task[None] = asyncio.ensure_future(
        boundary(fresh_scope(), nothing_more, sending_into(sent))
    )
    await asyncio.sleep(0)  # let the request reach its wait
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    return request


async def test_a_request_cut_while_draining_is_answered_503_and_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drain, sent, counts = Drain(), list[dict[str, Any]](), Counts()
    drain.begin()

    request = await cut(stuck_app, drain, sent, counts)

    start, body = sent
    headers = dict(start["headers"])
    assert not request.cancelled()
    assert start["status"] == 503
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["status"] == 503
    assert "POST /v1/tasks/r1.s1/resolve cut" in caplog.text
    assert counts.answered == [("POST", "unmatched", 503)]


async def test_a_request_cut_after_its_headers_went_gets_no_second_answer() -> None:
    drain, sent = Drain(), list[dict[str, Any]]()
    drain.begin()

    request = await cut(stuck_after_the_headers, drain, sent)

    assert not request.cancelled()
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_a_request_cancelled_before_any_drain_stays_cancelled() -> None:
    sent: list[dict[str, Any]] = []

    counts = Counts()

    request = await cut(stuck_app, Drain(), sent, counts)

    assert request.cancelled()
    assert sent == []
    assert counts.answered == [("POST", "unmatched", 500)]


def routed_answering(status: int) -> Any:
    """An app that routes the request as Litestar's router does, then answers `status`."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route_handler"], scope["path_template"] = object(), "/v1/tasks/{task_id}/resolve"
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize("status", [200, 404, 409])
async def test_a_routed_request_counts_under_its_route_template(status: int) -> None:
    counts = Counts()
    app = routed_answering(status)

    await RequestBoundary(app, counts, Drain())(fresh_scope(), nothing_more, sending_into([]))

    assert counts.answered == [("POST", "/v1/tasks/{task_id}/resolve", status)]


async def test_an_unrouted_request_of_any_method_token_counts_as_other_unmatched() -> None:
    counts = Counts()

    async def method_not_allowed(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 405, "headers": []})

    scope = fresh_scope(method="BREW")
    await RequestBoundary(method_not_allowed, counts, Drain())(
        scope, nothing_more, sending_into([])
    )

    assert counts.answered == [("other", "unmatched", 405)]
