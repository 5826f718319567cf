"""The load: tasks published as the engine publishes them, a fleet of HTTP workers that
complete them, and the count of terminal events in WORKFLOW_HISTORY afterwards."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.codec import encode
from adapters.wire import (
    HISTORY_STREAM,
    HISTORY_SUBJECTS,
    MSG_ID_HEADER,
    TASK_STREAM,
    consumer_name,
    task_subject,
)
from domain.models import RunId, StepId, TaskPayload, TaskType, task_id_of
from domain.protocol import STEP_COMPLETED, STEP_FAILED, queued_msg_id

TASK_TYPE: Final = TaskType("fault-load")
STEP: Final = StepId("step-1")
TERMINAL_TYPES: Final = frozenset({STEP_COMPLETED, STEP_FAILED})
PUBLISH_CONCURRENCY: Final = 200
POLL_TIMEOUT_MS: Final = 1_000
WORK_S: Final = 0.05
"""A task's work takes up to this long (uniformly spread, so resolves do not march in step)."""
REQUEST_TIMEOUT_S: Final = 10.0
FIRST_BACKOFF_S: Final = 0.05
MAX_BACKOFF_S: Final = 1.0
RETRIED_STATUSES: Final = frozenset({500, 502, 503, 504})
"""A resolve or poll answered so is retried: the bridge or NATS is away, or was."""
GIVEN_UP_STATUSES: Final = frozenset({404, 409})
"""A resolve answered so ends the worker's hold: the lease expired, or a newer one exists."""
READ_TIMEOUT_S: Final = 10.0
COUNT_ATTEMPTS: Final = 5


def run_ids(count: int) -> list[RunId]:
    return [RunId(f"run-{index:06d}") for index in range(count)]


async def connect_observer(servers: Sequence[str]) -> NatsClient:
    """The test's own connection, which rides out restarts as the bridge's does."""
    return await nats.connect(
        servers=list(servers),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        error_cb=_expected,
        name="fault-observer",
    )


async def _expected(_: Exception) -> None:
    """Connection errors are the scenario's own doing; the client reconnects."""


async def enqueue(js: JetStreamContext, runs: Sequence[RunId]) -> None:
    """Publish one task per run as the engine does: its subject, body and msg-id."""
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def publish(run_id: RunId) -> None:
        task = TaskPayload(task_id=task_id_of(run_id, STEP), run_id=run_id, step_id=STEP)
        async with gate:
            await js.publish(
                task_subject(TASK_TYPE, run_id),
                encode(task),
                stream=TASK_STREAM,
                headers={MSG_ID_HEADER: queued_msg_id(run_id, STEP)},
            )

    await asyncio.gather(*(publish(run_id) for run_id in runs))


async def outstanding(js: JetStreamContext) -> int | None:
    """Tasks the fleet's consumer has yet to deliver or to see acked: while any, a task may
    still be delivered (again); None while NATS does not answer."""
    try:
        info = await js.consumer_info(TASK_STREAM, consumer_name(TASK_TYPE))
    except (nats.errors.Error, TimeoutError):
        return None
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


async def queued_messages(js: JetStreamContext) -> int:
    """Messages TASK_QUEUES still holds (acked ones are removed from a work queue). A request
    that times out (a cluster still electing leaders) is asked again."""
    for _ in range(COUNT_ATTEMPTS - 1):
        with contextlib.suppress(nats.errors.TimeoutError):
            return (await js.stream_info(TASK_STREAM)).state.messages
    return (await js.stream_info(TASK_STREAM)).state.messages


@attrs.frozen(kw_only=True)
class TerminalCount:
    lost: int
    duplicated: int
    unexpected: int
    """Terminal events of tasks that were never enqueued (must be 0 too)."""
    doubled: dict[str, list[str]] = attrs.field(factory=dict)
    """The history of each task with more than one terminal event, an event a line."""


async def count_terminal_events(js: JetStreamContext, runs: Sequence[RunId]) -> TerminalCount:
    """Read WORKFLOW_HISTORY from its first message to its last; count terminal events per
    task. A read that times out (a cluster still electing leaders) starts again."""
    for _ in range(COUNT_ATTEMPTS - 1):
        with contextlib.suppress(nats.errors.TimeoutError):
            return await _count_once(js, runs)
    return await _count_once(js, runs)


async def _count_once(js: JetStreamContext, runs: Sequence[RunId]) -> TerminalCount:
    info = await js.stream_info(HISTORY_STREAM)
    expected = info.state.messages
    terminal: collections.Counter[str] = collections.Counter()
    history: dict[str, list[str]] = collections.defaultdict(list)
    subscription = await js.subscribe(
        HISTORY_SUBJECTS, stream=HISTORY_STREAM, ordered_consumer=True
    )
    try:
        for _ in range(expected):
            event = json.loads((await subscription.next_msg(timeout=READ_TIMEOUT_S)).data)
            task_id = task_id_of(event["run_id"], event["step_id"])
            history[task_id].append(
                f"{event['type']} attempt {event.get('attempt_number')} at {event['timestamp']}"
            )
            if event["type"] in TERMINAL_TYPES:
                terminal[task_id] += 1
    finally:
        await subscription.unsubscribe()
    wanted = {task_id_of(run_id, STEP) for run_id in runs}
    return TerminalCount(
        lost=sum(1 for task_id in wanted if terminal[task_id] == 0),
        duplicated=sum(count - 1 for task_id, count in terminal.items() if count > 1),
        unexpected=sum(1 for task_id in terminal if task_id not in wanted),
        doubled={task_id: history[task_id] for task_id, count in terminal.items() if count > 1},
    )


