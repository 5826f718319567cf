"""Route handlers: parse, call a use case, map the answer. Bodies are read raw so that raw
JSON values pass through byte-exact and validation errors carry the Go messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any, Final

import anyio
import attrs
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath, RawBody
from litestar.response import Stream

from adapters.codec import decode, encode
from adapters.http.deps import Injected
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
from domain.errors import CheckpointNotFoundError, InvalidRequestError
from domain.models import RunId, TaskId
from domain.ports import BackendProbe, Clock, EventLog
from domain.services.actions import ResolveRequest
from domain.services.checkpoints import ReadCheckpoint
from domain.services.poll import PollService
from domain.services.resolve import Resolution, ResolveService
from domain.services.runs import SimulatedRuns
from domain.services.simulator import AdvanceClock, EnqueueTask, PutSignal
from domain.services.workers import ConnectCommand, WorkerRegistry

log = logging.getLogger(__name__)

JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"
HEARTBEAT: Final = b"event: heartbeat\ndata: ok\n\n"
REPLAYED_HEADER: Final = "X-Dagnats-Replayed"


@attrs.frozen(kw_only=True)
class ConnectSettings:
    heartbeat_interval: timedelta


def json_response(body: bytes, status_code: int = 200) -> Response[bytes]:
    return Response(body, status_code=status_code, media_type=JSON)


@post("/v1/workers/connect", status_code=200, summary="Register a worker for as long as it listens")
async def connect(
    body: RawBody,
    worker_registry: Injected[WorkerRegistry],
    clock: Injected[Clock],
    connect_settings: Injected[ConnectSettings],
) -> Stream:
    """Answers `text/event-stream` with `event: heartbeat` every interval; the worker is
    deregistered when its last stream closes."""
    cmd = to_connect_command(decode(body, ConnectBody))
    await worker_registry.open_session(cmd)
    log.info("worker %s connected for %s", cmd.worker_id, ",".join(cmd.task_types))
    beats = _heartbeats(worker_registry, cmd, clock, connect_settings.heartbeat_interval)
    return Stream(
        beats,
        media_type=EVENT_STREAM,
        headers={"content-type": EVENT_STREAM, "cache-control": "no-cache"},
    )


async def _heartbeats(
    registry: WorkerRegistry, cmd: ConnectCommand, clock: Clock, interval: timedelta
) -> AsyncIterator[bytes]:
    try:
        while True:
            await clock.sleep(interval.total_seconds())
            await registry.refresh(cmd)
            yield HEARTBEAT
    finally:
        # The stream ends by cancellation when the client goes: shield the deregistration.
        with anyio.CancelScope(shield=True):
            await registry.close_session(cmd.worker_id)
            log.info("worker %s disconnected", cmd.worker_id)


@post("/v1/tasks/poll", status_code=200, summary="Long-poll for tasks")
async def poll(
    request: Request[Any, Any, Any], body: RawBody, poll_service: Injected[PollService]
) -> Response[bytes]:
    """A JSON array of tasks, `[]` when none came before the timeout."""
    gone = asyncio.Event()
    cmd = to_poll_command(decode(body, PollBody), gone)
    async with _watching_disconnect(request, gone):
        tasks = await poll_service(cmd)
    return json_response(encode(tasks))


@contextlib.asynccontextmanager
async def _watching_disconnect(
    request: Request[Any, Any, Any], gone: asyncio.Event
) -> AsyncIterator[None]:
    """Set `gone` if the client disconnects while the block runs (the body is already read,
    so the next ASGI message is the disconnect)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


@post("/v1/tasks/{task_id:str}/resolve", status_code=200, summary="Settle or extend a task")
async def resolve(
    request: Request[Any, Any, Any],
    task_id: FromPath[str],
    body: RawBody,
    resolve_service: Injected[ResolveService],
) -> Response[bytes]:
    """Empty 200 on success (with `X-Dagnats-Replayed: true` for a repeated terminal action);
    for wait_signal, the signal's JSON."""
    if not task_id:
        raise InvalidRequestError("task id is required", "task_id")
    resolve_request = decode(body, ResolveRequest)
    resolving = resolve_service(TaskId(task_id), resolve_request)
    if resolve_request.action != "wait_signal":
        resolution = await resolving
    elif (waited := await _unless_the_client_leaves(request, resolving)) is not None:
        resolution = waited
    else:
        return problem(408, "the client left before a signal came")
    if resolution.signal is not None:
        return json_response(resolution.signal)
    headers = {REPLAYED_HEADER: "true"} if resolution.replayed else None
    return Response(b"", status_code=200, media_type=JSON, headers=headers)


