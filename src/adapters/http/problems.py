"""One error table for the whole API: every error is RFC 9457 problem+json."""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import HTTPScope, Receive, Send

from adapters.codec import DecodeError
from domain.errors import (
    AlreadySettledError,
    BackendError,
    BackendUnavailableError,
    BucketUnavailableError,
    CheckpointNotFoundError,
    ConsumerConflictError,
    DomainError,
    InvalidRequestError,
    LeaseRevisionError,
    PayloadTooLargeError,
    SignalTimeoutError,
    StaleLeaseError,
    TaskNotFoundError,
)

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
RETRY_AFTER_SECONDS: Final = "5"

STATUS_FOR: Final[dict[type[DomainError], int]] = {
    InvalidRequestError: 400,
    TaskNotFoundError: 404,
    CheckpointNotFoundError: 404,
    SignalTimeoutError: 408,
    StaleLeaseError: 409,
    AlreadySettledError: 409,
    LeaseRevisionError: 409,
    ConsumerConflictError: 409,
    PayloadTooLargeError: 413,
    BucketUnavailableError: 500,
    BackendError: 500,
    BackendUnavailableError: 503,
}

TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(
    status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def send_outside_a_route(
    response: Response[bytes], scope: HTTPScope, receive: Receive, send: Send
) -> None:
    """Send `response` where no route handler does: before routing, or around the app."""
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def status_of(exc: DomainError) -> int:
    return next((code for kind, code in STATUS_FOR.items() if isinstance(exc, kind)), 500)


def domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    status = status_of(exc)
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        log.warning("request failed with %s: %s", status, exc)
    headers = (
        {"Retry-After": RETRY_AFTER_SECONDS} if status == HTTP_503_SERVICE_UNAVAILABLE else None
    )
    field = exc.field if isinstance(exc, InvalidRequestError) else None
    return problem(status, str(exc), field=field, headers=headers)


def decode_error(_: Request[Any, Any, Any], exc: DecodeError) -> Response[bytes]:
    return problem(400, str(exc), field=exc.field)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    detail = exc.detail
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        detail = "request body too large"
    return problem(exc.status_code, detail, headers=exc.headers)


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Log the cause with its trace on the server; the client gets no stack trace."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error")


EXCEPTION_HANDLERS: Final = {
    DomainError: domain_error,
    DecodeError: decode_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