@attrs.define
class Progress:
    """What the fleet saw, shared by its workers. Mutable on purpose: it accumulates."""

    completed: dict[str, float] = attrs.field(factory=dict)
    """Task id -> monotonic time of the first 200 on its `complete`."""
    sent_at: dict[str, float] = attrs.field(factory=dict)
    """Task id -> monotonic time that completing resolve was sent."""
    given_up: int = 0
    retries: int = 0
    failure: BaseException | None = None
    changed: asyncio.Event = attrs.field(factory=asyncio.Event)

    def complete(self, task_id: str, sent_at: float) -> None:
        if task_id not in self.completed:
            self.completed[task_id] = time.monotonic()
            self.sent_at[task_id] = sent_at
            self.changed.set()

    def retried(self) -> None:
        self.retries += 1

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self.changed.set()

    def first_completion_sent_after(self, moment: float) -> float | None:
        """When the first completion whose request left after `moment` was answered."""
        answered = [
            self.completed[task_id] for task_id, sent in self.sent_at.items() if sent >= moment
        ]
        return min(answered, default=None)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Until `condition` holds after a change; a worker's failure is raised here."""
        while not condition():
            if self.failure is not None:
                raise AssertionError(f"a worker failed: {self.failure!r}") from self.failure
            self.changed.clear()
            await self.changed.wait()


@attrs.frozen(kw_only=True)
class Routes:
    """Which bridge a worker's n-th poll goes to, and where its tasks are resolved: with two
    bridges, round robin, each task resolved on the bridge that did not hand it out."""

    bridges: Sequence[str]

    def poll_url(self, turn: int) -> str:
        return f"{self.bridges[turn % len(self.bridges)]}/v1/tasks/poll"

    def resolve_url(self, turn: int, task_id: str) -> str:
        return f"{self.bridges[(turn + 1) % len(self.bridges)]}/v1/tasks/{task_id}/resolve"


@attrs.define
class Worker:
    """An HTTP worker: polls a batch, completes every task of it at once, polls again.

    A poll that fails on the way is repeated with the same `poll_id` (Decision 13); a
    resolve is repeated until it is answered 200, 404 or 409. Mutable on purpose: its turn.
    """

    http: httpx.AsyncClient
    routes: Routes
    progress: Progress
    max_tasks: int
    worker_id: str | None = None
    turn: int = 0

    async def run(self) -> None:
        try:
            while True:
                tasks = await self.poll()
                turn, self.turn = self.turn, self.turn + 1
                await asyncio.gather(*(self.complete(turn, task) for task in tasks))
        except Exception as exc:
            self.progress.fail(exc)
            raise

    async def poll(self) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "task_types": [TASK_TYPE],
            "max_tasks": self.max_tasks,
            "timeout_ms": POLL_TIMEOUT_MS,
            "poll_id": uuid.uuid4().hex,
        }
        if self.worker_id is not None:
            body["worker_id"] = self.worker_id
        answer = await self._until_answered(lambda: self.routes.poll_url(self.turn), body)
        if answer.status_code != httpx.codes.OK:
            raise AssertionError(f"poll answered {answer.status_code}: {answer.text}")
        tasks: list[dict[str, Any]] = answer.json()
        return tasks

    async def complete(self, turn: int, task: dict[str, Any]) -> None:
        # The task's work: it takes a while, and not the same while for every task.
        await asyncio.sleep(random.uniform(0, WORK_S))
        body: dict[str, Any] = {
            "action": "complete",
            "output": {"run": task["run_id"]},
            "lease_id": task["lease_id"],
        }
        if self.worker_id is not None:
            body["worker_id"] = self.worker_id
        sent_at = time.monotonic()
        answer = await self._until_answered(
            lambda: self.routes.resolve_url(turn, task["task_id"]), body
        )
        if answer.status_code == httpx.codes.OK:
            self.progress.complete(task["task_id"], sent_at)
        elif answer.status_code in GIVEN_UP_STATUSES:
            self.progress.given_up += 1
        else:
            raise AssertionError(f"resolve answered {answer.status_code}: {answer.text}")

    async def _until_answered(self, url: Callable[[], str], body: dict[str, Any]) -> httpx.Response:
        return await post_until_answered(self.http, url, body, on_retry=self.progress.retried)


async def post_until_answered(
    http: httpx.AsyncClient,
    url: Callable[[], str],
    body: dict[str, Any],
    on_retry: Callable[[], None] = lambda: None,
) -> httpx.Response:
    """Post until the answer is not a transport error or a retried status, as a worker does."""
    backoff = FIRST_BACKOFF_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            answer = await http.post(url(), json=body)
            if answer.status_code not in RETRIED_STATUSES:
                return answer
        on_retry()
        await asyncio.sleep(backoff)  # a retry's backoff: nothing to await but time
        backoff = min(backoff * 2, MAX_BACKOFF_S)


@contextlib.asynccontextmanager
async def fleet(
    bridges: Sequence[str], progress: Progress, *, workers: int, max_tasks: int
) -> collections.abc.AsyncIterator[None]:
    """`workers` HTTP workers, each with its own keep-alive client, running until the block
    ends; a worker that fails makes the block fail."""
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for _ in range(workers):
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S))
            worker = Worker(http, Routes(bridges=bridges), progress, max_tasks)
            running.append(asyncio.ensure_future(worker.run()))
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if progress.failure is not None:
            raise AssertionError(f"a worker failed: {progress.failure!r}") from progress.failure
