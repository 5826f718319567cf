"""`POST /v1/tasks/resolve`: many resolves in one request, each applied exactly as the single
resolve of its task would be, and answered with a status of its own.

It saves a worker that finished a batch of tasks one HTTP request per task. The items run
concurrently; two items of one task run one after the other (the task's lock), as two
single resolves would. wait_signal is refused: it waits, and would hold the whole answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import attrs
import msgspec
from litestar import Request, post
from litestar.params import RawBody
from litestar.response import Response

from adapters.codec import DecodeError, read_fields, structure
from adapters.http.bodies import read_json_list
from adapters.http.deps import Injected
from adapters.http.openapi import (
    RESOLVE_BATCH_ANSWER,
    RESOLVE_BATCH_BODY,
    RESOLVE_TASKS,
    V1_ERRORS,
    documented,
)
from adapters.http.problems import status_of
from domain.errors import DomainError, InvalidRequestError
from domain.models import TaskId, TraceContext
from domain.protocol import bounded_task_id
from domain.services.actions import ResolveRequest
from domain.services.resolve import ResolveService
from domain.tracing import from_headers

log = logging.getLogger(__name__)

MAX_BATCH: Final = 256
WAITS: Final = "wait_signal"


@attrs.frozen
class _Addressed:
    """The item's task; the rest of the item is its resolve body. No raw field: it is
    structured from the fields read for ResolveRequest."""

    task_id: str = ""


def read_batch(body: bytes) -> list[tuple[TaskId, ResolveRequest]]:
    """The items, or 400 naming the first bad one's field (`[3].action`)."""
    items = read_json_list(body)
    if len(items) > MAX_BATCH:
        raise DecodeError(f"at most {MAX_BATCH} items in a batch, not {len(items)}")
    return [_item(index, item) for index, item in enumerate(items)]


def _item(index: int, item: bytes) -> tuple[TaskId, ResolveRequest]:
    try:
        fields = read_fields(item, ResolveRequest)
        task_id = structure(fields, _Addressed).task_id
        request = structure(fields, ResolveRequest)
    except DecodeError as exc:
        raise DecodeError(f"item {index}: {exc}", _field(index, exc.field)) from None
    if not task_id:
        raise DecodeError(f"item {index}: task_id is required", _field(index, "task_id"))
    try:
        bounded = bounded_task_id(task_id)
    except InvalidRequestError as exc:
        raise DecodeError(f"item {index}: {exc}", _field(index, exc.field)) from None
    if request.action == WAITS:
        raise DecodeError(
            f"item {index}: {WAITS} waits, so it cannot be batched: resolve it alone",
            _field(index, "action"),
        )
    return bounded, request


def _field(index: int, name: str | None) -> str:
    return f"[{index}].{name}" if name else f"[{index}]"


async def resolve_item(
    service: ResolveService, task_id: TaskId, request: ResolveRequest, trace: TraceContext | None
) -> dict[str, Any]:
    """What the single resolve would answer: its status, `replayed`, or the problem's
    detail and field."""
    try:
        resolution = await service(task_id, request, trace)
    except DomainError as exc:
        status = status_of(exc)
        field = getattr(exc, "field", None)
        answer: dict[str, Any] = {"task_id": task_id, "status": status, "detail": str(exc)}
        return answer | ({"field": field} if field else {})
    except Exception:
        log.exception("unhandled error resolving %s in a batch", task_id)
        return {"task_id": task_id, "status": 500, "detail": "internal error"}
    return {"task_id": task_id, "status": 200, "replayed": resolution.replayed}


@post(
    "/v1/tasks/resolve",
    status_code=200,
    summary="Settle or extend many tasks at once",
    operation_id=RESOLVE_TASKS,
    operation_class=documented(
        body=RESOLVE_BATCH_BODY, answer=RESOLVE_BATCH_ANSWER, errors=(*V1_ERRORS, 413)
    ),
)
async def resolve_batch(
    request: Request[Any, Any, Any], body: RawBody, resolve_service: Injected[ResolveService]
) -> Response[bytes]:
    """A JSON array, an answer per item in the order given: `status` is what the single
    resolve would have answered (200, 404, 409, ...). A `traceparent` header is the parent
    of every item's `bridge.resolve` span."""
    items = read_batch(body)
    trace = from_headers(request.headers)
    answers = await asyncio.gather(
        *(resolve_item(resolve_service, task_id, item, trace) for task_id, item in items)
    )
    return Response(msgspec.json.encode(answers), status_code=200, media_type="application/json")
