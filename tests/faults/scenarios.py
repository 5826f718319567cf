"""The fault scenarios, one function each: start the processes, publish the load, let a fleet
of HTTP workers complete it while the fault strikes, then count terminal events per task.

The faults of a, b and d strike the instant a step.completed is stored, so that some resolve
is always between its terminal event and its last write (the worst moment, made repeatable).

Time to recover, measured from the moment the fault has struck (the server stopped, the
bridge or the node killed, the worker gone):
* a, b, d: until the first `complete` sent after that moment is answered 200;
* e: until every task the vanished worker held has been completed by another worker;
* c has no fault, so nothing to recover from.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import httpx
from nats.js.client import JetStreamContext

from adapters.wire import LEASES_BUCKET
from tests.faults.load import (
    TASK_TYPE,
    Progress,
    connect_observer,
    count_terminal_events,
    enqueue,
    fleet,
    outstanding,
    post_until_answered,
    queued_messages,
    run_ids,
)
from tests.faults.processes import Bridge, NatsNode, ProcessGroup, cluster_nodes

REPOSITORY: Final = Path(__file__).resolve().parents[2]
WORKERS: Final = 8
MAX_TASKS: Final = 16
FAULT_AT: Final = 0.3
"""The fault strikes once this share of the tasks is completed: mid-run."""
FAULT_ACK_WAIT_MS: Final = 10_000
"""AckWait of the runs where NATS or a bridge goes away: a message JetStream delivered to a
connection that died comes back after it, so the run's bound depends on it."""
OUTAGE_S: Final = 6.0
"""How long a restarted component stays down: longer than WORKFLOW_HISTORY's 5 s duplicate
window, as a restart by an orchestrator easily is."""
SHORT_ACK_WAIT_MS: Final = 2_000
"""AckWait of the run where a worker vanishes without a worker_id: its tasks come back so."""
GHOST_TASKS: Final = 32
BOUND_BASE_S: Final = 60.0
BOUND_TASKS_PER_S: Final = 20.0
"""The stated bound of a run: BOUND_BASE_S plus the load at this (pessimistic) rate."""
QUEUE_CHECK_S: Final = 0.1
REPLICAS: Final = 3
LEASES_STREAM: Final = f"KV_{LEASES_BUCKET}"
"""The bridge's own minimum for its lease bucket (app.main); the TTL only collects garbage."""


@attrs.frozen(kw_only=True)
class FaultResult:
    scenario: str
    tasks: int
    fault: str
    lost: int
    duplicated: int
    unexpected: int
    recover_s: float | None
    total_s: float
    bound_s: float
    finished: bool
    """Every task completed, and nothing left to deliver, before the bound."""
    retries: int
    given_up: int
    doubled: dict[str, list[str]]
    """Each task with more than one terminal event, and its history (for the report)."""
    left_in_stream: int
    """Messages TASK_QUEUES still holds at the end though its consumer has none to give."""

    @property
    def passed(self) -> bool:
        return self.finished and self.lost == 0 and self.duplicated == 0 and self.unexpected == 0


Fault = Callable[[Progress], Awaitable[float | None]]
"""Waits for its moment, strikes, and answers the time to recover (None: no fault)."""


def bound_for(tasks: int) -> float:
    return BOUND_BASE_S + tasks / BOUND_TASKS_PER_S


@attrs.frozen(kw_only=True)
class Load:
    """What a run serves: its name and fault as the table shows them, the load, the bridges
    the workers use and the NATS servers the test observes."""

    scenario: str
    fault: str
    tasks: int
    bridges: Sequence[Bridge]
    nats_urls: Sequence[str]


