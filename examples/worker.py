"""An example worker for the DagNats HTTP bridge: asyncio and httpx, nothing else.

A worker does four things, and this file does them in this order:

1. It keeps `POST /v1/workers/connect` open in the background. The open event stream is the
   worker's registration: while it is open the bridge ties the worker's leases to it, caps
   them at its `max_tasks`, and when it closes hands the worker's unresolved tasks to someone
   else at once instead of after the AckWait. When the stream drops, the worker reconnects
   with a capped exponential backoff and jitter.
2. It long-polls `POST /v1/tasks/poll` once per task type, because a poll's answer does not
   say which type each task is, and the type picks the handler. It polls only while the stream
   is open: a poll that fails as the stream drops is retried once a new stream is open.
3. It runs each task's handler, heartbeating the task's lease while the handler runs.
4. It resolves the task: `complete` with the handler's output, or `fail` with the
   `failure_type` the handler chose (an output that is not JSON fails it as `non_retriable`).

On SIGTERM or SIGINT it stops polling, lets the running tasks finish and resolve, closes the
stream and exits 0. A second signal abandons the running tasks instead: closing the stream
makes the bridge hand them out again at once.

    DAGNATS_BRIDGE_URL=http://127.0.0.1:8080 python examples/worker.py demo.echo demo.flaky

`DAGNATS_BRIDGE_TOKEN`, when set, is sent as `Authorization: Bearer`. The handlers below are
demonstrations: replace `HANDLERS` with your own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

log = logging.getLogger("worker")

DEFAULT_URL: Final = "http://127.0.0.1:8080"
POLL_TIMEOUT_MS: Final = 20_000
"""How long the bridge holds a poll that finds nothing; the HTTP timeout allows more."""
REQUEST_TIMEOUT_S: Final = 10.0
DEFAULT_STREAM_TIMEOUT_S: Final = 90.0
"""The bridge sends a heartbeat event every 25 s by default: silence for over three intervals
means the connection is dead, even if TCP has not noticed. `--stream-timeout` sets it for a
bridge with another heartbeat interval."""
DEFAULT_MAX_BACKOFF_S: Final = 30.0
RESOLVE_TRIES: Final = 6
"""A resolve is retried this many times at most (about 30 s of backoff by default); after that
the lease runs out and the bridge hands the task out again."""
MAX_RETRY_AFTER_S: Final = 3600.0
"""A longer `Retry-After` than an hour is taken for a broken header, not for advice."""


# --- What a handler sees and returns ---------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One poll item. `lease_id` goes back with every resolve: a resolve with a lease that is
    no longer current (the task was redelivered meanwhile) is refused with 409."""

    task_type: str
    task_id: str
    run_id: str
    step_id: str
    attempt: int
    lease_id: str
    iteration: int = 0
    input: Any = None
    checkpoint: Any = None
    """What an earlier delivery of this task saved with `pause` or `checkpoint`."""

    @classmethod
    def from_poll(cls, task_type: str, item: dict[str, Any]) -> Task:
        return cls(
            task_type=task_type,
            task_id=item["task_id"],
            run_id=item["run_id"],
            step_id=item["step_id"],
            attempt=item["attempt"],
            lease_id=item["lease_id"],
            iteration=item.get("iteration", 0),
            input=item.get("input"),
            checkpoint=item.get("checkpoint"),
        )


class TaskFailedError(Exception):
    """Raise from a handler to fail the task with a chosen failure_type; any other exception
    fails it as `retriable`, so that the engine retries it with its backoff."""

    def __init__(
        self, error: str, failure_type: str = "retriable", retry_after_ms: int | None = None
    ) -> None:
        super().__init__(error)
        self.failure_type = failure_type
        self.retry_after_ms = retry_after_ms

    def resolution(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": "fail",
            "error": str(self),
            "failure_type": self.failure_type,
        }
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        return body


Handler = Callable[[Task], Awaitable[Any]]
"""Takes a task, returns its output (any JSON value) or raises."""


# --- Demonstration handlers ------------------------------------------------------------------


async def echo(task: Task) -> Any:
    """Completes with its input as its output."""
    return task.input


async def flaky(task: Task) -> Any:
    """Fails its first attempt as retriable: the engine runs it again as attempt 2."""
    if task.attempt == 1:
        raise TaskFailedError("flaky on its first attempt, on purpose")
    return {"succeeded_on_attempt": task.attempt}


async def slow(task: Task) -> Any:
    """Works for `input.seconds` (default 3), its lease kept by heartbeats: against a bridge with
    a shorter `--ack-wait-ms`, it would be handed out again without them."""
    seconds = float((task.input or {}).get("seconds", 3))
    await asyncio.sleep(seconds)
    return {"slept_seconds": seconds}


