"""Route handlers: parse, call a use case, map the answer. Bodies are read raw so that raw
JSON values pass through byte-exact and validation errors carry the Go messages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any, Final

import anyio
import attrs
from litestar import MediaType, Request, Response, Router, get, post
from litestar.exceptions import ServiceUnavailableException
from litestar.params import FromPath, RawBody
from litestar.response import Stream
from litestar.types import ReceiveMessage

from adapters.codec import encode
from adapters.http.batch import resolve_batch
from adapters.http.bodies import read_json
from adapters.http.deps import Injected
from adapters.http.openapi import (
    ANY_JSON,
    CLOCK,
    CLOCK_ADVANCE_BODY,
    CONNECT_BODY,
    CONNECT_EVENT,
    EMPTY,
    ENQUEUE_LINKS,
    ENQUEUE_TASK,
    EVENT,
    EVENT_STREAM,
    POLL_BODY,
    POLL_LINKS,
    POLL_TASKS,
    POLLED_TASK,
    READ_CHECKPOINT,
    RESOLVE_BODY,
    RESOLVE_TASK,
    RUN_EVENTS,
    SIM_RUN,
    SIM_SIGNAL_BODY,
    SIM_TASK_BODY,
    SIM_TASK_CREATED,
    STATUS,
    V1_ERRORS,
    WORKER_REGISTRATION,
    array_of,
    documented,
)
from adapters.http.paths import path_param
from adapters.http.problems import problem
from adapters.http.schemas import (
    ClockAdvanceBody,
    ClockView,
    ConnectBody,
    PollBody,
    SimSignalBody,
    SimTaskBody,
    SimTaskCreated,
    to_connect_command,
    to_enqueue_command,
    to_poll_command,
    to_run_view,
)
from domain.errors import BackendUnavailableError, CheckpointNotFoundError, InvalidRequestError
from domain.models import RunId, TaskId
from domain.ports import BackendProbe, Clock, EventLog
from domain.protocol import bounded_task_id
from domain.services.actions import ResolveRequest
from domain.services.checkpoints import ReadCheckpoint
from domain.services.drain import Drain
from domain.services.flag import Flag
from domain.services.poll import PollService
from domain.services.resolve import Resolution, ResolveService
from domain.services.runs import SimulatedRuns
from domain.services.simulator import AdvanceClock, EnqueueTask, PutSignal
from domain.services.workers import ConnectCommand, WorkerRegistry
from domain.tracing import from_headers

log = logging.getLogger(__name__)

JSON: Final = "application/json"
HEARTBEAT: Final = b"event: heartbeat\ndata: ok\n\n"
SHUTDOWN: Final = b"event: shutdown\ndata: draining\n\n"
DRAINING: Final = "the bridge is shutting down: try another replica"
DRAINING_RETRY_AFTER: Final = "1"
"""Seconds; another replica, or the restarted bridge, is likely ready by then."""
REPLAYED_HEADER: Final = "X-Dagnats-Replayed"


@attrs.frozen(kw_only=True)
class ConnectSettings:
    heartbeat_interval: timedelta


def _refuse_while_draining(drain: Drain) -> None:
    if drain.begun:
        raise ServiceUnavailableException(DRAINING, headers={"Retry-After": DRAINING_RETRY_AFTER})


def json_response(body: bytes, status_code: int = 200) -> Response[bytes]:
    return Response(body, status_code=status_code, media_type=JSON)


@post(
    "/v1/workers/connect",
    status_code=200,
    summary="Register a worker for as long as it listens",
    operation_class=documented(body=CONNECT_BODY, answer={EVENT_STREAM: CONNECT_EVENT}),
)
async def connect(
    body: RawBody,
    worker_registry: Injected[WorkerRegistry],
    clock: Injected[Clock],
    connect_settings: Injected[ConnectSettings],
    drain: Injected[Drain],
) -> Stream:
    """Answers `text/event-stream` with `event: heartbeat` every interval; the worker is
    deregistered when its last stream closes. When the bridge drains, the stream ends with
    `event: shutdown` (connect elsewhere), and the worker keeps its leases."""
    _refuse_while_draining(drain)
    cmd = to_connect_command(read_json(body, ConnectBody))
    await worker_registry.open_session(cmd)
    log.info("worker %s connected for %s", cmd.worker_id, ",".join(cmd.task_types))
    beats = _Beats(clock, connect_settings.heartbeat_interval, drain)
    return Stream(
        _heartbeats(worker_registry, cmd, beats),
        media_type=EVENT_STREAM,
        headers={"content-type": EVENT_STREAM, "cache-control": "no-cache"},
    )


@attrs.frozen
class _Beats:
    clock: Clock
    interval: timedelta
    drain: Drain

    async def due(self) -> bool:
        """True when the next heartbeat is due, False once the drain has begun."""
        waiters = (
            asyncio.ensure_future(self.clock.sleep(self.interval.total_seconds())),
            asyncio.ensure_future(self.drain.wait()),
        )
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return not self.drain.begun


async def _heartbeats(
    registry: WorkerRegistry, cmd: ConnectCommand, beats: _Beats
) -> AsyncIterator[bytes]:
    try:
        while await beats.due():
            await registry.refresh(cmd)
            yield HEARTBEAT
    finally:
        # The stream ends by cancellation when the client goes: shield the deregistration.
        with anyio.CancelScope(shield=True):
            await registry.close_session(cmd.worker_id)
            log.info("worker %s disconnected", cmd.worker_id)
    # Only the drain ends the loop; deregistered first, so a reconnection elsewhere stays.
    yield SHUTDOWN


@post(
    "/v1/tasks/poll",
    status_code=200,
    summary="Long-poll for tasks",
    operation_id=POLL_TASKS,
    operation_class=documented(
        body=POLL_BODY, answer=array_of(POLLED_TASK), errors=(*V1_ERRORS, 409), links=POLL_LINKS
    ),
)
async def poll(
    request: Request[Any, Any, Any], body: RawBody, poll_service: Injected[PollService]
) -> Response[bytes]:
    """A JSON array of tasks, `[]` when none came before the timeout. While the bridge
    drains, 503; a poll already waiting answers at once with what it holds."""
    # The drain comes with the service: Litestar resolves two dependencies of a handler in
    # an anyio task group, which cost 45 µs a request (poll and resolve alike).
    _refuse_while_draining(poll_service.drain)
    gone = Flag()
    cmd = to_poll_command(read_json(body, PollBody), gone)
    watcher = _watch_departure(request, gone)
    try:
        tasks = await poll_service(cmd)
    finally:
        watcher.cancel()
    return json_response(encode(tasks))


def _watch_departure(request: Request[Any, Any, Any], gone: Flag) -> asyncio.Future[ReceiveMessage]:
    """Set `gone` when the client disconnects; cancel what this returns once answered.

    The body is already read, so the next ASGI message is the disconnect (the ASGI spec has
    no other after the body); a server that fails to receive has lost the client too. One
    task per request, where a watching loop and a context manager around it held 0.8 KiB
    more per waiting poll.
    """
    watcher: asyncio.Future[ReceiveMessage] = asyncio.ensure_future(request.receive())
    watcher.add_done_callback(functools.partial(_on_message, gone))
    return watcher


def _on_message(gone: Flag, watcher: asyncio.Future[ReceiveMessage]) -> None:
    if watcher.cancelled():
        return
    if watcher.exception() is not None or watcher.result()["type"] == "http.disconnect":
        gone.set()


@post(
    "/v1/tasks/{task_id:str}/resolve",
    status_code=200,
    summary="Settle or extend a task",
    operation_id=RESOLVE_TASK,
    operation_class=documented(
        body=RESOLVE_BODY,
        answer={JSON: ANY_JSON, MediaType.TEXT: EMPTY},
        errors=(*V1_ERRORS, 404, 408, 409, 413),
    ),
)
async def resolve(
    request: Request[Any, Any, Any],
    task_id: FromPath[str],
    body: RawBody,
    resolve_service: Injected[ResolveService],
) -> Response[bytes]:
    """Empty 200 on success (with `X-Dagnats-Replayed: true` for a repeated terminal action);
    for wait_signal, the signal's JSON, or 503 when the bridge drains. A `traceparent` header
    is the parent of the `bridge.resolve` span, whose context the published events carry."""
    if not task_id:
        raise InvalidRequestError("task id is required", "task_id")
    resolve_request = read_json(body, ResolveRequest)
    resolving = resolve_service(
        bounded_task_id(path_param(task_id)), resolve_request, from_headers(request.headers)
    )
    if resolve_request.action != "wait_signal":
        resolution = await resolving
    elif (
        waited := await _unless_the_client_leaves(request, resolving, resolve_service.drain)
    ) is not None:
        resolution = waited
    else:
        return problem(408, "the client left before a signal came")
    if resolution.signal is not None:
        return json_response(resolution.signal)
    headers = {REPLAYED_HEADER: "true"} if resolution.replayed else None
    # Empty, as the Go bridge answers; text/plain, since an empty body is no JSON.
    return Response(b"", status_code=200, media_type=MediaType.TEXT, headers=headers)


async def _unless_the_client_leaves(
    request: Request[Any, Any, Any], resolving: Coroutine[Any, Any, Resolution], drain: Drain
) -> Resolution | None:
    """Stop a wait_signal whose worker has gone, instead of extending its lease for an hour;
    and one still waiting when the drain begins, which would hold the process to the end of
    the grace: 503, and the worker waits again on another replica (its lease is extended).

    None when the client left first.
    """
    gone = Flag()
    watcher = _watch_departure(request, gone)
    waiting = asyncio.ensure_future(resolving)
    # The flags' futures are watched, never cancelled: each is shared by all who wait on it.
    watched: set[asyncio.Future[Any]] = {waiting, gone.future(), drain.when_begun()}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    if drain.begun:
        log.info("wait_signal on %s ended by the drain", request.url.path)
        _refuse_while_draining(drain)
    log.info("wait_signal on %s abandoned: its client left", request.url.path)
    return None


@get(
    "/v1/tasks/{task_id:str}/checkpoint",
    summary="The task's saved checkpoint",
    operation_id=READ_CHECKPOINT,
    operation_class=documented(answer=ANY_JSON, errors=(*V1_ERRORS, 404)),
)
async def checkpoint(
    task_id: FromPath[str], read_checkpoint: Injected[ReadCheckpoint]
) -> Response[bytes]:
    return await _checkpoint_of(task_id, read_checkpoint)


async def _checkpoint_of(task_id: str, read_checkpoint: ReadCheckpoint) -> Response[bytes]:
    value = await read_checkpoint(TaskId(path_param(task_id)))
    if value is None:
        raise CheckpointNotFoundError
    return json_response(value)


@get(
    "/v1/workers",
    summary="Live worker registrations",
    operation_class=documented(answer=array_of(WORKER_REGISTRATION)),
)
async def workers(worker_registry: Injected[WorkerRegistry]) -> Response[bytes]:
    return json_response(encode(await worker_registry.registered()))


@get(
    "/healthz",
    summary="The process is up",
    operation_class=documented(answer=STATUS, errors=(503,)),
)
async def healthz(backend_probe: Injected[BackendProbe]) -> dict[str, str]:
    """503 once the process has lost its backend for good (a restart is the remedy); not while
    the backend is only away, which /readyz tells."""
    lost = backend_probe.lost_for_good()
    if lost is not None:
        raise BackendUnavailableError(f"{lost}: restart the bridge")
    return {"status": "ok"}


@get(
    "/readyz",
    summary="The backend serves requests",
    operation_class=documented(answer=STATUS, errors=(503,)),
)
async def readyz(backend_probe: Injected[BackendProbe], drain: Injected[Drain]) -> dict[str, str]:
    """503 while the backend is away, and while the bridge drains."""
    _refuse_while_draining(drain)
    await backend_probe.check()
    return {"status": "ready"}


@post(
    "/v1/sim/tasks",
    status_code=201,
    summary="Enqueue a task as the engine would",
    operation_id=ENQUEUE_TASK,
    operation_class=documented(body=SIM_TASK_BODY, answer=SIM_TASK_CREATED, links=ENQUEUE_LINKS),
)
async def enqueue(body: RawBody, enqueue_task: Injected[EnqueueTask]) -> Response[bytes]:
    task = await enqueue_task(to_enqueue_command(read_json(body, SimTaskBody)))
    created = SimTaskCreated(task_id=task.task_id or "", run_id=task.run_id, step_id=task.step_id)
    return json_response(encode(created), status_code=201)


@get(
    "/v1/sim/runs/{run_id:str}/events",
    summary="A run's history events, in order",
    operation_id=RUN_EVENTS,
    operation_class=documented(answer=array_of(EVENT)),
)
async def run_events(run_id: FromPath[str], event_log: Injected[EventLog]) -> Response[bytes]:
    return json_response(encode(await event_log.read(RunId(path_param(run_id)))))


@post(
    "/v1/sim/signals",
    status_code=204,
    summary="Put a signal as another step would",
    operation_class=documented(body=SIM_SIGNAL_BODY),
)
async def sim_signal(body: RawBody, put_signal: Injected[PutSignal]) -> None:
    """`{"run_id", "name", "data"}`: stored under `<run_id>.<name>`, where a wait_signal of
    that run finds it."""
    signal = read_json(body, SimSignalBody)
    await put_signal(signal.run_id, signal.name, signal.data)


@get(
    "/v1/sim/checkpoints/{task_id:str}",
    summary="A task's saved checkpoint",
    operation_class=documented(answer=ANY_JSON, errors=(*V1_ERRORS, 404)),
)
async def sim_checkpoint(
    task_id: FromPath[str], read_checkpoint: Injected[ReadCheckpoint]
) -> Response[bytes]:
    """The same as `GET /v1/tasks/{task_id}/checkpoint`, under the simulator's prefix."""
    return await _checkpoint_of(task_id, read_checkpoint)


