"""Poll answers in the bridge's own KV bucket, so a repeat on any replica replays them."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from adapters.codec import DecodeError, decode_list, encode
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue, open_bucket
from adapters.wire import POLLS_BUCKET
from domain.errors import BackendError
from domain.models import PolledTask, PollId


@attrs.define
class NatsPollAnswerStore:
    """PollAnswerStore on a JetStream KV bucket (`bridge_polls`, which must exist).

    The answer is stored under its poll_id (one KV token: the poll_id alphabet is within the
    key alphabet) as the JSON array the client got. The bucket's TTL is the replay window,
    on the server's clock. Mutable on purpose: it keeps the bucket once bound.
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
            return decode_list(entry.value, PolledTask)
        except DecodeError as exc:
            raise BackendError(f"unreadable poll answer under KV key {poll_id}: {exc}") from exc

    async def put(self, poll_id: PollId, tasks: Sequence[PolledTask]) -> None:
        kv = await self._bound()
        await kv.put(poll_id, encode(list(tasks)))

    async def _bound(self) -> NatsKeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self.js, self.bucket)
        if self._kv is None:
            raise BackendError(f"KV bucket {self.bucket} is missing (the bridge creates it)")
        return self._kv
