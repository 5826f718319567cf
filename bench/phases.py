"""The measurements of one run, each on task types of its own, against the same rig."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs
import psutil
from nats.js.client import JetStreamContext

from adapters.nats.consumers import TypeConsumers
from bench.config import BenchConfig
from bench.direct import DirectWorkerProcess
from bench.load import (
    BridgeClient,
    Tally,
    complete_tasks,
    hammer,
    hold_leases,
    open_session,
)
from bench.probes import bridge_wakeups, direct_wakeups
from bench.procs import ServerProcess, cpu_seconds, established_connections, pss_mib, rss_mib
from bench.stats import latency_summary
from bench.tasks import TaskPublisher, fresh_type

IDLE_POLL_TIMEOUT_MS: Final = 30_000
CONNECT_TIMEOUT_S: Final = 20.0
SETTLE_S: Final = 3.0
"""After the idle polls' connections are up, time for the bridges to park every request."""
WARM_UP_TIMEOUT_MS: Final = 1
MAX_ACK_PENDING: Final = 1000
"""JetStream's default for a consumer, which the bridge's `workers-<type>` consumers keep."""


@attrs.frozen
class Snapshot:
    wall: float
    bridges_cpu: float
    nats_cpu: float
    generator_cpu: float


@attrs.frozen(kw_only=True)
class Rig:
    """One nats-server, the bridges over it, the direct worker, and the HTTP fleet's clients."""

    config: BenchConfig
    js: JetStreamContext
    consumers: TypeConsumers
    bridges: Sequence[ServerProcess]
    bridge_stats: Sequence[psutil.Process]
    nats_stats: psutil.Process
    direct: DirectWorkerProcess
    clients: Sequence[BridgeClient]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            wall=time.perf_counter(),
            bridges_cpu=cpu_seconds(self.bridge_stats),
            nats_cpu=cpu_seconds([self.nats_stats]),
            generator_cpu=time.process_time(),
        )

    async def warm_up(self, task_type: str, clients: Sequence[BridgeClient] | None = None) -> None:
        """A first poll on each bridge: consumer look-up and puller set-up stay out of timings."""
        for client in clients or self.clients:
            await client.poll(task_type, 1, WARM_UP_TIMEOUT_MS)


def per_1k(cpu_s: float, tasks: int) -> float:
    return cpu_s / tasks * 1000


async def direct_round(rig: Rig, batch: int) -> dict[str, float]:
    """Tasks/s and CPU of the direct worker draining a preloaded queue."""
    task_type, tasks = fresh_type(f"d{batch}"), rig.config.tasks
    await rig.direct.prepare(task_type, batch, rig.config.fleet)
    await TaskPublisher(rig.js, task_type).publish(tasks)
    before = rig.snapshot()
    reply = await rig.direct.run(tasks)
    after = rig.snapshot()
    return {
        "tasks_per_s": tasks / reply["elapsed_s"],
        "cpu_s_per_1k": per_1k(reply["cpu_s"], tasks),
        "nats_cpu_s_per_1k": per_1k(after.nats_cpu - before.nats_cpu, tasks),
    }


async def bridge_round(rig: Rig, batch: int) -> dict[str, float]:
    """Tasks/s and CPU of the bridges while the fleet drains a preloaded queue."""
    task_type, tasks = fresh_type(f"b{batch}"), rig.config.tasks
    await rig.warm_up(task_type)
    await TaskPublisher(rig.js, task_type).publish(tasks)
    ends: list[Snapshot] = []
    tally = Tally(target=tasks, on_done=lambda: ends.append(rig.snapshot()))
    start = rig.snapshot()
    await complete_tasks(
        rig.clients, rig.config.fleet, task_type, batch, tally, batched=rig.config.batch_resolve
    )
    end = ends[0]
    elapsed = end.wall - start.wall
    return {
        "tasks_per_s": tasks / elapsed,
        "cpu_s_per_1k": per_1k(end.bridges_cpu - start.bridges_cpu, tasks),
        "nats_cpu_s_per_1k": per_1k(end.nats_cpu - start.nats_cpu, tasks),
        "requests_per_s": tally.requests / elapsed,
        # Near 100 x bridges means they were saturated; far below, the fleet was too small.
        "bridges_cpu_pct": (end.bridges_cpu - start.bridges_cpu) / elapsed * 100,
        "generator_cpu_pct": (end.generator_cpu - start.generator_cpu) / elapsed * 100,
    }


def paced_total(rig: Rig, rate: float) -> int:
    return max(1, round(rate * rig.config.paced_seconds))


async def direct_paced(rig: Rig, batch: int, rate: float) -> dict[str, Any]:
    """Resolve and wake-up latencies of the direct worker at `rate` tasks a second."""
    task_type, probe_type = fresh_type(f"pd{batch}"), fresh_type(f"wd{batch}")
    total, stop = paced_total(rig, rate), asyncio.Event()
    await rig.direct.prepare(task_type, batch, rig.config.fleet)
    probe_publisher = TaskPublisher(rig.js, probe_type)
    run = asyncio.create_task(rig.direct.run(total))
    probe = asyncio.create_task(direct_wakeups(rig.js, rig.consumers, probe_publisher, stop))
    await TaskPublisher(rig.js, task_type).publish_paced(total, rate)
    stop.set()
    reply, wakeups = await asyncio.gather(run, probe)
    return {
        "resolve": reply["resolve"],
        "wakeup": latency_summary(wakeups),
        "paced_cpu_s_per_1k": per_1k(reply["cpu_s"], total),
    }


