"""The Telemetry port as Prometheus metrics, in a registry of the app's own.

Each app (and each test) gets its own CollectorRegistry, never the process-wide one, so two
apps in one process never collide. Label values are bounded: routes are templates, actions
and outcomes are closed sets, task types are those the queue delivered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Final

from nats.aio.client import Client as NatsClient
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.memory.clock import SystemClock
from domain.errors import DomainError
from domain.models import TaskType
from domain.ports import Clock, LeaseStore
from domain.telemetry import PollReport, ResolveReport

log = logging.getLogger(__name__)

NAMESPACE: Final = "dagnats_bridge"
POLL_WAIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Up to the longest long-poll (timeout_ms ≤ 60 000)."""
LEASE_COUNT_TIMEOUT_S: Final = 2.0
"""A scrape does not wait longer for the lease store: the gauge reads NaN instead."""
LEASE_COUNT_TTL: Final = timedelta(seconds=5)
"""How long one count of the lease store serves scrapes. On NATS a count reads every lease,
and /metrics is open by default: scrapes, however many, cost it at most this often."""


class CachedLeaseCount:
    """The lease store's count, read at most once per LEASE_COUNT_TTL: scrapes meanwhile get
    the last one, and scrapes that come while it is read wait for that same read. A count
    that failed (NaN) is kept as long, so a store that is away is not asked again at once.

    Mutable on purpose: the last count and the read in flight are what it is for.
    """

    def __init__(self, leases: Callable[[], LeaseStore], clock: Clock) -> None:
        self._leases = leases
        self._clock = clock
        self._count = math.nan
        self._counted_at: datetime | None = None
        self._reading: asyncio.Task[None] | None = None

    async def read(self) -> float:
        if self._fresh():
            return self._count
        if self._reading is None:
            self._reading = asyncio.create_task(self._refresh())
        # Shielded: a scrape that gives up does not cancel the read the others wait for.
        await asyncio.shield(self._reading)
        return self._count

    def _fresh(self) -> bool:
        return (
            self._counted_at is not None and self._clock.now() - self._counted_at < LEASE_COUNT_TTL
        )

    async def _refresh(self) -> None:
        try:
            count: float = await asyncio.wait_for(self._leases().count(), LEASE_COUNT_TIMEOUT_S)
        except (DomainError, TimeoutError) as exc:
            log.debug("leases not counted for a scrape: %r", exc)
            count = math.nan
        finally:
            self._reading = None
        self._count, self._counted_at = count, self._clock.now()


class NatsConnectionCollector:
    """The NATS connection's state and reconnects, read from the client at scrape time."""

    def __init__(self) -> None:
        self.client: NatsClient | None = None

    def collect(self) -> Iterable[Metric]:
        if self.client is None:
            return []
        connected = GaugeMetricFamily(
            f"{NAMESPACE}_nats_connected", "1 while the NATS connection is up, else 0"
        )
        connected.add_metric([], 1 if self.client.is_connected else 0)
        reconnects = CounterMetricFamily(
            f"{NAMESPACE}_nats_reconnects", "Reconnections of the NATS connection"
        )
        reconnects.add_metric([], self.client.stats["reconnects"])
        return [connected, reconnects]


class PrometheusTelemetry:
    """Counts what the use cases and the HTTP edge report; `exposition()` renders them."""

    def __init__(
        self, *, leases: Callable[[], LeaseStore], version: str, clock: Clock | None = None
    ) -> None:
        """`clock` times the lease count's reuse: the system's unless told (a manual clock
        of the simulator would keep one count until it is moved)."""
        self.registry = CollectorRegistry()
        self._lease_count = CachedLeaseCount(leases, clock or SystemClock())
        self._requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._poll_wait = Histogram(
            "poll_wait_seconds",
            "How long polls took to answer, by outcome",
            ["outcome"],
            buckets=POLL_WAIT_BUCKETS,
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._handed_out = Counter(
            "tasks_handed_out",
            "Tasks leased to a poll, by task type",
            ["task_type"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._resolves = Counter(
            "resolves",
            "Resolves answered, by action and outcome",
            ["action", "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._started_failures = Counter(
            "step_started_publish_failures",
            "step.started events that could not be published (the task was NAKed)",
            ["task_type"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._workers = Gauge(
            "connected_workers",
            "Worker ids with an open connect stream on this process",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._leases_in_flight = Gauge(
            "leases_in_flight",
            "Unexpired leases in the lease store, cluster-wide with NATS: do not sum over "
            f"replicas. Read at most every {LEASE_COUNT_TTL.total_seconds():g} s; a settled "
            "lease counts until its deadline, while a repeated resolve replays",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        info = Gauge(
            "build_info",
            "The bridge's version",
            ["version"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        info.labels(version).set(1)
        self.nats = NatsConnectionCollector()
        self.registry.register(self.nats)

    def poll_answered(self, report: PollReport) -> None:
        self._poll_wait.labels(report.outcome.value).observe(report.waited.total_seconds())

    def task_handed_out(self, task_type: TaskType) -> None:
        self._handed_out.labels(task_type).inc()

    def started_publish_failed(self, task_type: TaskType) -> None:
        self._started_failures.labels(task_type).inc()

    def resolved(self, report: ResolveReport) -> None:
        self._resolves.labels(report.action, report.outcome.value).inc()

    def workers_connected(self, count: int) -> None:
        self._workers.set(count)

    def request_answered(self, method: str, route: str, status: int) -> None:
        self._requests.labels(method, route, str(status)).inc()

    def watch_nats(self, client: NatsClient) -> None:
        """Report this connection's state from now on."""
        self.nats.client = client

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE_LATEST

    async def exposition(self) -> bytes:
        """The metrics in Prometheus text format, the lease count at most LEASE_COUNT_TTL old."""
        self._leases_in_flight.set(await self._lease_count.read())
        return generate_latest(self.registry)
