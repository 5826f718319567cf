"""The Prometheus adapter of the Telemetry port."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import attrs
import pytest
from nats.aio.client import Client as NatsClient

from adapters.memory.clock import ManualClock
from adapters.memory.leases import MemoryLeaseStore
from adapters.metrics import LEASE_COUNT_TTL, PrometheusTelemetry
from domain.errors import BackendUnavailableError
from domain.models import TaskId, TaskType, WorkerId
from domain.ports import LeaseStore, Telemetry
from domain.telemetry import Outcome, PollReport, ResolveReport
from tests.lease_builders import lease

SERVES_THE_PORT: type[Telemetry] = PrometheusTelemetry
"""Checked by mypy: the adapter serves the Telemetry port."""


class UnreachableLeases(MemoryLeaseStore):
    async def count(self) -> int:
        raise BackendUnavailableError("nats: no servers available")


@attrs.define
class GatedLeases(MemoryLeaseStore):
    """Notes each count, which answers only once `opened` is set."""

    counts: int = 0
    asked: asyncio.Event = attrs.Factory(asyncio.Event)
    opened: asyncio.Event = attrs.Factory(asyncio.Event)

    async def count(self) -> int:
        self.counts += 1
        self.asked.set()
        await self.opened.wait()
        return await super().count()


def telemetry_over(leases: LeaseStore, clock: ManualClock | None = None) -> PrometheusTelemetry:
    return PrometheusTelemetry(leases=lambda: leases, version="1.2.3", clock=clock)


@pytest.fixture
def telemetry() -> PrometheusTelemetry:
    return telemetry_over(MemoryLeaseStore(ManualClock()))


def value(telemetry: PrometheusTelemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value(f"dagnats_bridge_{name}", labels)


def a_resolve(action: str, outcome: Outcome) -> ResolveReport:
    return ResolveReport(
        task_id=TaskId("r1.s1"),
        action=action,
        outcome=outcome,
        worker_id=None,
        lease=None,
        duration=timedelta(milliseconds=3),
    )


def test_resolves_are_counted_by_action_and_outcome(telemetry: PrometheusTelemetry) -> None:
    telemetry.resolved(a_resolve("complete", Outcome.APPLIED))
    telemetry.resolved(a_resolve("complete", Outcome.REPLAYED))
    telemetry.resolved(a_resolve("complete", Outcome.APPLIED))

    assert value(telemetry, "resolves_total", action="complete", outcome="applied") == 2
    assert value(telemetry, "resolves_total", action="complete", outcome="replayed") == 1
    assert value(telemetry, "resolves_total", action="fail", outcome="applied") is None


def test_hand_outs_and_step_started_failures_are_counted_by_task_type(
    telemetry: PrometheusTelemetry,
) -> None:
    telemetry.task_handed_out(TaskType("email.send"))
    telemetry.task_handed_out(TaskType("email.send"))
    telemetry.started_publish_failed(TaskType("sms.send"))

    assert value(telemetry, "tasks_handed_out_total", task_type="email.send") == 2
    assert value(telemetry, "step_started_publish_failures_total", task_type="sms.send") == 1


def test_poll_waits_go_to_a_histogram_by_outcome(telemetry: PrometheusTelemetry) -> None:
    report = PollReport(
        outcome=Outcome.EMPTY,
        tasks=[],
        task_types=[TaskType("t")],
        worker_id=WorkerId("w1"),
        waited=timedelta(seconds=5),
    )

    telemetry.poll_answered(report)

    assert value(telemetry, "poll_wait_seconds_count", outcome="empty") == 1
    assert value(telemetry, "poll_wait_seconds_sum", outcome="empty") == 5
    assert value(telemetry, "poll_wait_seconds_bucket", outcome="empty", le="2.5") == 0
    assert value(telemetry, "poll_wait_seconds_bucket", outcome="empty", le="5.0") == 1


def test_connected_workers_is_the_last_count_reported(telemetry: PrometheusTelemetry) -> None:
    telemetry.workers_connected(3)
    telemetry.workers_connected(2)

    assert value(telemetry, "connected_workers") == 2


async def test_leases_in_flight_are_read_from_the_store_when_scraped() -> None:
    leases = MemoryLeaseStore(ManualClock())
    telemetry = telemetry_over(leases)
    await leases.put(lease("l1", TaskId("r1.s1")))
    await leases.put(lease("l2", TaskId("r2.s1")))

    text = (await telemetry.exposition()).decode()

    assert "dagnats_bridge_leases_in_flight 2.0" in text
    assert 'dagnats_bridge_build_info{version="1.2.3"} 1.0' in text


async def test_one_lease_count_serves_the_scrapes_of_the_next_5_s() -> None:
    leases = GatedLeases(ManualClock())
    leases.opened.set()
    clock = ManualClock()
    telemetry = telemetry_over(leases, clock)
    await telemetry.exposition()
    await leases.put(lease("l1", TaskId("r1.s1")))

    clock.advance(LEASE_COUNT_TTL - timedelta(milliseconds=1))
    await telemetry.exposition()
    kept = value(telemetry, "leases_in_flight")
    clock.advance(timedelta(milliseconds=1))
    await telemetry.exposition()

    assert kept == 0
    assert value(telemetry, "leases_in_flight") == 1
    assert leases.counts == 2


async def test_scrapes_that_come_during_a_count_wait_for_that_one_count() -> None:
    leases = GatedLeases(ManualClock())
    await leases.put(lease("l1", TaskId("r1.s1")))
    telemetry = telemetry_over(leases, ManualClock())
    scrapes = [asyncio.ensure_future(telemetry.exposition()) for _ in range(3)]
    await leases.asked.wait()

    gone, *staying = scrapes
    gone.cancel()
    leases.opened.set()
    served = await asyncio.gather(*staying)

    assert leases.counts == 1
    assert gone.cancelled()
    assert all(b"dagnats_bridge_leases_in_flight 1.0" in text for text in served)


async def test_a_scrape_still_answers_when_the_lease_store_does_not() -> None:
    telemetry = telemetry_over(UnreachableLeases(ManualClock()))

    await telemetry.exposition()

    leases = value(telemetry, "leases_in_flight")
    assert leases is not None
    assert math.isnan(leases)


async def test_the_nats_connection_is_reported_once_watched(
    telemetry: PrometheusTelemetry,
) -> None:
    assert value(telemetry, "nats_connected") is None

    telemetry.watch_nats(NatsClient())

    assert value(telemetry, "nats_connected") == 0
    assert value(telemetry, "nats_reconnects_total") == 0


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    first = telemetry_over(MemoryLeaseStore(ManualClock()))
    second = telemetry_over(MemoryLeaseStore(ManualClock()))

    first.request_answered("POST", "/v1/tasks/poll", 200)

    assert value(first, "http_requests_total", method="POST", route="/v1/tasks/poll", status="200")
    assert (
        value(second, "http_requests_total", method="POST", route="/v1/tasks/poll", status="200")
        is None
    )