@post(
    "/v1/sim/clock/advance",
    status_code=200,
    summary="Move the manual clock forward",
    operation_class=documented(body=CLOCK_ADVANCE_BODY, answer=CLOCK),
)
async def sim_clock_advance(
    body: RawBody, advance_clock: Injected[AdvanceClock]
) -> Response[bytes]:
    """`{"ms": N}` with `--clock manual`: AckWait expiries, pauses, backoffs and timeouts
    that fall due happen now; answers the clock's new time."""
    now = await advance_clock(read_json(body, ClockAdvanceBody).ms)
    return json_response(encode(ClockView(now=now)))


@get(
    "/v1/sim/runs",
    summary="The engine simulation's runs: status, attempts, iteration",
    operation_class=documented(answer=array_of(SIM_RUN)),
)
async def sim_runs(simulated_runs: Injected[SimulatedRuns]) -> Response[bytes]:
    return json_response(encode([to_run_view(run) for run in simulated_runs.all()]))


API_HANDLERS: Final = [
    connect,
    poll,
    resolve,
    resolve_batch,
    checkpoint,
    workers,
    healthz,
    readyz,
]
simulator_router = Router(
    path="/", route_handlers=[enqueue, run_events, sim_signal, sim_checkpoint, sim_clock_advance]
)
engine_router = Router(path="/", route_handlers=[sim_runs])
"""Served with the engine simulation only."""
