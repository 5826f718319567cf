"""Leases in the bridge's own KV bucket, so any bridge process, or a restarted one, can
resolve a task another one handed out (B3)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Coroutine
from typing import Final

import attrs
import msgspec

from adapters.codec import DecodeError, decode, unstructure
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue, open_bucket
from adapters.wire import LEASES_BUCKET
from domain.errors import BackendError, DomainError, LeaseRevisionError
from domain.models import KvEntry, Lease, LeaseId, LeaseState, TaskId, WorkerId
from domain.ports import Clock
from domain.services import together

log = logging.getLogger(__name__)

_UNSAFE: Final = re.compile(r"[^-/_.a-zA-Z0-9]+")
# A dot that would open an empty subject token: leading, trailing, or right after a dot.
_EMPTY_TOKEN_DOT: Final = re.compile(r"^\.|\.\Z|(?<=\.)\.")
KNOWN_REVISIONS_MAX: Final = 10_000
"""Open leases this process remembers at the revision it wrote or read last (under a
kilobyte each); beyond that, the oldest are forgotten, and a resolve of theirs reads the
store first. A settled lease is not remembered: only a replay would read it again."""


HELD_PREFIX: Final = "=W"
"""First token of the keys of the per-worker index. `lease_key` never writes it: after `=` it
writes two hexadecimal digits."""


def held_key(worker_id: WorkerId, task_id: TaskId, lease_id: LeaseId) -> str:
    """The index key saying that the worker holds that lease of the task:
    `=W.<worker>.<lease key>.<lease id>`, the worker and the lease id as one token each."""
    return f"{held_keys(worker_id)[:-1]}{lease_key(task_id)}.{_one_token(lease_id)}"


def held_keys(worker_id: WorkerId) -> str:
    """The filter of all the worker's index keys."""
    return f"{HELD_PREFIX}.{_one_token(worker_id)}.>"


def _one_token(text: str) -> str:
    return lease_key(TaskId(text)).replace(".", "=2E")


def lease_key(task_id: TaskId) -> str:
    """The task id as a KV key, reversibly: every byte outside the key alphabet (and `=`
    itself, the escape) is written `=XX`, as are dots that would make an empty token.

    Undo with `urllib.parse.unquote(key.replace("=", "%"))`.
    """
    escaped = _UNSAFE.sub(lambda m: "".join(f"={byte:02X}" for byte in m[0].encode()), task_id)
    return _EMPTY_TOKEN_DOT.sub("=2E", escaped)


