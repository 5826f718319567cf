"""The baseline: a direct nats-py worker doing per task what the bridge does on the wire.

Fetch a batch from the type's `workers-<type>` consumer, publish `step.started` for each
task, then per task publish `step.completed` and ack, awaiting JetStream's confirmation of
each (the bridge's acks are confirmed too). Events and payloads go through the bridge's own
codec, so the two sides pay the same encoding. It runs as its own process (`python -m
bench.direct NATS_URL`) so its CPU time is its own; it takes JSON commands on stdin and
answers each with one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from adapters.codec import decode, encode
from adapters.nats.consumers import TypeConsumers
from adapters.wire import HISTORY_STREAM, MSG_ID_HEADER, TASK_STREAM, history_subject
from bench.stats import latency_summary
from domain.models import Event, TaskPayload
from domain.protocol import STEP_COMPLETED, STEP_STARTED, event_msg_id

FETCH_TIMEOUT_S = 1.0
ROOT = Path(__file__).resolve().parent.parent
"""The checkout: the worker process runs `python -m bench.direct` from here."""
ACK_WAIT = timedelta(minutes=5)


@attrs.define
class Progress:
    """Tasks done so far against a target. Mutable on purpose: the worker loops count here."""

    target: int
    count: int = 0
    resolve_s: list[float] = attrs.field(factory=list)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    def add(self, resolve_s: float) -> None:
        self.count += 1
        self.resolve_s.append(resolve_s)
        if self.count >= self.target:
            self.done.set()


def _attempt(payload: TaskPayload, msg: Msg) -> int:
    """As the bridge derives it (PROTOCOL.md 1.4)."""
    return payload.attempt if payload.attempt > 0 else msg.metadata.num_delivered


async def _append(js: JetStreamContext, payload: TaskPayload, kind: str, attempt: int) -> None:
    event = Event(
        type=kind,
        run_id=payload.run_id,
        step_id=payload.step_id,
        timestamp=datetime.now(UTC),
        attempt_number=attempt,
    )
    msg_id = event_msg_id(payload.run_id, payload.step_id, kind, attempt)
    await js.publish(
        history_subject(payload.run_id),
        encode(event),
        stream=HISTORY_STREAM,
        headers={MSG_ID_HEADER: msg_id},
    )


async def _complete(
    js: JetStreamContext, msg: Msg, payload: TaskPayload, progress: Progress
) -> None:
    """The direct counterpart of a resolve `complete`, timed like one."""
    start = time.perf_counter()
    await _append(js, payload, STEP_COMPLETED, _attempt(payload, msg))
    await msg.ack_sync()
    progress.add(time.perf_counter() - start)


async def _work(
    js: JetStreamContext, sub: JetStreamContext.PullSubscription, batch: int, progress: Progress
) -> None:
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT_S)
        except nats.errors.TimeoutError:
            continue
        tasks = [(msg, decode(msg.data, TaskPayload)) for msg in msgs]
        await asyncio.gather(*(_append(js, p, STEP_STARTED, _attempt(p, m)) for m, p in tasks))
        await asyncio.gather(*(_complete(js, m, p, progress) for m, p in tasks))


@attrs.define
class DirectWorker:
    """Fetch loops on one task type at a time. Mutable on purpose: it holds the subscriptions."""

    js: JetStreamContext
    consumers: TypeConsumers
    _subs: list[JetStreamContext.PullSubscription] = attrs.field(init=False, factory=list)
    _batch: int = attrs.field(init=False, default=1)

    async def prepare(self, task_type: str, batch: int, loops: int) -> dict[str, Any]:
        """Create the type's consumer as the bridge would and bind `loops` pull subscriptions."""
        info = await self.consumers.ensure(task_type)
        self._batch = batch
        self._subs = [
            await self.js.pull_subscribe_bind(durable=info.name, stream=TASK_STREAM)
            for _ in range(loops)
        ]
        return {"ready": True}

    async def run(self, tasks: int) -> dict[str, Any]:
        """Work until `tasks` are done; wall and CPU seconds, and the resolves' latency."""
        progress = Progress(target=tasks)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        loops = [
            asyncio.create_task(_work(self.js, sub, self._batch, progress)) for sub in self._subs
        ]
        await progress.done.wait()
        elapsed, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for sub in self._subs:
            await sub.unsubscribe()
        return {
            "tasks": progress.count,
            "elapsed_s": elapsed,
            "cpu_s": cpu,
            "resolve": latency_summary(progress.resolve_s),
        }


async def serve(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    worker = DirectWorker(js, TypeConsumers(nc, js, TASK_STREAM, ACK_WAIT))
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = json.loads(line)
        if command["op"] == "prepare":
            reply = await worker.prepare(command["task_type"], command["batch"], command["loops"])
        else:
            reply = await worker.run(command["tasks"])
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    await nc.drain()


@attrs.define
class DirectWorkerProcess:
    """The generator's handle on the direct worker process. Mutable on purpose: the pipes."""

    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, nats_url: str) -> DirectWorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.direct", nats_url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def prepare(self, task_type: str, batch: int, loops: int) -> None:
        await self._ask({"op": "prepare", "task_type": task_type, "batch": batch, "loops": loops})

    async def run(self, tasks: int) -> dict[str, Any]:
        return await self._ask({"op": "run", "tasks": tasks})

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        await self.process.wait()

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None  # noqa: S101 - created with pipes
        assert self.process.stdout is not None  # noqa: S101
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the direct worker process exited")
        reply: dict[str, Any] = json.loads(line)
        return reply


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("nats_url")
    asyncio.run(serve(parser.parse_args(argv).nats_url))


if __name__ == "__main__":
    main()
