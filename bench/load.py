"""The HTTP side: a fleet of async workers on keep-alive connections, one bridge each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import attrs

POLL_TIMEOUT_MS: Final = 1000
CONNECTIONS_PER_WORKER: Final = 4
"""A worker resolves its batch concurrently, over at most this many connections on average."""
KEEP_ALIVE_S: Final = 3.0
"""Below uvicorn's 5 s keep-alive: a pooled connection is never reused as the server closes it."""
PHASE_TIMEOUT_S: Final = 120.0
"""A phase that has not reached its target by then has stalled: fail rather than hang."""
MAX_TASKS: Final = 100
"""Largest poll when taking leases (the bridge allows up to 256)."""


class HttpStatusError(RuntimeError):
    """The server answered a status the benchmark did not expect."""


def fleet_session(fleet: int) -> aiohttp.ClientSession:
    """Keep-alive connections, pooled; no total timeout, as long-polls need."""
    connector = aiohttp.TCPConnector(
        limit=fleet * CONNECTIONS_PER_WORKER, limit_per_host=0, keepalive_timeout=KEEP_ALIVE_S
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


def open_session() -> aiohttp.ClientSession:
    """No connection limit: one connection per concurrent request (the idle long-polls)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


@attrs.frozen
class BridgeClient:
    session: aiohttp.ClientSession
    url: str

    async def poll(self, task_type: str, max_tasks: int, timeout_ms: int) -> list[dict[str, Any]]:
        body = {"task_types": [task_type], "max_tasks": max_tasks, "timeout_ms": timeout_ms}
        async with self.session.post(f"{self.url}/v1/tasks/poll", json=body) as response:
            await _expect_ok(response)
            tasks: list[dict[str, Any]] = await response.json()
            return tasks

    async def complete(self, task: dict[str, Any]) -> None:
        task_id = quote(task["task_id"], safe="")
        body = {"action": "complete", "lease_id": task["lease_id"]}
        async with self.session.post(
            f"{self.url}/v1/tasks/{task_id}/resolve", json=body
        ) as response:
            await _expect_ok(response)
            await response.read()

    async def complete_all(self, tasks: list[dict[str, Any]]) -> None:
        """One batch resolve for all of them; every item must be answered 200."""
        body = [
            {"task_id": task["task_id"], "action": "complete", "lease_id": task["lease_id"]}
            for task in tasks
        ]
        async with self.session.post(f"{self.url}/v1/tasks/resolve", json=body) as response:
            await _expect_ok(response)
            answers: list[dict[str, Any]] = await response.json()
        failed = [answer for answer in answers if answer["status"] != 200]  # noqa: PLR2004
        if failed:
            raise HttpStatusError(f"{response.url}: items failed: {failed[:3]}")


async def _expect_ok(response: aiohttp.ClientResponse) -> None:
    if response.status != 200:  # noqa: PLR2004
        raise HttpStatusError(f"{response.url}: HTTP {response.status}: {await response.text()}")


@attrs.define
class Tally:
    """Tasks done against a target, and what it took. Mutable on purpose: workers count here."""

    target: int
    count: int = 0
    requests: int = 0
    resolve_s: list[float] = attrs.field(factory=list)
    done: asyncio.Event = attrs.field(factory=asyncio.Event)
    on_done: Callable[[], None] = attrs.field(default=lambda: None, kw_only=True)
    """Called once, the moment the target is reached: snapshots taken before the fleet stops."""

    def add(self, tasks: int) -> None:
        self.count += tasks
        if self.count >= self.target and not self.done.is_set():
            self.on_done()
            self.done.set()


async def _complete(client: BridgeClient, task: dict[str, Any], tally: Tally) -> None:
    start = time.perf_counter()
    await client.complete(task)
    tally.resolve_s.append(time.perf_counter() - start)
    tally.requests += 1
    tally.add(1)


async def _complete_all(client: BridgeClient, tasks: list[dict[str, Any]], tally: Tally) -> None:
    start = time.perf_counter()
    await client.complete_all(tasks)
    tally.resolve_s.extend([time.perf_counter() - start] * len(tasks))
    tally.requests += 1
    tally.add(len(tasks))


async def _poll_and_complete(
    client: BridgeClient, task_type: str, batch: int, tally: Tally, *, batched: bool
) -> None:
    while True:
        tasks = await client.poll(task_type, batch, POLL_TIMEOUT_MS)
        tally.requests += 1
        if batched and tasks:
            await _complete_all(client, tasks, tally)
        else:
            await asyncio.gather(*(_complete(client, task, tally) for task in tasks))


async def _poll_and_hold(client: BridgeClient, task_type: str, tally: Tally) -> None:
    while not tally.done.is_set():
        tasks = await client.poll(task_type, MAX_TASKS, POLL_TIMEOUT_MS)
        tally.requests += 1
        tally.add(len(tasks))


async def _until_done(workers: list[asyncio.Task[None]], tally: Tally) -> None:
    """Wait for the target, then stop the workers; a worker's failure ends the wait."""
    done = asyncio.create_task(tally.done.wait())
    await asyncio.wait(
        [done, *workers], timeout=PHASE_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    for task in (done, *workers):
        task.cancel()
    results = await asyncio.gather(done, *workers, return_exceptions=True)
    if tally.done.is_set():
        return
    failures = [r for r in results if isinstance(r, Exception)]
    if failures:
        raise failures[0]
    raise TimeoutError(f"{tally.count} of {tally.target} tasks in {PHASE_TIMEOUT_S:.0f} s")


async def complete_tasks(  # noqa: PLR0913 - the fleet's shape, one argument each
    clients: Sequence[BridgeClient],
    fleet: int,
    task_type: str,
    batch: int,
    tally: Tally,
    *,
    batched: bool = False,
) -> None:
    """`fleet` workers poll batches of `batch` and complete each task (`batched`: all of a
    poll's tasks in one batch resolve), until the tally's target."""
    workers = [
        asyncio.create_task(
            _poll_and_complete(clients[i % len(clients)], task_type, batch, tally, batched=batched)
        )
        for i in range(fleet)
    ]
    await _until_done(workers, tally)


async def hold_leases(
    clients: Sequence[BridgeClient], fleet: int, task_types: Sequence[str], tally: Tally
) -> None:
    """Poll without resolving until the tally's target of leases is held; every type is polled."""
    workers = [
        asyncio.create_task(
            _poll_and_hold(clients[i % len(clients)], task_types[i % len(task_types)], tally)
        )
        for i in range(max(fleet, len(task_types)))
    ]
    await _until_done(workers, tally)


async def hammer(clients: Sequence[BridgeClient], fleet: int, seconds: float) -> int:
    """Requests the fleet completes in `seconds` against trivial servers (empty polls)."""
    deadline = time.perf_counter() + seconds

    async def worker(client: BridgeClient) -> int:
        sent = 0
        while time.perf_counter() < deadline:
            await client.poll("trivial", 1, 1)
            sent += 1
        return sent

    return sum(await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(fleet))))
