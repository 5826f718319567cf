"""Builders shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any, Final

import attrs

from adapters.codec import decode, encode
from adapters.memory.clock import ManualClock
from adapters.memory.events import MemoryEventLog
from adapters.memory.ids import SequentialIds
from adapters.memory.kv import MemoryBuckets
from adapters.memory.leases import MemoryLeaseStore
from adapters.memory.polls import MemoryPollAnswerStore
from adapters.memory.queue import MemoryTaskQueue
from adapters.memory.streams import MemoryStreams
from adapters.workers import KvWorkerDirectory
from app.container import Container
from app.settings import Backend, Settings
from domain.errors import BackendUnavailableError
from domain.models import (
    DeliveryHandle,
    Event,
    OutboundEvent,
    PolledTask,
    PollId,
    RunId,
    TaskPayload,
    TaskType,
    WorkerId,
)
from domain.ports import (
    Clock,
    EventLog,
    IdSource,
    KeyValueBuckets,
    LeaseStore,
    PollAnswerStore,
    StreamPublisher,
    TaskPublisher,
    TaskQueue,
    WorkerDirectory,
)
from domain.services.actions import ResolveRequest
from domain.services.engine import EngineSimulator, ObservedEventLog, RetryPolicy
from domain.services.locks import KeyedLocks
from domain.services.poll import PollCommand, PollService
from domain.services.release import ReleaseLeases
from domain.services.resolve import Resolution, ResolveService
from domain.services.runs import SimulatedRuns
from domain.services.simulator import EnqueueTask
from domain.services.workers import WorkerRegistry

ACK_WAIT: Final = timedelta(minutes=5)


def memory_container(**settings: Any) -> Container:
    return Container(settings=Settings(backend=Backend.MEMORY, **settings))


class DrivesUseCases:
    """Shortcuts over `poll` and `resolve`, for harnesses of any backend."""

    poll: PollService
    resolve: ResolveService

    async def poll_now(
        self,
        *task_types: str,
        max_tasks: int = 1,
        worker_id: str | None = None,
        poll_id: str | None = None,
    ) -> list[PolledTask]:
        return await self.poll(
            PollCommand(
                task_types=[TaskType(t) for t in task_types],
                max_tasks=max_tasks,
                timeout=timedelta(0),
                worker_id=WorkerId(worker_id) if worker_id else None,
                poll_id=PollId(poll_id) if poll_id else None,
            )
        )

    async def resolve_action(self, task: PolledTask, action: str, **fields: Any) -> Resolution:
        return await self.resolve(task.task_id, ResolveRequest(action=action, **fields))


def use_cases(  # noqa: PLR0913 - one argument per port
    *,
    queue: TaskQueue,
    events: EventLog,
    leases: LeaseStore,
    buckets: KeyValueBuckets,
    streams: StreamPublisher,
    answers: PollAnswerStore,
    clock: Clock,
    ids: IdSource,
) -> tuple[PollService, ResolveService, WorkerRegistry]:
    """The use cases as the container wires them: the worker directory on `buckets`, one
    set of task locks for resolves and releases."""
    directory: WorkerDirectory = KvWorkerDirectory(buckets=buckets)
    task_locks = KeyedLocks()
    poll = PollService(
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        workers=directory,
        answers=answers,
        clock=clock,
        ids=ids,
    )
    resolve = ResolveService(
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        streams=streams,
        clock=clock,
        locks=task_locks,
    )
    release = ReleaseLeases(queue=queue, leases=leases, locks=task_locks)
    return poll, resolve, WorkerRegistry(directory, clock, release=release)


@attrs.define
class Harness(DrivesUseCases):
    """The use cases wired to the memory adapters on a manual clock."""

    clock: ManualClock = attrs.field(factory=ManualClock)
    ids: SequentialIds = attrs.field(factory=SequentialIds)
    queue: MemoryTaskQueue = attrs.field(init=False)
    events: MemoryEventLog = attrs.field(init=False)
    leases: MemoryLeaseStore = attrs.field(init=False)
    buckets: MemoryBuckets = attrs.field(
        default=attrs.Factory(lambda self: MemoryBuckets(self.clock), takes_self=True)
    )
    streams: MemoryStreams = attrs.field(factory=MemoryStreams)
    answers: MemoryPollAnswerStore = attrs.field(init=False)
    poll: PollService = attrs.field(init=False)
    resolve: ResolveService = attrs.field(init=False)
    workers: WorkerRegistry = attrs.field(init=False)
    enqueue: EnqueueTask = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.queue = MemoryTaskQueue(
            self.clock, lambda data: decode(data, TaskPayload), encode=encode, ack_wait=ACK_WAIT
        )
        self.events = MemoryEventLog(self.clock)
        self.leases = MemoryLeaseStore(self.clock)
        self.answers = MemoryPollAnswerStore(self.clock)
        self.poll, self.resolve, self.workers = use_cases(
            queue=self.queue,
            events=self.events,
            leases=self.leases,
            buckets=self.buckets,
            streams=self.streams,
            answers=self.answers,
            clock=self.clock,
            ids=self.ids,
        )
        self.enqueue = EnqueueTask(publisher=self.queue, ids=self.ids)


class UnreachableEventLog:
    """An event log whose history is away: every append fails, nothing is read."""

    async def append(self, outbound: OutboundEvent) -> bool:
        raise BackendUnavailableError("history is away")

    async def read(self, run_id: RunId) -> list[Event]:
        return []

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        return False


@attrs.define
class PassThroughQueue:
    """The memory queue, every call passed on: a base for the queues of the fault tests, which
    override the call they break."""

    inner: MemoryTaskQueue

    async def fetch(self, task_type: TaskType, max_messages: int, timeout: timedelta) -> Any:
        return await self.inner.fetch(task_type, max_messages, timeout)

    async def wait_ready(
        self,
        task_types: Sequence[TaskType],
        timeout: timedelta,
        *,
        until: Collection[asyncio.Future[None]] = (),
    ) -> None:
        await self.inner.wait_ready(task_types, timeout, until=until)

    async def ack(self, handle: DeliveryHandle) -> None:
        await self.inner.ack(handle)

    async def nak(self, handle: DeliveryHandle, delay: timedelta) -> None:
        await self.inner.nak(handle, delay)

    async def in_progress(self, handle: DeliveryHandle) -> None:
        await self.inner.in_progress(handle)

    async def term(self, handle: DeliveryHandle) -> None:
        await self.inner.term(handle)


@attrs.define
class RecordingPublisher:
    """A TaskPublisher that notes each publish (with its msg-id), then passes it on."""

    inner: TaskPublisher
    published: list[tuple[TaskType, TaskPayload, str]] = attrs.field(factory=list)

    async def publish_task(self, task_type: TaskType, task: TaskPayload, *, msg_id: str) -> None:
        self.published.append((task_type, task, msg_id))
        await self.inner.publish_task(task_type, task, msg_id=msg_id)

    @property
    def msg_ids(self) -> list[str]:
        return [msg_id for _, _, msg_id in self.published]


@attrs.define
class EngineHarness(Harness):
    """The Harness with the engine simulation observing its events; enter `engine` to run it.

    `events` is the plain log (it also holds the workflow events); the use cases append
    through the observed one.
    """

    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    max_iterations: int = 10
    runs: SimulatedRuns = attrs.field(init=False)
    publisher: RecordingPublisher = attrs.field(init=False)
    engine: EngineSimulator = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.runs = SimulatedRuns()
        self.publisher = RecordingPublisher(self.queue)
        self.engine = EngineSimulator(
            self.publisher,
            self.events,
            self.clock,
            self.runs,
            retry=self.retry,
            max_iterations=self.max_iterations,
        )
        self.poll, self.resolve, self.workers = use_cases(
            queue=self.queue,
            events=ObservedEventLog(self.events, self.engine),
            leases=self.leases,
            buckets=self.buckets,
            streams=self.streams,
            answers=self.answers,
            clock=self.clock,
            ids=self.ids,
        )
        self.enqueue = EnqueueTask(publisher=self.publisher, ids=self.ids, runs=self.runs)