async def _unless_the_client_leaves(
    request: Request[Any, Any, Any], resolving: Coroutine[Any, Any, Resolution]
) -> Resolution | None:
    """Stop a wait_signal whose worker has gone, instead of extending its lease for an hour.

    None when the client left first.
    """
    gone = asyncio.Event()
    async with _watching_disconnect(request, gone):
        waiting = asyncio.ensure_future(resolving)
        leaving = asyncio.ensure_future(gone.wait())
        await asyncio.wait({waiting, leaving}, return_when=asyncio.FIRST_COMPLETED)
        leaving.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        log.info("wait_signal on %s abandoned: its client left", request.url.path)
        return None


@get("/v1/tasks/{task_id:str}/checkpoint", summary="The task's saved checkpoint")
async def checkpoint(
    task_id: FromPath[str], read_checkpoint: Injected[ReadCheckpoint]
) -> Response[bytes]:
    return await _checkpoint_of(task_id, read_checkpoint)


async def _checkpoint_of(task_id: str, read_checkpoint: ReadCheckpoint) -> Response[bytes]:
    value = await read_checkpoint(TaskId(task_id))
    if value is None:
        raise CheckpointNotFoundError
    return json_response(value)


@get("/v1/workers", summary="Live worker registrations")
async def workers(worker_registry: Injected[WorkerRegistry]) -> Response[bytes]:
    return json_response(encode(await worker_registry.registered()))


@get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="The backend serves requests")
async def readyz(backend_probe: Injected[BackendProbe]) -> dict[str, str]:
    await backend_probe.check()
    return {"status": "ready"}


@post("/v1/sim/tasks", status_code=201, summary="Enqueue a task as the engine would")
async def enqueue(body: RawBody, enqueue_task: Injected[EnqueueTask]) -> Response[bytes]:
    task = await enqueue_task(to_enqueue_command(decode(body, SimTaskBody)))
    created = SimTaskCreated(task_id=task.task_id or "", run_id=task.run_id, step_id=task.step_id)
    return json_response(encode(created), status_code=201)


@get("/v1/sim/runs/{run_id:str}/events", summary="A run's history events, in order")
async def run_events(run_id: FromPath[str], event_log: Injected[EventLog]) -> Response[bytes]:
    return json_response(encode(await event_log.read(RunId(run_id))))


@post("/v1/sim/signals", status_code=204, summary="Put a signal as another step would")
async def sim_signal(body: RawBody, put_signal: Injected[PutSignal]) -> None:
    """`{"run_id", "name", "data"}`: stored under `<run_id>.<name>`, where a wait_signal of
    that run finds it."""
    signal = decode(body, SimSignalBody)
    await put_signal(signal.run_id, signal.name, signal.data)


@get("/v1/sim/checkpoints/{task_id:str}", summary="A task's saved checkpoint")
async def sim_checkpoint(
    task_id: FromPath[str], read_checkpoint: Injected[ReadCheckpoint]
) -> Response[bytes]:
    """The same as `GET /v1/tasks/{task_id}/checkpoint`, under the simulator's prefix."""
    return await _checkpoint_of(task_id, read_checkpoint)


@post("/v1/sim/clock/advance", status_code=200, summary="Move the manual clock forward")
async def sim_clock_advance(
    body: RawBody, advance_clock: Injected[AdvanceClock]
) -> Response[bytes]:
    """`{"ms": N}` with `--clock manual`: AckWait expiries, pauses, backoffs and timeouts
    that fall due happen now; answers the clock's new time."""
    now = await advance_clock(decode(body, ClockAdvanceBody).ms)
    return json_response(encode(ClockView(now=now)))


@get("/v1/sim/runs", summary="The engine simulation's runs: status, attempts, iteration")
async def sim_runs(simulated_runs: Injected[SimulatedRuns]) -> Response[bytes]:
    return json_response(encode([to_run_view(run) for run in simulated_runs.all()]))


API_HANDLERS: Final = [connect, poll, resolve, checkpoint, workers, healthz, readyz]
simulator_router = Router(
    path="/", route_handlers=[enqueue, run_events, sim_signal, sim_checkpoint, sim_clock_advance]
)
engine_router = Router(path="/", route_handlers=[sim_runs])
"""Served with the engine simulation only."""