async def bridge_paced(rig: Rig, batch: int, rate: float) -> dict[str, Any]:
    """Resolve and wake-up latencies through the bridges at `rate` tasks a second."""
    task_type, probe_type = fresh_type(f"pb{batch}"), fresh_type(f"wb{batch}")
    total, stop = paced_total(rig, rate), asyncio.Event()
    probe_client = rig.clients[0]
    await rig.warm_up(task_type)
    await rig.warm_up(probe_type, [probe_client])
    tally = Tally(target=total)
    fleet = asyncio.create_task(
        complete_tasks(
            rig.clients, rig.config.fleet, task_type, batch, tally, batched=rig.config.batch_resolve
        )
    )
    probe_publisher = TaskPublisher(rig.js, probe_type)
    probe = asyncio.create_task(bridge_wakeups(probe_client, probe_publisher, batch, stop))
    start = rig.snapshot()
    await TaskPublisher(rig.js, task_type).publish_paced(total, rate)
    stop.set()
    _, wakeups = await asyncio.gather(fleet, probe)
    end = rig.snapshot()
    return {
        "resolve": latency_summary(tally.resolve_s),
        "wakeup": latency_summary(wakeups),
        # The wake-up probe's few polls are in these two as well.
        "paced_cpu_s_per_1k": per_1k(end.bridges_cpu - start.bridges_cpu, total),
        "paced_requests_per_task": tally.requests / total,
    }


async def idle_polls(rig: Rig) -> dict[str, Any]:
    """CPU and RSS of the bridges while they hold `idle_polls` long-polls that find nothing."""
    task_type, count = fresh_type("idle"), rig.config.idle_polls
    await rig.warm_up(task_type)
    already = established_connections(rig.bridges)
    before = rss_mib(rig.bridge_stats)
    async with open_session() as session:
        clients = [BridgeClient(session, bridge.url) for bridge in rig.bridges]
        polls = [
            asyncio.create_task(clients[i % len(clients)].poll(task_type, 1, IDLE_POLL_TIMEOUT_MS))
            for i in range(count)
        ]
        connected = await _connections_reach(rig.bridges, already + count)
        await asyncio.sleep(SETTLE_S)
        start = rig.snapshot()
        await asyncio.sleep(rig.config.idle_window_seconds)  # the measurement window itself
        end = rig.snapshot()
        rss, pss = rss_mib(rig.bridge_stats), pss_mib(rig.bridge_stats)
        answered = sum(poll.done() for poll in polls)
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    return {
        "polls": count,
        "connections": connected - already,
        "answered_early": answered,
        "window_s": end.wall - start.wall,
        "cpu_pct_of_one_core": (end.bridges_cpu - start.bridges_cpu)
        / (end.wall - start.wall)
        * 100,
        "rss_mib": sum(rss),
        "rss_mib_per_process": rss,
        "pss_mib": pss,
        "rss_before_mib": sum(before),
    }


async def _connections_reach(bridges: Sequence[ServerProcess], wanted: int) -> int:
    """The bridges' established connections once they reach `wanted`, or at the time limit."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    count = established_connections(bridges)
    while count < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # connections come up with no event we could await
        count = established_connections(bridges)
    return count


async def leases_in_flight(rig: Rig) -> dict[str, Any]:
    """Bridges' RSS growth from holding `leases` leases (polled, never resolved).

    Spread over task types: a consumer the bridge creates has JetStream's default
    MaxAckPending, so no more than that many of one type's deliveries are out at once.
    """
    count = rig.config.leases
    types = [fresh_type("lease") for _ in range(math.ceil(count / MAX_ACK_PENDING))]
    for task_type in types:
        await rig.warm_up(task_type)
    before = rss_mib(rig.bridge_stats)
    for index, task_type in enumerate(types):
        share = count // len(types) + (index < count % len(types))
        await TaskPublisher(rig.js, task_type).publish(share)
    tally = Tally(target=count)
    await hold_leases(rig.clients, rig.config.fleet, types, tally)
    after = rss_mib(rig.bridge_stats)
    return {
        "leases": tally.count,
        "task_types": len(types),
        "rss_before_mib": sum(before),
        "rss_after_mib": sum(after),
        "delta_mib": sum(after) - sum(before),
    }


async def generator_ceiling(
    clients: Sequence[BridgeClient], fleet: int, seconds: float
) -> dict[str, float]:
    """Requests/s the fleet reaches against trivial endpoints, and its own CPU meanwhile."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    requests = await hammer(clients, fleet, seconds)
    elapsed = time.perf_counter() - start_wall
    return {
        "requests_per_s": requests / elapsed,
        "generator_cpu_pct": (time.process_time() - start_cpu) / elapsed * 100,
    }