async def run_load(load: Load, fault: Fault) -> FaultResult:
    """Publish the tasks, complete them with the fleet while `fault` runs, and count.

    The run ends when every task was completed and the consumer has nothing left to
    deliver or to see acked (so nothing can be delivered again), or at the bound.
    """
    tasks = load.tasks
    bound = bound_for(tasks)
    observer = await connect_observer(load.nats_urls)
    try:
        js = observer.jetstream()
        runs = run_ids(tasks)
        await enqueue(js, runs)
        progress = Progress()
        started = time.monotonic()
        async with fleet(
            [b.url for b in load.bridges], progress, workers=WORKERS, max_tasks=MAX_TASKS
        ):
            faulting = asyncio.ensure_future(fault(progress))
            recover, finished = None, False
            try:
                async with asyncio.timeout(bound):
                    await _until_done(js, progress, tasks)
                    recover, finished = await faulting, True
            except TimeoutError:
                pass  # reported: not finished, and the counts say what is missing
            finally:
                faulting.cancel()
        total = time.monotonic() - started
        counted = await count_terminal_events(js, runs)
        left_in_stream = await queued_messages(js)
    finally:
        await observer.close()
    return FaultResult(
        scenario=load.scenario,
        tasks=tasks,
        fault=load.fault,
        lost=counted.lost,
        duplicated=counted.duplicated,
        unexpected=counted.unexpected,
        recover_s=recover,
        total_s=total,
        bound_s=bound,
        finished=finished,
        retries=progress.retries,
        given_up=progress.given_up,
        doubled=counted.doubled,
        left_in_stream=left_in_stream,
    )


async def _until_done(js: JetStreamContext, progress: Progress, tasks: int) -> None:
    await progress.wait_for(lambda: len(progress.completed) >= tasks)
    while True:
        if await outstanding(js) == 0:
            return
        await asyncio.sleep(QUEUE_CHECK_S)  # another process's state: no event to await


async def mid_run(progress: Progress, tasks: int) -> None:
    """Wait until FAULT_AT of the tasks are completed."""
    await progress.wait_for(lambda: len(progress.completed) >= tasks * FAULT_AT)


async def recovered_after(progress: Progress, struck: float) -> float:
    await progress.wait_for(lambda: progress.first_completion_sent_after(struck) is not None)
    answered = progress.first_completion_sent_after(struck)
    assert answered is not None
    return answered - struck


def _bridge(root: Path, nats_url: str, *flags: str) -> Bridge:
    root.mkdir(parents=True, exist_ok=True)
    return Bridge(root, nats_url, flags)


async def _started(group: ProcessGroup, *members: NatsNode | Bridge) -> None:
    for member in members:
        group.add(member)
        await asyncio.to_thread(member.start)


async def nats_restart(root: Path, tasks: int) -> FaultResult:
    """a: the (single) nats-server is stopped (SIGTERM) the instant a step.completed is stored,
    and started again on its port and store OUTAGE_S later."""
    return await _struck_and_restarted(
        root,
        tasks,
        struck="nats",
        signum=signal.SIGTERM,
        scenario="a. nats-server restarted",
        fault=f"SIGTERM as a step.completed lands, started {OUTAGE_S:.0f} s later",
    )


async def bridge_killed(root: Path, tasks: int) -> FaultResult:
    """b: the bridge gets SIGKILL the instant a step.completed is stored, and is started again
    on its port OUTAGE_S later."""
    return await _struck_and_restarted(
        root,
        tasks,
        struck="bridge",
        signum=signal.SIGKILL,
        scenario="b. bridge killed",
        fault=f"SIGKILL as a step.completed lands, started {OUTAGE_S:.0f} s later",
    )


async def _struck_and_restarted(  # noqa: PLR0913 - the scenario's own words
    root: Path,
    tasks: int,
    *,
    struck: Literal["nats", "bridge"],
    signum: signal.Signals,
    scenario: str,
    fault: str,
) -> FaultResult:
    """One nats-server and one bridge; `struck` gets `signum` the instant a step.completed is
    stored, and is started again (same port, same store) OUTAGE_S later."""
    group = ProcessGroup()
    try:
        server = NatsNode(root / "nats")
        bridge = _bridge(root, server.url, "--ack-wait-ms", str(FAULT_ACK_WAIT_MS))
        await _started(group, server, bridge)
        victim: NatsNode | Bridge = server if struck == "nats" else bridge

        async with striking([server.url], victim.pid, signum, tasks) as striker:

            async def restart(progress: Progress) -> float:
                struck_at = await striker.struck()
                await asyncio.to_thread(victim.wait)
                await _outage_from(struck_at)
                await asyncio.to_thread(victim.start)
                return await recovered_after(progress, struck_at)

            return await run_load(
                Load(
                    scenario=scenario,
                    fault=fault,
                    tasks=tasks,
                    bridges=[bridge],
                    nats_urls=[server.url],
                ),
                restart,
            )
    finally:
        await asyncio.to_thread(group.stop_all)


