"""The durable pull consumer of a task type, shared with native workers (PROTOCOL.md 4.1).

Looked up first and adopted only when its filter is exactly ours; created only when absent,
with action "create", so an existing consumer (and a native worker's AckWait on it) is never
updated. nats-py's `add_consumer` is create-or-update, hence the raw API request here.
"""

from __future__ import annotations

import json
from datetime import timedelta

import attrs
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.client import JetStreamContext

from adapters.nats.errors import translated
from adapters.nats.jsapi import (
    CONSUMER_ALREADY_EXISTS,
    CONSUMER_NOT_FOUND,
    WORKQUEUE_FILTER_NOT_UNIQUE,
    consumer_create_subject,
)
from adapters.wire import (
    consumer_filter,
    consumer_name,
    filters_overlap,
    name_conflict,
    overlap_conflict,
)
from domain.errors import BackendError, ConsumerConflictError

API_TIMEOUT_S = 5.0


@attrs.frozen
class TypeConsumers:
    """The task-type consumers of the work-queue stream `stream`.

    `ack_wait` is the AckWait a consumer gets when this creates it; one that exists keeps its own.
    """

    nc: NatsClient
    js: JetStreamContext
    stream: str
    ack_wait: timedelta

    async def ensure(self, task_type: str) -> api.ConsumerInfo:
        """The type's consumer, adopted or created.

        Raises ConsumerConflictError when its durable name serves another filter (two types
        sanitise to one name), or another consumer's filter overlaps ours on the work queue.
        """
        name, wanted = consumer_name(task_type), consumer_filter(task_type)
        existing = await self._lookup(name)
        if existing is None:
            existing = await self._create(name, wanted)
        return _adoptable(existing, wanted)

    async def _lookup(self, name: str) -> api.ConsumerInfo | None:
        with translated(f'look up consumer "{name}"'):
            try:
                info: api.ConsumerInfo = await self.js.consumer_info(self.stream, name)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == CONSUMER_NOT_FOUND:
                    return None
                raise
        return info

    async def _create(self, name: str, wanted: str) -> api.ConsumerInfo:
        with translated(f'create consumer "{name}" on filter {wanted}'):
            try:
                return await self._create_request(name, wanted)
            except nats.js.errors.APIError as exc:
                if exc.err_code == CONSUMER_ALREADY_EXISTS:
                    return await self._adopt_after_race(name)
                if exc.err_code == WORKQUEUE_FILTER_NOT_UNIQUE:
                    other = await self._overlapping_filter(wanted)
                    raise ConsumerConflictError(overlap_conflict(name, wanted, other)) from exc
                raise

    async def _create_request(self, name: str, wanted: str) -> api.ConsumerInfo:
        """CONSUMER.CREATE with action "create": JetStream refuses to touch an existing one."""
        config = api.ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=wanted,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait.total_seconds(),
            max_deliver=-1,
        )
        request = {"stream_name": self.stream, "config": config.as_dict(), "action": "create"}
        reply = await self.nc.request(
            consumer_create_subject(self.stream, name, wanted),
            json.dumps(request).encode(),
            timeout=API_TIMEOUT_S,
        )
        response = json.loads(reply.data)
        if "error" in response:
            nats.js.errors.APIError.from_error(response["error"])
        info: api.ConsumerInfo = api.ConsumerInfo.from_response(response)
        return info

    async def _adopt_after_race(self, name: str) -> api.ConsumerInfo:
        """Another creator won between our look-up and our create: take theirs."""
        found = await self._lookup(name)
        if found is None:
            raise BackendError(f'adopt consumer "{name}" after concurrent create: it is gone')
        return found

    async def _overlapping_filter(self, wanted: str) -> str:
        """The filter of the consumer that blocks ours on the work queue (10100 does not say)."""
        infos: list[api.ConsumerInfo] = await self.js.consumers_info(self.stream)
        for info in infos:
            serves = _filter_of(info.config)
            if any(filters_overlap(part, wanted) for part in serves.split(", ")):
                return serves
        return "(unknown: it was deleted meanwhile)"


def _adoptable(info: api.ConsumerInfo, wanted: str) -> api.ConsumerInfo:
    serves = _filter_of(info.config)
    if serves != wanted:
        raise ConsumerConflictError(name_conflict(info.name, serves, wanted))
    return info


def _filter_of(config: api.ConsumerConfig) -> str:
    """The consumer's filter as one string; no filter at all means the whole stream."""
    return config.filter_subject or ", ".join(config.filter_subjects or []) or ">"
