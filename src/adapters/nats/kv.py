"""JetStream KV buckets: the engine's (checkpoints, signals, workers) and the bridge's own.

A KV key is the tail of a NATS subject, so keys are checked here and a bad one is the
client's mistake (InvalidRequestError), not a NATS fault.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

import attrs
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RawStreamMsg,
)
from nats.js.client import JetStreamContext
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE
from nats.js.kv import KeyValue as Bucket

from adapters.nats.errors import translated
from adapters.nats.jetstream import JetStream, LastMessages
from adapters.nats.jsapi import EMPTY_REQUEST
from adapters.nats.provision import placing, warn_if_fewer_replicas
from adapters.wire import (
    CHECKPOINTS_BUCKET,
    LEASES_BUCKET,
    POLLS_BUCKET,
    SIGNALS_BUCKET,
    WORKERS_BUCKET,
    WORKERS_TTL,
)
from domain.errors import BackendError
from domain.models import KvEntry
from domain.protocol import MAX_KV_KEY_BYTES, POLL_REPLAY_WINDOW, is_kv_key, validate_kv_key

log = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})
WATCH_IDLE: Final = timedelta(seconds=5)
"""How long the server keeps a stopped watch's consumer (nats-py's default is 5 minutes)."""
MISSING_BUCKET_RECHECK: Final = timedelta(seconds=2)
"""How long a bucket found missing reads as missing before it is looked up again."""
SCAN_BATCH: Final = 1_000
KEYS_PER_READ: Final = 256
"""Keys a batched read asks for at once (a poll hands out at most 256 tasks); nats-server
refuses a batched direct get that more than 1,024 subjects match (413 Too Many Results)."""
SCAN_FETCH_TIMEOUT_S: Final = 5.0


def check_key(key: str) -> str:
    """The key itself if JetStream can store it; InvalidRequestError otherwise."""
    return validate_kv_key(key, "KV key", MAX_KV_KEY_BYTES)


@attrs.define
class BatchedGets:
    """Whether the server refused a batched direct get. Mutable on purpose: learnt once."""

    refused: bool = False


@attrs.frozen(kw_only=True)
class NatsKeyValue:
    """One JetStream KV bucket: the KeyValue port, and compare-and-set for the lease store.

    `get`, `put`, `update` and the deletes are one round trip each; `keys` and `entries`
    one, then a get per key; `wait_for_value` may open a watch (an ephemeral consumer),
    and always stops it. Build one with `open_bucket`.
    """

    bucket: Bucket
    js: JetStream
    name: str
    stream: str
    direct: bool
    """Whether the bucket's stream answers direct gets (DagNats creates its buckets so)."""
    watch_idle: timedelta = WATCH_IDLE
    batches: BatchedGets = attrs.field(factory=BatchedGets)

    async def get(self, key: str) -> KvEntry | None:
        """The key's value; None when it has none, or was deleted or purged since."""
        return await self._get(check_key(key))

    async def get_many(self, keys: Sequence[str]) -> dict[str, KvEntry]:
        """The values of those of `keys` that have one: one batched direct get per
        KEYS_PER_READ keys when the bucket allows direct gets and the server has them, else a
        get per key, at once."""
        wanted = list(dict.fromkeys(check_key(key) for key in keys))
        if not self.direct or self.batches.refused:
            return await self._get_each(wanted)
        found: dict[str, KvEntry] = {}
        for start in range(0, len(wanted), KEYS_PER_READ):
            found |= await self._get_batch(wanted[start : start + KEYS_PER_READ])
        return found

    async def _get_batch(self, keys: list[str]) -> dict[str, KvEntry]:
        """One batched direct get, and a get each for the keys it left out; a server before
        2.11 refuses it, and from then on each key is read on its own."""
        subjects = [self._prefix + key for key in keys]
        with translated(f"get {len(keys)} keys from KV {self.name}"):
            try:
                batch: LastMessages | None = await self.js.get_last_msgs(self.stream, subjects)
            except APIError as exc:
                if (exc.code, exc.description) != EMPTY_REQUEST:
                    raise
                batch = None
        if batch is None:
            self.batches.refused = True
            log.warning(
                "nats-server refuses batched direct gets (it is older than 2.11): KV %s is read"
                " a key at a time from now on",
                self.name,
            )
            return await self._get_each(keys)
        answered = {(msg.subject or "").removeprefix(self._prefix): msg for msg in batch.messages}
        found = {key: self._entry(key, msg) for key, msg in answered.items() if not _is_marker(msg)}
        if batch.left_out:
            found |= await self._get_each([key for key in keys if key not in answered])
        return found

    async def _get_each(self, keys: list[str]) -> dict[str, KvEntry]:
        entries = await asyncio.gather(*(self._get(key) for key in keys))
        return {entry.key: entry for entry in entries if entry is not None}

    async def put(self, key: str, value: bytes) -> int:
        check_key(key)
        with translated(f"put {key} into KV {self.name}"):
            return await self.bucket.put(key, value)

    async def update(self, key: str, value: bytes, *, last: int) -> int | None:
        """Put only if the key's latest revision is `last` (0: the key never had one).

        A delete marker is a revision too. Returns the new revision, None when `last` is
        not the latest.
        """
        check_key(key)
        with translated(f"update {key} in KV {self.name}"):
            try:
                return await self.bucket.update(key, value, last=last)
            except KeyWrongLastSequenceError:
                return None

    async def delete(self, key: str) -> None:
        """Leave a delete marker (not a purge): watchers see the delete."""
        check_key(key)
        with translated(f"delete {key} from KV {self.name}"):
            await self.bucket.delete(key)

    async def delete_at(self, key: str, *, last: int) -> bool:
        """Leave a delete marker only if the key's latest revision is `last` (> 0).

        False when it is not (the key changed since it was read).
        """
        check_key(key)
        with translated(f"delete {key} from KV {self.name}"):
            try:
                await self.bucket.delete(key, last=last)
            except APIError as exc:
                # nats-py maps this error to KeyWrongLastSequenceError for update only.
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    return False
                raise
        return True

    async def keys(self) -> list[str]:
        """Keys that hold a value; [] for an empty bucket."""
        return [entry.key for entry in await self.entries()]

    async def entries(self) -> list[KvEntry]:
        """Every key's current value: the stream's subjects, then a get for each.

        Not a watch: nats-py's watch can announce the end of its initial values before
        they have all arrived (nats.py#842), which would drop keys at random.
        """
        with translated(f"list KV {self.name}"):
            info = await self.js.stream_info(self.stream, subjects_filter=f"{self._prefix}>")
        keys = [subject.removeprefix(self._prefix) for subject in info.state.subjects or {}]
        # A key outside the alphabet (written by another client) cannot be read back exactly.
        found = [await self._get(key) for key in keys if is_kv_key(key)]
        return [entry for entry in found if entry is not None]

    async def latest(self, keys: str = ">") -> list[KvEntry]:
        """The current value of every key `keys` matches (a subject filter: `a.*`, `a.>`),
        through one ephemeral consumer that delivers the last message of each: a few round
        trips where `entries` makes one per key (2,000 keys: about 70 ms against 650 ms on
        loopback), still O(keys matched).

        Reads until the consumer has nothing pending, so values put meanwhile may be in.
        An entry's `created` is exact to a microsecond (nats-py reads it as float seconds).
        """
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            filter_subject=f"{self._prefix}{keys}",
            mem_storage=True,
            num_replicas=1,
            # The server drops the consumer by itself if this process dies before it does.
            inactive_threshold=self.watch_idle.total_seconds(),
        )
        with translated(f"scan KV {self.name}"):
            info = await self.js.add_consumer(self.stream, config)
            if info.name is None:
                raise BackendError(f"scan KV {self.name}: consumer created without a name")
            try:
                return await self._read_all(info.name, info.num_pending or 0)
            finally:
                await _delete_consumer(self.js, self.stream, info.name)

    async def _read_all(self, consumer: str, pending: int) -> list[KvEntry]:
        subscription = await self.js.pull_subscribe_bind(consumer, stream=self.stream)
        found: list[KvEntry] = []
        try:
            while pending > 0:
                msgs = await subscription.fetch(
                    batch=min(pending, SCAN_BATCH), timeout=SCAN_FETCH_TIMEOUT_S
                )
                found.extend(self._from_msg(msg) for msg in msgs if not _is_marker_msg(msg))
                pending = msgs[-1].metadata.num_pending
        finally:
            await subscription.unsubscribe()
        return found

    def _from_msg(self, msg: Msg) -> KvEntry:
        metadata = msg.metadata
        return KvEntry(
            key=msg.subject.removeprefix(self._prefix),
            value=msg.data,
            revision=metadata.sequence.stream,
            created=metadata.timestamp,
        )

    async def wait_for_value(self, key: str, timeout: timedelta) -> KvEntry | None:
        """The key's value if it has one, else the first value put before the timeout.

        Delete and purge markers are not values. The watch starts with the key's latest
        revision, so a put landing between the first get and the watch is not missed.
        """
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        entry = await self.get(key)
        if entry is not None or timeout <= timedelta(0):
            return entry
        with translated(f"watch {key} in KV {self.name}"):
            watcher = await self.bucket.watch(
                key, inactive_threshold=self.watch_idle.total_seconds()
            )
        try:
            return await self._next_value(watcher, deadline)
        finally:
            await _stop(watcher)

    async def _next_value(self, watcher: Bucket.KeyWatcher, deadline: float) -> KvEntry | None:
        try:
            async with asyncio.timeout_at(deadline):
                async for update in watcher:
                    # None marks the end of the initial values; an operation marks a delete.
                    if update is not None and update.operation is None:
                        return self._from_update(update)
        except TimeoutError:
            return None
        return None  # the watch was stopped under us: no value came

    @property
    def _prefix(self) -> str:
        return f"$KV.{self.name}."

    async def _get(self, key: str) -> KvEntry | None:
        with translated(f"get {key} from KV {self.name}"):
            try:
                msg = await self.js.get_msg(
                    self.stream, subject=self._prefix + key, direct=self.direct
                )
            except NotFoundError:
                return None
        return None if _is_marker(msg) else self._entry(key, msg)

    def _entry(self, key: str, msg: RawStreamMsg) -> KvEntry:
        if msg.seq is None or msg.time is None:
            raise BackendError(f"get {key} from KV {self.name}: answer without sequence or time")
        return KvEntry(key=key, value=msg.data or b"", revision=msg.seq, created=msg.time)

    def _from_update(self, update: Bucket.Entry) -> KvEntry:
        # nats-py annotates `created` as an int, but it holds the message's datetime.
        created: object = update.created
        if update.revision is None or not isinstance(created, datetime):
            raise BackendError(f"watch KV {self.name}: update without revision or time")
        return KvEntry(
            key=update.key, value=update.value or b"", revision=update.revision, created=created
        )


