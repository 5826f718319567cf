"""Where the spec's tasks come from and where their history is read.

`SimTarget` uses the bridge's simulator endpoints. `NatsTarget` does what the engine does:
it publishes task messages on TASK_QUEUES and reads WORKFLOW_HISTORY, with the msg-ids, so a
bridge that serves no simulator can be checked too. The wire names come from `adapters.wire`
and `domain.protocol`, the one place each is written down, not from the bridge's adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Collection, Coroutine
from typing import Any, Final, Protocol, TypeVar

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from adapters.wire import (
    HISTORY_STREAM,
    MSG_ID_HEADER,
    TASK_STREAM,
    consumer_filter,
    consumer_name,
    history_subject,
    task_subject,
)
from conformance.client import Client, quoted, raw_elements, raw_members
from conformance.spec import STEP_ID, ViolationError, expect, expect_status
from domain.models import RunId, StepId
from domain.protocol import queued_msg_id

T = TypeVar("T")

NATS_TIMEOUT_S: Final = 10.0


class MissingStreamError(Exception):
    """The NATS server lacks a DagNats stream, so there is nothing to check against."""


@attrs.frozen(kw_only=True)
class NewTask:
    task_type: str
    run_id: str
    step_id: str = STEP_ID
    raw_input: bytes | None = None


@attrs.frozen(kw_only=True)
class HistoryEvent:
    """One event of a run's history; `payload` is its raw JSON text, `msg_id` is known only
    when the history is read from NATS."""

    raw: str
    type: str
    run_id: str
    step_id: str | None
    attempt_number: int | None
    payload: str | None
    msg_id: str | None = None


class Target(Protocol):
    @property
    def description(self) -> str: ...

    def enqueue(self, task: NewTask) -> None: ...

    def history(self, run_id: str) -> list[HistoryEvent]: ...

    def close(self, task_types: Collection[str]) -> None:
        """Release what the run holds, and what it left behind for `task_types` where the
        target can reach it."""
        ...


async def _quiet(_: Exception) -> None:
    """nats-py logs each failed connection attempt with a trace; the failing call says it."""


def sim_task_body(task: NewTask) -> bytes:
    fields = [f'"task_type":{json.dumps(task.task_type)}'.encode()]
    fields.append(f'"run_id":{json.dumps(task.run_id)}'.encode())
    fields.append(f'"step_id":{json.dumps(task.step_id)}'.encode())
    if task.raw_input is not None:
        fields.append(b'"input":' + task.raw_input)
    return b"{" + b",".join(fields) + b"}"


def task_payload(task: NewTask) -> bytes:
    """The engine's TaskPayload of a first dispatch (attempt 0: the delivery count decides)."""
    fields = [
        f'"task_id":{json.dumps(f"{task.run_id}.{task.step_id}")}'.encode(),
        f'"run_id":{json.dumps(task.run_id)}'.encode(),
        f'"step_id":{json.dumps(task.step_id)}'.encode(),
    ]
    if task.raw_input is not None:
        fields.append(b'"input":' + task.raw_input)
    return b"{" + b",".join(fields) + b"}"


def parse_event(raw: str, msg_id: str | None = None) -> HistoryEvent:
    try:
        value = json.loads(raw)
        members = raw_members(raw)
    except ValueError:
        raise ViolationError(f"a history event is not a JSON object: {raw[:300]}") from None
    expect(isinstance(value, dict), f"a history event is not a JSON object: {raw[:300]}")
    kind, run_id, step_id = value.get("type"), value.get("run_id"), value.get("step_id")
    attempt = value.get("attempt_number")
    expect(
        isinstance(kind, str) and isinstance(run_id, str),
        f"a history event lacks its type or run_id: {raw[:300]}",
    )
    expect(
        step_id is None or isinstance(step_id, str),
        f"a history event's step_id is not a string: {raw[:300]}",
    )
    expect(
        attempt is None or (isinstance(attempt, int) and not isinstance(attempt, bool)),
        f"a history event's attempt_number is not an integer: {raw[:300]}",
    )
    return HistoryEvent(
        raw=raw,
        type=str(kind),
        run_id=str(run_id),
        step_id=step_id,
        attempt_number=attempt,
        payload=members.get("payload"),
        msg_id=msg_id,
    )