async def reject(task: Task) -> Any:
    """Fails for good: a retry would not help, so the run fails at once."""
    raise TaskFailedError("refused on purpose: no retry can help", failure_type="non_retriable")


HANDLERS: Final[dict[str, Handler]] = {
    "demo.echo": echo,
    "demo.flaky": flaky,
    "demo.slow": slow,
    "demo.reject": reject,
}


# --- Talking to the bridge -------------------------------------------------------------------


class FatalError(Exception):
    """An answer that retrying cannot change (a bad token, a bad request): the worker stops."""


class Backoff:
    """Capped exponential backoff with full jitter: many workers that lost the same bridge do
    not all come back in the same instant."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    async def sleep(
        self, at_least_s: float = 0.0, cut_short_by: asyncio.Event | None = None
    ) -> None:
        """Sleep the next delay, or until `cut_short_by` is set: whichever comes first."""
        ceiling = min(self.cap_s, self.first_s * 2**self.failures)
        self.failures += 1
        jittered = random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret
        delay = max(jittered, at_least_s)
        if cut_short_by is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cut_short_by.wait(), delay)


def retry_after_s(response: httpx.Response) -> float:
    """The bridge answers 503 with `Retry-After` (seconds) while its NATS is unreachable; an
    unusable value (not a number, negative, infinite, NaN, over an hour) counts as none."""
    try:
        seconds = float(response.headers.get("retry-after", 0))
    except ValueError:
        return 0.0
    return seconds if 0.0 <= seconds <= MAX_RETRY_AFTER_S else 0.0  # NaN fails both tests


def problem_detail(response: httpx.Response) -> str:
    """Errors are `application/problem+json`; `detail` says what is wrong."""
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        detail = response.text
    return f"HTTP {response.status_code}: {detail}"


def describe(exc: Exception) -> str:
    """httpx's timeouts have no message; their type says it."""
    return str(exc) or type(exc).__name__


def is_temporary(response: httpx.Response) -> bool:
    """5xx is the bridge's trouble (503 while NATS is away, or while it drains): try again."""
    return response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR


