"""The composition root: the only place that knows which adapter serves which port."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.codec import decode, encode
from adapters.http.routes import ConnectSettings
from adapters.memory.clock import SystemClock
from adapters.memory.events import MemoryEventLog
from adapters.memory.ids import UuidIds
from adapters.memory.kv import MemoryBuckets
from adapters.memory.leases import MemoryLeaseStore
from adapters.memory.probe import MemoryProbe
from adapters.memory.queue import MemoryTaskQueue
from adapters.memory.streams import MemoryStreams
from adapters.workers import KvWorkerDirectory
from app.settings import Settings
from domain.models import TaskPayload
from domain.services.checkpoints import ReadCheckpoint
from domain.services.poll import PollService
from domain.services.resolve import ResolveService
from domain.services.simulator import EnqueueTask
from domain.services.workers import WorkerRegistry


def _decode_task(data: bytes) -> TaskPayload:
    return decode(data, TaskPayload)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidIds)

    queue = providers.Singleton(
        MemoryTaskQueue,
        clock=clock,
        ack_wait=settings.provided.ack_wait,
        decode=_decode_task,
        encode=encode,
    )
    events = providers.Singleton(MemoryEventLog, clock=clock)
    leases = providers.Singleton(MemoryLeaseStore, clock=clock)
    buckets = providers.Singleton(MemoryBuckets, clock=clock)
    streams = providers.Singleton(MemoryStreams)
    probe = providers.Singleton(MemoryProbe)
    directory = providers.Singleton(KvWorkerDirectory, buckets=buckets)

    poll_service = providers.Singleton(
        PollService,
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        clock=clock,
        ids=ids,
    )
    resolve_service = providers.Singleton(
        ResolveService,
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        streams=streams,
        clock=clock,
    )
    worker_registry = providers.Singleton(WorkerRegistry, directory=directory, clock=clock)
    read_checkpoint = providers.Singleton(ReadCheckpoint, buckets=buckets)
    enqueue_task = providers.Singleton(EnqueueTask, publisher=queue, ids=ids)
    connect_settings = providers.Singleton(
        ConnectSettings, heartbeat_interval=settings.provided.heartbeat_interval
    )