def _is_marker(msg: RawStreamMsg) -> bool:
    """A delete or purge marker, by the client (KV-Operation) or by the server (TTL)."""
    return _is_marker_headers(msg.headers or {})


def _is_marker_msg(msg: Msg) -> bool:
    return _is_marker_headers(msg.headers or {})


def _is_marker_headers(headers: dict[str, str]) -> bool:
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers


async def _delete_consumer(js: JetStreamContext, stream: str, name: str) -> None:
    """Best effort: an ephemeral consumer left behind goes after its inactive threshold."""
    try:
        await js.delete_consumer(stream, name)
    except nats.errors.Error as exc:
        log.warning("scan consumer %s on %s not deleted: %s", name, stream, exc)


async def _stop(watcher: Bucket.KeyWatcher) -> None:
    """Stop a watch. A lost connection has already dropped it: that is only logged, so
    the value or the error in hand is what the caller gets."""
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    except nats.errors.Error as exc:
        log.warning("KV watch not stopped cleanly: %s", exc)


async def open_bucket(
    js: JetStream, name: str, *, watch_idle: timedelta = WATCH_IDLE
) -> NatsKeyValue | None:
    """Bind an existing bucket; None when there is no bucket of that name."""
    with translated(f"bind KV bucket {name}"):
        try:
            bucket = await js.key_value(name)
        except BucketNotFoundError:
            return None
        config = (await bucket.status()).stream_info.config
    if config.name is None:
        raise BackendError(f"bind KV bucket {name}: stream info without a name")
    return NatsKeyValue(
        bucket=bucket,
        js=js,
        name=name,
        stream=config.name,
        direct=bool(config.allow_direct),
        watch_idle=watch_idle,
    )


