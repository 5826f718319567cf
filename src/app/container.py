"""The composition root: the only place that knows which adapter serves which port."""

from __future__ import annotations

from dependency_injector import containers, providers
from nats.aio.client import Client as NatsClient

from adapters.codec import decode, encode
from adapters.http.routes import ConnectSettings
from adapters.memory.clock import ManualClock, SystemClock
from adapters.memory.events import MemoryEventLog
from adapters.memory.ids import UuidIds
from adapters.memory.kv import MemoryBuckets
from adapters.memory.leases import MemoryLeaseStore
from adapters.memory.polls import MemoryPollAnswerStore
from adapters.memory.probe import MemoryProbe
from adapters.memory.queue import MemoryTaskQueue
from adapters.memory.streams import MemoryStreams
from adapters.metrics import PrometheusTelemetry
from adapters.nats.events import NatsEventLog
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsBuckets
from adapters.nats.leases import NatsLeaseStore
from adapters.nats.polls import NatsPollAnswerStore
from adapters.nats.probe import NatsProbe
from adapters.nats.queue import NatsTaskQueue
from adapters.nats.streams import NatsStreams
from adapters.tracing import OtelTracer
from adapters.workers import KvWorkerDirectory
from app.settings import Settings
from app.tokens import TokenSource
from app.version import package_version
from domain.models import Event, TaskPayload
from domain.services.checkpoints import ReadCheckpoint
from domain.services.drain import Drain, DrainingRelease
from domain.services.engine import EngineSimulator, ObservedEventLog, RetryPolicy
from domain.services.locks import KeyedLocks
from domain.services.poll import PollService
from domain.services.resolve import ResolveService
from domain.services.runs import SimulatedRuns
from domain.services.simulator import AdvanceClock, EnqueueTask, PutSignal
from domain.services.workers import WorkerRegistry


def _decode_task(data: bytes) -> TaskPayload:
    return decode(data, TaskPayload)


def _decode_event(data: bytes) -> Event:
    return decode(data, Event)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    nats = providers.Dependency(instance_of=NatsClient)
    """Opened in the application's lifespan, only for the NATS backend."""
    jetstream = providers.Dependency(instance_of=JetStream)

    backend = settings.provided.backend_name
    engine_mode = settings.provided.engine_mode
    clock = providers.Selector(
        settings.provided.clock_name,
        system=providers.Singleton(SystemClock),
        manual=providers.Singleton(ManualClock),
    )
    ids = providers.Singleton(UuidIds)
    tokens = providers.Singleton(TokenSource.load, settings)
    """The accepted bearer tokens; the CLI loads them first, to fail before serving."""
    tracer = providers.Singleton(OtelTracer)
    """Records through the process's TracerProvider once one is installed (see app.telemetry)."""

    queue = providers.Selector(
        backend,
        memory=providers.Singleton(
            MemoryTaskQueue,
            clock=clock,
            ack_wait=settings.provided.ack_wait,
            decode=_decode_task,
            encode=encode,
        ),
        nats=providers.Singleton(
            NatsTaskQueue,
            nats,
            jetstream,
            encode=encode,
            decode=_decode_task,
            consumer_ack_wait=settings.provided.ack_wait,
        ),
    )
    history = providers.Selector(
        backend,
        memory=providers.Singleton(
            MemoryEventLog, clock=clock, finished_kept=settings.provided.sim_runs_kept
        ),
        nats=providers.Singleton(NatsEventLog, jetstream, encode=encode, decode=_decode_event),
    )
    """The event log itself; the use cases append through `events`."""
    leases = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryLeaseStore, clock=clock),
        nats=providers.Singleton(NatsLeaseStore, jetstream, clock=clock),
    )
    poll_answers = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryPollAnswerStore, clock=clock),
        nats=providers.Singleton(NatsPollAnswerStore, jetstream),
    )
    buckets = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryBuckets, clock=clock),
        nats=providers.Singleton(NatsBuckets, jetstream),
    )
    streams = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryStreams),
        nats=providers.Singleton(NatsStreams, nats),
    )
    probe = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryProbe),
        nats=providers.Singleton(NatsProbe, nats, jetstream),
    )
    directory = providers.Singleton(KvWorkerDirectory, buckets=buckets)
    telemetry = providers.Singleton(
        PrometheusTelemetry, leases=leases.provider, version=providers.Callable(package_version)
    )
    """The app's metrics; it reads the lease store only when scraped, once NATS is open."""

    simulated_runs = providers.Singleton(
        SimulatedRuns, finished_kept=settings.provided.sim_runs_kept
    )
    retry_policy = providers.Singleton(
        RetryPolicy,
        max_attempts=settings.provided.sim_max_attempts,
        initial_delay=settings.provided.sim_initial_delay,
        factor=settings.provided.sim_backoff_factor,
    )
    engine = providers.Singleton(
        EngineSimulator,
        publisher=queue,
        events=history,
        clock=clock,
        runs=simulated_runs,
        retry=retry_policy,
        max_iterations=settings.provided.sim_max_iterations,
    )
    """Entered by the application's lifespan when the engine simulation is on."""
    events = providers.Selector(
        engine_mode,
        simulated=providers.Singleton(ObservedEventLog, history, engine),
        off=history,
    )

    local_leases = providers.Selector(backend, memory=leases, nats=providers.Object(None))
    """The lease store when its leases die with the process (memory): released on the way out."""
    drain = providers.Singleton(Drain)

    poll_service = providers.Singleton(
        PollService,
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        workers=directory,
        answers=poll_answers,
        clock=clock,
        ids=ids,
        tracer=tracer,
        telemetry=telemetry,
        drain=drain,
    )
    task_locks = providers.Singleton(KeyedLocks)
    """Resolves and lease releases of one task take turns in this process."""
    resolve_service = providers.Singleton(
        ResolveService,
        queue=queue,
        events=events,
        leases=leases,
        buckets=buckets,
        streams=streams,
        clock=clock,
        tracer=tracer,
        locks=task_locks,
        telemetry=telemetry,
        drain=drain,
    )
    release_leases = providers.Singleton(
        DrainingRelease,
        queue=queue,
        leases=leases,
        locks=task_locks,
        drain=drain,
        local_leases=local_leases,
    )
    worker_registry = providers.Singleton(
        WorkerRegistry,
        directory=directory,
        clock=clock,
        release=release_leases,
        telemetry=telemetry,
    )
    read_checkpoint = providers.Singleton(ReadCheckpoint, buckets=buckets)
    enqueue_task = providers.Singleton(EnqueueTask, publisher=queue, ids=ids, runs=simulated_runs)
    put_signal = providers.Singleton(PutSignal, buckets=buckets)
    advance_clock = providers.Singleton(
        AdvanceClock,
        clock=providers.Selector(
            settings.provided.clock_name, system=providers.Object(None), manual=clock
        ),
        engine=providers.Selector(engine_mode, simulated=engine, off=providers.Object(None)),
    )
    connect_settings = providers.Singleton(
        ConnectSettings, heartbeat_interval=settings.provided.heartbeat_interval
    )