async def _outage_from(struck: float) -> None:
    """Keep the component down until OUTAGE_S after it was struck."""
    await asyncio.sleep(max(0.0, struck + OUTAGE_S - time.monotonic()))


async def two_bridges(root: Path, tasks: int) -> FaultResult:
    """c: two bridges, each worker polling them in turn and resolving on the other one."""
    group = ProcessGroup()
    try:
        server = NatsNode(root / "nats")
        first, second = _bridge(root, server.url), _bridge(root, server.url)
        await _started(group, server, first, second)

        async def no_fault(_: Progress) -> None:
            return None

        return await run_load(
            Load(
                scenario="c. two bridges, round robin",
                fault="none: poll on one bridge, resolve on the other",
                tasks=tasks,
                bridges=[first, second],
                nats_urls=[server.url],
            ),
            no_fault,
        )
    finally:
        await asyncio.to_thread(group.stop_all)


async def cluster_node_lost(root: Path, tasks: int) -> FaultResult:
    """d: a 3-node cluster, streams and buckets R3. The node leading the bridge's lease bucket
    gets SIGKILL the instant a step.completed is stored, so at least one resolve is between
    its event and its last lease write: the lease writes in flight get no answer until a new
    leader serves."""
    group = ProcessGroup()
    try:
        nodes = cluster_nodes(root / "cluster")
        for node in nodes:
            group.add(node)
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        urls = [node.url for node in nodes]
        # `--provision --replicas 3`: the bridge creates every stream and bucket R3, once
        # the new cluster can place them.
        bridge = _bridge(
            root,
            ",".join(urls),
            "--ack-wait-ms", str(FAULT_ACK_WAIT_MS),
            "--replicas", str(REPLICAS),
        )  # fmt: skip
        await _started(group, bridge)

        leader = await stream_leader(urls, LEASES_STREAM)
        node = next(n for n in nodes if n.name == leader)
        async with striking(urls, node.pid, signal.SIGKILL, tasks) as striker:

            async def lose_the_lease_leader(progress: Progress) -> float:
                struck = await striker.struck()
                await asyncio.to_thread(node.wait)
                return await recovered_after(progress, struck)

            return await run_load(
                Load(
                    scenario="d. 3-node cluster, R3",
                    fault="SIGKILL of the lease bucket's leader node as a step.completed lands",
                    tasks=tasks,
                    bridges=[bridge],
                    nats_urls=urls,
                ),
                lose_the_lease_leader,
            )
    finally:
        await asyncio.to_thread(group.stop_all)