@attrs.define
class NatsLeaseStore:
    """LeaseStore on a JetStream KV bucket (`bridge_leases`, which must exist).

    A lease is stored under `lease_key(task_id)` as the codec's JSON, and its `revision` is
    the KV revision, so replace and delete are compare-and-set on the server. The lease's
    own deadline decides when it reads as absent; the bucket's TTL only collects garbage.
    A replace of a revision this process wrote or read last is one round trip (the update):
    what that revision holds never changes, and the server refuses the update if it is no
    longer the latest. `recent` answers from those remembered leases, with no round trip.

    A lease handed out to a worker also gets an index key, `held_key(worker, task, lease
    id)`, written with it, written again when it is extended (which renews its age in the
    bucket), and deleted when it settles or goes: `held_by` reads the worker's index keys
    and the leases they name, never the whole bucket. The index is a hint: every lease it
    names is read and checked, and an index key left behind (a redelivery to another
    worker, a process killed between two writes, a failed delete) is deleted by the next
    `held_by` that finds it stale; so only the first write of a key must succeed.

    Mutable on purpose: it keeps the bucket once bound, and the leases it remembers.
    """

    js: JetStream
    clock: Clock = attrs.field(kw_only=True)
    bucket: str = attrs.field(default=LEASES_BUCKET, kw_only=True)
    _kv: NatsKeyValue | None = attrs.field(init=False, default=None)
    _known: dict[TaskId, Lease] = attrs.field(init=False, factory=dict)

    async def get(self, task_id: TaskId) -> Lease | None:
        stored = await self._stored(task_id)
        return stored if stored is not None and self._live(stored) else None

    def recent(self, task_id: TaskId) -> Lease | None:
        known = self._known.get(task_id)
        return known if known is not None and self._live(known) else None

    async def put(self, lease: Lease) -> Lease:
        """Store a new current lease for the task, replacing any older one, and index it
        under its worker (both writes at once)."""
        kv = await self._bound()
        stored = kv.put(lease_key(lease.task_id), _encode(lease))
        if lease.worker_id is None:
            revision = await stored
        else:
            indexed = kv.put(held_key(lease.worker_id, lease.task_id, lease.lease_id), b"")
            revision, _ = await together.results(stored, indexed)
        return self._remember(attrs.evolve(lease, revision=revision))

    async def replace(self, lease: Lease) -> Lease:
        """Store `lease` only if the stored one is live, has its lease_id and its revision.

        LeaseRevisionError otherwise, also when another write lands between the read and
        the write (the server checks the revision).
        """
        current = await self._current(lease.task_id, lease.revision)
        if (
            current is None
            or current.lease_id != lease.lease_id
            or current.revision != lease.revision
            or not self._live(current)
        ):
            raise LeaseRevisionError(lease.task_id)
        kv = await self._bound()
        updated = kv.update(lease_key(lease.task_id), _encode(lease), last=lease.revision)
        upkeep = self._index_upkeep(kv, lease, was=current)
        if upkeep is None:
            revision = await updated
        else:
            revision, _ = await together.results(updated, upkeep)
        if revision is None:
            self._known.pop(lease.task_id, None)
            raise LeaseRevisionError(lease.task_id)
        return self._remember(attrs.evolve(lease, revision=revision))

    async def delete(self, task_id: TaskId, lease_id: str) -> None:
        """Forget the lease, live or expired, if it is still the task's current one."""
        stored = await self._stored(task_id)
        if stored is not None and stored.lease_id == lease_id:
            kv = await self._bound()
            # Refused when a newer lease was put since the read: that one must stay.
            if await kv.delete_at(lease_key(task_id), last=stored.revision):
                await self._unindex(kv, stored)
            self._known.pop(task_id, None)

    def _index_upkeep(
        self, kv: NatsKeyValue, lease: Lease, *, was: Lease
    ) -> Coroutine[None, None, None] | None:
        """What a replace of `was` by `lease` does to the worker's index, at once with it: a
        settled lease leaves it; an extended one (or one put back from settled) is written
        again. Either is done for the lease key `lease` names, even if the replace is
        refused: that lease is then over, and its key is another's to check."""
        if lease.worker_id is None:
            return None
        if lease.state is LeaseState.SETTLED:
            return self._unindex(kv, lease)
        if lease.state is LeaseState.ACTIVE or was.state is LeaseState.SETTLED:
            key = held_key(lease.worker_id, lease.task_id, lease.lease_id)
            return _best_effort(kv.put(key, b""), f"index key {key} not written")
        return None

    async def _unindex(self, kv: NatsKeyValue, lease: Lease) -> None:
        if lease.worker_id is not None:
            key = held_key(lease.worker_id, lease.task_id, lease.lease_id)
            await _best_effort(kv.delete(key), f"index key {key} not deleted")

    async def count(self) -> int:
        """Unexpired leases; reads the whole bucket (for metrics and tests)."""
        kv = await self._bound()
        leases = [_decode(entry) for entry in await kv.latest() if not _is_index(entry)]
        return sum(1 for lease in leases if self._live(lease))

    async def held_by(self, worker_id: WorkerId) -> list[Lease]:
        """The worker's unexpired, unsettled leases: O(the worker's index keys), each lease
        they name read at once; index keys found stale are deleted on the way."""
        kv = await self._bound()
        index = await kv.latest(held_keys(worker_id))
        named = await asyncio.gather(*(self._indexed(kv, entry) for entry in index))
        return [lease for lease in named if lease is not None]

    async def _indexed(self, kv: NatsKeyValue, entry: KvEntry) -> Lease | None:
        """The open lease an index key names; None, with the key deleted if it has not
        changed since, when that lease has settled, gone, or been replaced by another."""
        _, _, named = entry.key.split(".", 2)
        found = await kv.get(named.rsplit(".", 1)[0])
        lease = _decode(found) if found is not None else None
        if lease is not None and self._holds(lease, entry):
            return self._remember(lease)
        stale = kv.delete_at(entry.key, last=entry.revision)
        await _best_effort(stale, f"stale index key {entry.key} not deleted")
        return None

    def _holds(self, lease: Lease, entry: KvEntry) -> bool:
        return (
            lease.worker_id is not None
            and held_key(lease.worker_id, lease.task_id, lease.lease_id) == entry.key
            and lease.state is not LeaseState.SETTLED
            and self._live(lease)
        )

    async def _current(self, task_id: TaskId, revision: int) -> Lease | None:
        """The lease at `revision` if this process knows it, else what the store holds."""
        known = self._known.get(task_id)
        if known is not None and known.revision == revision:
            return known
        return await self._stored(task_id)

    async def _stored(self, task_id: TaskId) -> Lease | None:
        kv = await self._bound()
        entry = await kv.get(lease_key(task_id))
        if entry is None:
            self._known.pop(task_id, None)
            return None
        return self._remember(_decode(entry))

    def _remember(self, lease: Lease) -> Lease:
        self._known.pop(lease.task_id, None)
        if lease.state is LeaseState.SETTLED:
            return lease
        if len(self._known) >= KNOWN_REVISIONS_MAX:
            del self._known[next(iter(self._known))]
        self._known[lease.task_id] = lease
        return lease

    def _live(self, lease: Lease) -> bool:
        return lease.deadline > self.clock.now()

    async def _bound(self) -> NatsKeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self.js, self.bucket)
        if self._kv is None:
            raise BackendError(f"KV bucket {self.bucket} is missing (the bridge creates it)")
        return self._kv


async def _best_effort(write: Awaitable[object], failure: str) -> None:
    try:
        await write
    except DomainError as exc:
        log.warning("%s: %s", failure, exc)


def _is_index(entry: KvEntry) -> bool:
    return entry.key.startswith(f"{HELD_PREFIX}.")


def _encode(lease: Lease) -> bytes:
    # The revision is the KV entry's, never part of the value. Left out of the fields, not
    # set to its default on a copy: attrs.evolve was 1.5 % of a busy bridge's CPU here.
    fields = unstructure(lease)
    fields.pop("revision", None)
    return msgspec.json.encode(fields)


def _decode(entry: KvEntry) -> Lease:
    try:
        lease = decode(entry.value, Lease)
    except DecodeError as exc:
        raise BackendError(f"unreadable lease under KV key {entry.key}: {exc}") from exc
    return attrs.evolve(lease, revision=entry.revision)