# --- The worker ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Worker:
    http: httpx.AsyncClient
    handlers: dict[str, Handler]
    worker_id: str
    concurrency: int
    heartbeat_every_s: float
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the connect stream is open."""
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    """The latest connect stream's: a new one for each stream, set when that stream closes."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    running: set[asyncio.Task[None]] = field(default_factory=set)
    slot_freed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_signal(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new tasks; %d running task(s) finish first", len(self.running))
            self.stopping.set()
            return
        log.warning("second signal: abandoning %d running task(s)", len(self.running))
        for job in self.running:
            job.cancel()

    async def run(self) -> int:
        """Serve until a signal (exit status 0) or a fatal answer (1)."""
        connection = asyncio.create_task(self.keep_connected())
        pollers = [
            asyncio.create_task(self.poll_forever(task_type, handler))
            for task_type, handler in self.handlers.items()
        ]
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([stop, connection, *pollers], return_when=asyncio.FIRST_COMPLETED)
        fatal = [
            error for job in [connection, *pollers] if job.done() and (error := job.exception())
        ]
        # Cancelling a poll in flight is safe: the bridge releases the tasks of a poller that
        # left before its answer, and any it did hand out are released below, when the stream
        # closes.
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        log.info("stopped polling")
        if self.running:
            await asyncio.wait(self.running)
        # Closing the stream only now: it would release the leases of the tasks still running.
        connection.cancel()
        stop.cancel()
        await asyncio.gather(connection, stop, return_exceptions=True)
        log.info("disconnected")
        for error in fatal:
            log.error("%s", error)
        return 1 if fatal else 0

    # 1. The connect stream --------------------------------------------------------------------

    def backoff(self) -> Backoff:
        return Backoff(cap_s=self.max_backoff_s)

    async def keep_connected(self) -> None:
        backoff = self.backoff()
        registration = {
            "worker_id": self.worker_id,
            "task_types": list(self.handlers),
            "max_tasks": self.concurrency,
        }
        while True:
            try:
                await self.listen(registration, backoff)
            except httpx.HTTPError as exc:
                log.warning("connect stream: %s", describe(exc))
            finally:
                self.connected.clear()
                self.stream_closed.set()
            await backoff.sleep()

    async def listen(self, registration: dict[str, Any], backoff: Backoff) -> None:
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=self.stream_timeout_s)
        async with self.http.stream(
            "POST", "/v1/workers/connect", json=registration, timeout=timeout
        ) as response:
            if response.status_code != httpx.codes.OK:
                await response.aread()
                if not is_temporary(response):
                    raise FatalError(f"connect: {problem_detail(response)}")
                log.warning("connect: %s", problem_detail(response))
                return
            log.info("connected as %s for %s", self.worker_id, ", ".join(self.handlers))
            self.stream_closed = asyncio.Event()
            self.connected.set()
            backoff.reset()
            async for line in response.aiter_lines():
                # `event: heartbeat` says the bridge is alive; anything else is worth a line.
                if line.startswith("event:") and line != "event: heartbeat":
                    log.info("connect stream: %s", line)
        log.warning("connect stream closed by the bridge")

    # 2. Polling -------------------------------------------------------------------------------

    async def poll_forever(self, task_type: str, handler: Handler) -> None:
        idle = self.backoff()
        while True:
            # Poll only while registered, so that every lease is tied to the open stream.
            await self.connected.wait()
            room = await self.free_slots()
            asked_at = time.monotonic()
            tasks = await self.poll(task_type, room)
            for task in tasks:
                self.start(handler, task)
            if tasks or time.monotonic() - asked_at > POLL_TIMEOUT_MS / 2000:
                idle.reset()
            else:
                # Empty long before the timeout: the bridge has no room for this worker (it
                # counts a lease we no longer do) or is shutting down. Without a pause this
                # loop would spin.
                await idle.sleep()

    async def free_slots(self) -> int:
        while len(self.running) >= self.concurrency:
            self.slot_freed.clear()
            await self.slot_freed.wait()
        return self.concurrency - len(self.running)

    async def poll(self, task_type: str, max_tasks: int) -> list[Task]:
        # A fresh poll_id per poll, the same one on every retry of it: if an answer is lost on
        # the way, the retry gets the same tasks instead of leaving them leased to nobody.
        stream_closed = self.stream_closed
        body = {
            "task_types": [task_type],
            "max_tasks": max_tasks,
            "timeout_ms": POLL_TIMEOUT_MS,
            "worker_id": self.worker_id,
            "poll_id": uuid.uuid4().hex,
        }
        backoff = self.backoff()
        while True:
            try:
                response = await self.http.post(
                    "/v1/tasks/poll", json=body, timeout=POLL_TIMEOUT_MS / 1000 + REQUEST_TIMEOUT_S
                )
            except httpx.TransportError as exc:
                log.warning("poll %s: %s; retrying", task_type, describe(exc))
                await backoff.sleep(cut_short_by=stream_closed)
            else:
                if response.status_code == httpx.codes.OK:
                    return [Task.from_poll(task_type, item) for item in response.json()]
                if not is_temporary(response):
                    raise FatalError(f"poll: {problem_detail(response)}")
                log.warning("poll %s: %s; retrying", task_type, problem_detail(response))
                await backoff.sleep(retry_after_s(response), cut_short_by=stream_closed)
            if stream_closed.is_set():
                # Retry only once registered again: the bridge would tie the leases of a poll
                # it answered meanwhile to no stream. The closed stream's leases, a lost
                # answer's too, went back to the queue: a new poll_id, lest a replay answer
                # them. The failures were the outage's: the backoff starts over.
                await self.connected.wait()
                stream_closed = self.stream_closed
                body["poll_id"] = uuid.uuid4().hex
                backoff.reset()

    # 3. Running a task ------------------------------------------------------------------------

    def start(self, handler: Handler, task: Task) -> None:
        # Keep a reference: the event loop holds only a weak one to a running task.
        job = asyncio.create_task(self.work(handler, task), name=task.task_id)
        self.running.add(job)
        job.add_done_callback(self.finished)

    def finished(self, job: asyncio.Task[None]) -> None:
        self.running.discard(job)
        self.slot_freed.set()

    async def work(self, handler: Handler, task: Task) -> None:
        log.info("%s %s attempt %d: started", task.task_type, task.task_id, task.attempt)
        handling = asyncio.create_task(self.outcome(handler, task))
        heartbeats = asyncio.create_task(self.heartbeat(task))
        try:
            await asyncio.wait([handling, heartbeats], return_when=asyncio.FIRST_COMPLETED)
        finally:
            heartbeats.cancel()
            if not handling.done():
                handling.cancel()  # the lease is gone, or the worker abandons the task
            await asyncio.gather(handling, heartbeats, return_exceptions=True)
        if handling.cancelled():
            return
        resolution = handling.result()
        if await self.resolve(task, resolution):
            log.info("%s %s: %s", task.task_type, task.task_id, resolution["action"])

    async def outcome(self, handler: Handler, task: Task) -> dict[str, Any]:
        try:
            output = await handler(task)
        except TaskFailedError as failure:
            return failure.resolution()
        except Exception as exc:
            log.exception("%s %s: handler raised", task.task_type, task.task_id)
            error = f"{type(exc).__name__}: {exc}"
            return {"action": "fail", "error": error, "failure_type": "retriable"}
        try:
            json.dumps(output, allow_nan=False)  # as strict as httpx, which sends it
        except (TypeError, ValueError) as exc:
            log.error("%s %s: output is not JSON: %s", task.task_type, task.task_id, exc)
            # The same input would give the same output again: a retry cannot help.
            error = f"the handler's output is not JSON: {exc}"
            return {"action": "fail", "error": error, "failure_type": "non_retriable"}
        return {"action": "complete", "output": output}

    async def heartbeat(self, task: Task) -> None:
        """Extend the lease every interval; return when the lease is gone.

        Without it the bridge hands the task to another worker after the AckWait (5 min by
        default), so the interval must be well under it.
        """
        while True:
            await asyncio.sleep(self.heartbeat_every_s)
            if not await self.resolve(task, {"action": "heartbeat"}):
                return

    # 4. Resolving -----------------------------------------------------------------------------

    async def resolve(self, task: Task, resolution: dict[str, Any]) -> bool:
        """Send a resolve; False when the lease is no longer ours.

        Retrying is safe: a repeated terminal resolve with the same lease answers 200 again
        (with `X-Dagnats-Replayed: true`) and publishes nothing twice.
        """
        body = {**resolution, "lease_id": task.lease_id, "worker_id": self.worker_id}
        backoff = self.backoff()
        for _ in range(RESOLVE_TRIES):
            try:
                response = await self.http.post(f"/v1/tasks/{task.task_id}/resolve", json=body)
            except httpx.TransportError as exc:
                log.warning("resolve %s: %s; retrying", task.task_id, describe(exc))
            else:
                if not is_temporary(response):
                    return self.accepted(task, resolution, response)
                log.warning("resolve %s: %s; retrying", task.task_id, problem_detail(response))
            await backoff.sleep()
        log.error("resolve %s: gave up; the bridge hands the task out again", task.task_id)
        return False

    def accepted(self, task: Task, resolution: dict[str, Any], response: httpx.Response) -> bool:
        if response.status_code == httpx.codes.OK:
            return True
        if response.status_code in {httpx.codes.NOT_FOUND, httpx.codes.CONFLICT}:
            # 404: the lease expired; 409: the task was redelivered, under a newer lease.
            log.warning("%s %s: lease lost (%s)", task.task_type, task.task_id, response.text)
        else:
            action = resolution["action"]
            log.error(
                "%s %s: %s refused: %s",
                task.task_type,
                task.task_id,
                action,
                problem_detail(response),
            )
        return False