@attrs.define
class Striker:
    """`striker` in a process of its own: it sends the signal to the process the instant the
    `after`-th step.completed is stored. Mutable on purpose: it owns its process."""

    urls: Sequence[str]
    pid: int
    signum: signal.Signals
    after: int
    process: asyncio.subprocess.Process | None = attrs.field(default=None, init=False)

    async def start(self) -> None:
        """Start it and wait until it listens (before the load, so it counts every event)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.faults.striker",
            ",".join(self.urls),
            str(self.pid),
            self.signum.name,
            str(self.after),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPOSITORY,
        )
        assert (await self._line()) == "ready"

    async def struck(self) -> float:
        """The moment it struck, monotonic (one clock for every process on the machine)."""
        return float(await self._line())

    async def stop(self) -> None:
        if self.process is not None:
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()

    async def _line(self) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        return (await self.process.stdout.readline()).decode().strip()


@contextlib.asynccontextmanager
async def striking(
    urls: Sequence[str], pid: int, signum: signal.Signals, tasks: int
) -> AsyncIterator[Striker]:
    """A striker armed for FAULT_AT of the tasks: mid-run."""
    striker = Striker(urls, pid, signum, max(1, int(tasks * FAULT_AT)))
    try:
        await striker.start()
        yield striker
    finally:
        await striker.stop()


async def stream_leader(urls: Sequence[str], stream: str) -> str:
    observer = await connect_observer(urls)
    try:
        info = await observer.jetstream().stream_info(stream)
    finally:
        await observer.close()
    if info.cluster is None or info.cluster.leader is None:
        raise AssertionError(f"stream {stream} has no leader")
    return info.cluster.leader


async def worker_vanishes(root: Path, tasks: int, *, with_worker_id: bool) -> FaultResult:
    """e: a worker takes tasks and is never heard of again. With a worker_id and a connect
    stream, the stream closing releases its leases at once (Decision 12); without, its tasks
    come back after AckWait, short here."""
    group = ProcessGroup()
    try:
        server = NatsNode(root / "nats")
        flags = () if with_worker_id else ("--ack-wait-ms", str(SHORT_ACK_WAIT_MS))
        bridge = _bridge(root, server.url, *flags)
        await _started(group, server, bridge)

        async def vanish(progress: Progress) -> float:
            await mid_run(progress, tasks)
            held, struck = await _ghost(bridge.url, with_worker_id)
            await progress.wait_for(lambda: all(t in progress.completed for t in held))
            return max((progress.completed[t] for t in held), default=struck) - struck

        how = "with worker_id, connect stream closed" if with_worker_id else "no worker_id"
        ack_wait = "" if with_worker_id else f", AckWait {SHORT_ACK_WAIT_MS} ms"
        return await run_load(
            Load(
                scenario=f"e{1 if with_worker_id else 2}. worker vanishes ({how})",
                fault=f"a worker leaves holding up to {GHOST_TASKS} tasks{ack_wait}",
                tasks=tasks,
                bridges=[bridge],
                nats_urls=[server.url],
            ),
            vanish,
        )
    finally:
        await asyncio.to_thread(group.stop_all)


async def _ghost(bridge_url: str, with_worker_id: bool) -> tuple[list[str], float]:
    """Poll a batch and leave without resolving; the task ids and the moment it left."""
    body: dict[str, Any] = {
        "task_types": [TASK_TYPE],
        "max_tasks": GHOST_TASKS,
        "poll_id": uuid.uuid4().hex,
    }
    async with httpx.AsyncClient(base_url=bridge_url, timeout=30) as http:
        if not with_worker_id:
            return _task_ids(await _poll(http, body)), time.monotonic()
        worker = {"worker_id": "ghost", "task_types": [TASK_TYPE], "max_tasks": GHOST_TASKS}
        async with http.stream("POST", "/v1/workers/connect", json=worker) as stream:
            assert stream.status_code == httpx.codes.OK
            held = _task_ids(await _poll(http, {**body, **worker}))
    return held, time.monotonic()


async def _poll(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """The ghost polls as any worker does: a 503 is retried under the same `poll_id`."""
    return await post_until_answered(http, lambda: "/v1/tasks/poll", body)


def _task_ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == httpx.codes.OK, answer.text
    return [task["task_id"] for task in answer.json()]


Scenario = Callable[[Path, int], Awaitable[FaultResult]]


async def _vanishes_with_worker_id(root: Path, tasks: int) -> FaultResult:
    return await worker_vanishes(root, tasks, with_worker_id=True)


async def _vanishes_without_worker_id(root: Path, tasks: int) -> FaultResult:
    return await worker_vanishes(root, tasks, with_worker_id=False)


SCENARIOS: Final[dict[str, Scenario]] = {
    "nats_restart": nats_restart,
    "bridge_killed": bridge_killed,
    "two_bridges": two_bridges,
    "cluster_node_lost": cluster_node_lost,
    "worker_vanishes_with_worker_id": _vanishes_with_worker_id,
    "worker_vanishes_without_worker_id": _vanishes_without_worker_id,
}


def table(results: Sequence[FaultResult]) -> str:
    """The reliability table, markdown."""
    lines = [
        "| scenario | load | fault | tasks lost | terminal events duplicated "
        "| time to recover | total time (bound) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        recover = "n/a" if r.recover_s is None else f"{r.recover_s:.2f} s"
        lines.append(
            f"| {r.scenario} | {r.tasks} tasks, {WORKERS} workers | {r.fault} | {r.lost} "
            f"| {r.duplicated} | {recover} | {r.total_s:.1f} s (≤ {r.bound_s:.0f} s) |"
        )
    return "\n".join(lines)