@attrs.frozen
class SimTarget:
    """`POST /v1/sim/tasks` and `GET /v1/sim/runs/{run}/events` of the bridge under test."""

    client: Client
    description: str = "tasks through /v1/sim/tasks, history from /v1/sim/runs/{run}/events"

    def enqueue(self, task: NewTask) -> None:
        answer = self.client.post("/v1/sim/tasks", sim_task_body(task))
        expect_status(answer, 201, f"enqueueing {task.run_id} through /v1/sim/tasks")

    def history(self, run_id: str) -> list[HistoryEvent]:
        path = f"/v1/sim/runs/{quoted(run_id)}/events"
        answer = self.client.get(path)
        expect_status(answer, 200, f"GET {path}")
        try:
            elements = raw_elements(answer.body.decode())
        except ValueError:
            raise ViolationError(f"GET {path} is not a JSON array: {answer.describe()}") from None
        return [parse_event(element) for element in elements]

    def close(self, task_types: Collection[str]) -> None:
        """Nothing is held between requests, and the simulator's queue is the bridge's."""


class NatsTarget:
    """The engine's side on NATS: publish tasks, read the history with its msg-ids.

    nats-py is asynchronous and the spec is not: the client lives on an event loop of its own
    thread, and each call waits for its coroutine there.
    """

    def __init__(self, url: str) -> None:
        self.description = f"tasks published on {TASK_STREAM}, history from {HISTORY_STREAM}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._nc: NatsClient = self._call(
                nats.connect(
                    servers=[server.strip() for server in url.split(",")],
                    connect_timeout=5,
                    max_reconnect_attempts=3,
                    error_cb=_quiet,
                )
            )
        except BaseException:
            self._stop_loop()
            raise
        self._js = self._nc.jetstream(timeout=NATS_TIMEOUT_S)
        try:
            self._call(self._require_streams())
        except BaseException:
            self.close(())
            raise

    async def _require_streams(self) -> None:
        for stream in (TASK_STREAM, HISTORY_STREAM):
            try:
                await self._js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                raise MissingStreamError(
                    f"NATS has no stream {stream}: serve the bridge with --provision, or run "
                    "the engine, to create the DagNats streams"
                ) from None

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(NATS_TIMEOUT_S * 2)

    def enqueue(self, task: NewTask) -> None:
        self._call(self._publish(task))

    async def _publish(self, task: NewTask) -> None:
        msg_id = queued_msg_id(RunId(task.run_id), StepId(task.step_id))
        await self._js.publish(
            task_subject(task.task_type, task.run_id),
            task_payload(task),
            stream=TASK_STREAM,
            headers={MSG_ID_HEADER: msg_id},
        )

    def history(self, run_id: str) -> list[HistoryEvent]:
        return self._call(self._read(run_id))

    async def _read(self, run_id: str) -> list[HistoryEvent]:
        """Each message on `history.<run>`, in order, as the stream stores it."""
        events: list[HistoryEvent] = []
        sequence = 1
        while True:
            try:
                msg = await self._js.get_msg(
                    HISTORY_STREAM, seq=sequence, subject=history_subject(run_id), next=True
                )
            except nats.js.errors.NotFoundError:
                return events
            msg_id = (msg.headers or {}).get(MSG_ID_HEADER)
            events.append(parse_event((msg.data or b"").decode(errors="replace"), msg_id))
            sequence = (msg.seq or sequence) + 1

    def close(self, task_types: Collection[str]) -> None:
        """Delete the consumers the bridge made for `task_types`, and their messages still
        queued (paused tasks, say), so a run leaves nothing on a shared server."""
        try:
            self._call(self._forget(task_types))
            self._call(self._nc.drain())
        except (nats.errors.Error, TimeoutError):
            pass  # the spec is over; what is left is named conformance-*, and harmless
        finally:
            self._stop_loop()

    async def _forget(self, task_types: Collection[str]) -> None:
        for task_type in task_types:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_consumer(TASK_STREAM, consumer_name(task_type))
            await self._js.purge_stream(TASK_STREAM, subject=consumer_filter(task_type))

    def _stop_loop(self) -> None:
        """A loop still running cannot be closed; its daemon thread ends with the process."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(NATS_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