@attrs.define
class NatsBuckets:
    """The engine's optional buckets, bound on first use and then kept (B18).

    A missing bucket reads as None for `recheck_after`, then is looked up again, so one
    created after start-up is picked up without a restart. Mutable on purpose: it caches.
    """

    js: JetStream
    recheck_after: timedelta = attrs.field(default=MISSING_BUCKET_RECHECK, kw_only=True)
    _bound: dict[str, NatsKeyValue] = attrs.field(init=False, factory=dict)
    _missing_until: dict[str, float] = attrs.field(init=False, factory=dict)

    async def checkpoints(self) -> NatsKeyValue | None:
        return await self._bucket(CHECKPOINTS_BUCKET)

    async def signals(self) -> NatsKeyValue | None:
        return await self._bucket(SIGNALS_BUCKET)

    async def workers(self) -> NatsKeyValue | None:
        return await self._bucket(WORKERS_BUCKET)

    async def _bucket(self, name: str) -> NatsKeyValue | None:
        if name in self._bound:
            return self._bound[name]
        if time.monotonic() < self._missing_until.get(name, float("-inf")):
            return None
        bound = await open_bucket(self.js, name)
        if bound is None:
            self._missing_until[name] = time.monotonic() + self.recheck_after.total_seconds()
        else:
            self._bound[name] = bound
        return bound