# --- Running it ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="An example DagNats bridge worker.")
    parser.add_argument(
        "task_types",
        nargs="*",
        metavar="TASK_TYPE",
        help=f"task types to serve (default: all of {', '.join(HANDLERS)})",
    )
    parser.add_argument(
        "--worker-id",
        default=f"example-worker-{uuid.uuid4().hex[:8]}",
        help="the id the bridge knows this worker by (default: example-worker-<random>)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="tasks run at once (default: 4)")
    parser.add_argument(
        "--heartbeat-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="heartbeat interval of a running task (default: 10)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=DEFAULT_MAX_BACKOFF_S,
        metavar="SECONDS",
        help="the longest pause between two tries to reach the bridge (default: 30)",
    )
    parser.add_argument(
        "--stream-timeout",
        type=float,
        default=DEFAULT_STREAM_TIMEOUT_S,
        metavar="SECONDS",
        help="silence after which the connect stream is taken for dead and reopened: over three"
        " of the bridge's heartbeat intervals (default: 90, for the bridge's default of 25 s)",
    )
    args = parser.parse_args(argv)
    args.task_types = args.task_types or list(HANDLERS)
    if unknown := [task_type for task_type in args.task_types if task_type not in HANDLERS]:
        parser.error(f"no handler for {', '.join(unknown)}")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    for flag in ("heartbeat_every", "max_backoff", "stream_timeout"):
        if not 0 < getattr(args, flag) < math.inf:
            parser.error(f"--{flag.replace('_', '-')} must be a positive number of seconds")
    return args


async def serve(args: argparse.Namespace) -> int:
    headers: dict[str, str] = {}
    if token := os.environ.get("DAGNATS_BRIDGE_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    base_url = os.environ.get("DAGNATS_BRIDGE_URL") or DEFAULT_URL
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S
    ) as http:
        worker = Worker(
            http=http,
            handlers={task_type: HANDLERS[task_type] for task_type in args.task_types},
            worker_id=args.worker_id,
            concurrency=args.concurrency,
            heartbeat_every_s=args.heartbeat_every,
            max_backoff_s=args.max_backoff,
            stream_timeout_s=args.stream_timeout,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.on_signal)
        return await worker.run()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: too chatty for a worker that long-polls.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(asyncio.run(serve(parse_args(sys.argv[1:]))))


if __name__ == "__main__":
    main()
