"""Poll answers in the bridge's own KV bucket, so a repeat on any replica replays them."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Final

import attrs
import msgspec

from adapters.codec import DecodeError, decode_list, encode
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue, open_bucket
from adapters.wire import POLLS_BUCKET
from domain.errors import BackendError
from domain.models import PolledTask, PollId

PART_MARGIN: Final = 1024
"""Room left beside each part, in its message, for headers a KV put may carry."""
WRITE_ID_BYTES: Final = 6


@attrs.define
class NatsPollAnswerStore:
    """PollAnswerStore on a JetStream KV bucket (`bridge_polls`, which must exist).

    The answer is stored under its poll_id (one KV token: the poll_id alphabet is within the
    key alphabet) as the JSON array the client got. One larger than a message can carry (256
    tasks of 4 KB inputs are) is stored in parts under `<poll_id>.<write>.1`, `.2`, ..., and
    under the poll_id `{"parts": N, "write": "<write>"}`, written last: a repeat that finds
    it finds the parts, unless they have expired, a moment before it (the answer then reads
    as absent). Each write's parts have keys of their own, so two replicas answering one
    poll_id at once never mix theirs: the last head names whole parts. The bucket's TTL is
    the replay window, on the server's clock. Mutable on purpose: it keeps the bucket once
    bound.
    """

    js: JetStream
    bucket: str = attrs.field(default=POLLS_BUCKET, kw_only=True)
    _kv: NatsKeyValue | None = attrs.field(init=False, default=None)

    async def get(self, poll_id: PollId) -> list[PolledTask] | None:
        kv = await self._bound()
        entry = await kv.get(poll_id)
        if entry is None:
            return None
        try:
            value = entry.value
            if value.startswith(b"{"):
                head = msgspec.json.decode(value, type=_Parts)
                keys = [_part_key(poll_id, head.write, n) for n in range(1, head.parts + 1)]
                found = await kv.get_many(keys)
                if len(found) < head.parts:
                    return None
                value = b"".join(found[key].value for key in keys)
            return decode_list(value, PolledTask)
        except (DecodeError, msgspec.DecodeError) as exc:
            raise BackendError(f"unreadable poll answer under KV key {poll_id}: {exc}") from exc

    async def put(self, poll_id: PollId, tasks: Sequence[PolledTask]) -> None:
        kv = await self._bound()
        value = encode(list(tasks))
        size = self.js.inbox.connection.max_payload - PART_MARGIN
        if len(value) <= size:
            await kv.put(poll_id, value)
            return
        parts = [value[start : start + size] for start in range(0, len(value), size)]
        write = secrets.token_hex(WRITE_ID_BYTES)
        await asyncio.gather(
            *(kv.put(_part_key(poll_id, write, n), part) for n, part in enumerate(parts, 1))
        )
        await kv.put(poll_id, msgspec.json.encode(_Parts(len(parts), write)))

    async def _bound(self) -> NatsKeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self.js, self.bucket)
        if self._kv is None:
            raise BackendError(f"KV bucket {self.bucket} is missing (the bridge creates it)")
        return self._kv


class _Parts(msgspec.Struct, frozen=True):
    parts: int
    write: str


def _part_key(poll_id: PollId, write: str, n: int) -> str:
    return f"{poll_id}.{write}.{n}"