async def provision_buckets(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the engine's buckets that are absent, configured as DagNats does; an existing
    bucket is left exactly as it is."""
    # Direct gets, as the Go client sets on every bucket it creates.
    await _create_if_absent(
        js,
        KeyValueConfig(
            bucket=WORKERS_BUCKET,
            ttl=WORKERS_TTL.total_seconds(),
            direct=True,
            replicas=replicas,
        ),
    )
    for name in (CHECKPOINTS_BUCKET, SIGNALS_BUCKET):
        await _create_if_absent(js, KeyValueConfig(bucket=name, direct=True, replicas=replicas))


async def ensure_leases_bucket(js: JetStreamContext, ttl: timedelta, *, replicas: int = 1) -> None:
    """Create the bridge's lease bucket when absent (always, with or without provisioning).

    `ttl` only collects garbage: a lease's own deadline decides when it expires.
    """
    # No direct gets: any replica may answer one, possibly stale, and a lease must be
    # read back as written.
    await _create_if_absent(
        js,
        KeyValueConfig(
            bucket=LEASES_BUCKET, ttl=ttl.total_seconds(), direct=False, replicas=replicas
        ),
    )


async def ensure_polls_bucket(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the bridge's bucket of poll answers when absent: its TTL is the replay window,
    so an answer is gone POLL_REPLAY_WINDOW after its put (Decision 13)."""
    await _create_if_absent(
        js,
        KeyValueConfig(
            bucket=POLLS_BUCKET,
            ttl=POLL_REPLAY_WINDOW.total_seconds(),
            direct=False,
            replicas=replicas,
        ),
    )


async def _create_if_absent(js: JetStreamContext, config: KeyValueConfig) -> None:
    what = f"provision KV bucket {config.bucket}"
    with translated(what), placing(what):
        try:
            bucket = await js.key_value(config.bucket)
        except BucketNotFoundError:
            await js.create_key_value(config)
            log.info("created KV bucket %s, %d replicas", config.bucket, config.replicas)
            return
        existing = (await bucket.status()).stream_info.config
    warn_if_fewer_replicas(f"KV bucket {config.bucket}", existing.num_replicas, config.replicas)
