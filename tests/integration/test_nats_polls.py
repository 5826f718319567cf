"""NatsPollAnswerStore against a real nats-server: answers byte-exact, shared, with a TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from nats.aio.client import Client as NatsClient

from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue
from adapters.nats.polls import NatsPollAnswerStore
from domain.errors import BackendError
from domain.models import LeaseId, PolledTask, PollId, RawJson, RunId, StepId, TaskId
from tests.integration.kv_helpers import bucket_name, fresh_bucket, until

pytestmark = pytest.mark.integration


def polled(step: str, **fields: object) -> PolledTask:
    return PolledTask(
        task_id=TaskId(f"r1.{step}"),
        run_id=RunId("r1"),
        step_id=StepId(step),
        attempt=1,
        lease_id=LeaseId(f"lease-{step}"),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
async def kv(nats_client: NatsClient) -> AsyncIterator[NatsKeyValue]:
    async with fresh_bucket(JetStream(nats_client), ttl=timedelta(seconds=1), direct=False) as kv:
        yield kv


@pytest.fixture
def store(kv: NatsKeyValue) -> NatsPollAnswerStore:
    return NatsPollAnswerStore(kv.js, bucket=kv.name)


async def test_an_answer_reads_back_with_its_raw_values_byte_exact(
    store: NatsPollAnswerStore, kv: NatsKeyValue
) -> None:
    answer = [
        polled("a", input=RawJson(b'{"n": 1e2, "s": "\\u00e9"}'), iteration=2),
        polled("b", checkpoint=RawJson(b"[1, 2]"), metadata={"k": "v"}),
    ]

    await store.put(PollId("poll-1"), answer)

    other_replica = NatsPollAnswerStore(kv.js, bucket=kv.name)
    assert await other_replica.get(PollId("poll-1")) == answer
    assert await store.get(PollId("poll-2")) is None


async def test_an_answer_is_gone_once_the_bucket_ttl_has_passed(store: NatsPollAnswerStore) -> None:
    await store.put(PollId("poll-1"), [polled("a")])

    async def expired() -> bool:
        return await store.get(PollId("poll-1")) is None

    await until(expired, within_s=5)


async def test_an_answer_larger_than_one_message_is_kept_in_parts_and_reads_back(
    store: NatsPollAnswerStore, kv: NatsKeyValue
) -> None:
    """256 tasks of 4 KB inputs make such an answer."""
    answer = [polled(step, input=RawJson(b'"' + b"x" * 600_000 + b'"')) for step in "abc"]

    await store.put(PollId("poll-1"), answer)

    other_replica = NatsPollAnswerStore(kv.js, bucket=kv.name)
    assert await other_replica.get(PollId("poll-1")) == answer
    assert len(await kv.keys()) == 3  # the head and two parts


async def test_an_answer_whose_parts_have_expired_reads_as_absent(
    store: NatsPollAnswerStore, kv: NatsKeyValue
) -> None:
    answer = [polled(step, input=RawJson(b'"' + b"x" * 600_000 + b'"')) for step in "ab"]
    await store.put(PollId("poll-1"), answer)

    await kv.delete(max(key for key in await kv.keys() if key != "poll-1"))

    assert await store.get(PollId("poll-1")) is None


async def test_two_replicas_answering_one_poll_id_at_once_never_mix_their_parts(
    store: NatsPollAnswerStore, kv: NatsKeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first writer's head lands last, after the second writer's parts and head."""
    first = [polled(step, input=RawJson(b'"' + b"a" * 600_000 + b'"')) for step in "abc"]
    second = [polled(step, input=RawJson(b'"' + b"b" * 600_000 + b'"')) for step in "ab"]
    put, held, release = NatsKeyValue.put, asyncio.Event(), asyncio.Event()

    async def hold_the_first_head(self: NatsKeyValue, key: str, value: bytes) -> int:
        if key == "poll-1" and not held.is_set():
            held.set()
            await release.wait()
        return await put(self, key, value)

    monkeypatch.setattr(NatsKeyValue, "put", hold_the_first_head)
    writing = asyncio.create_task(store.put(PollId("poll-1"), first))
    await held.wait()
    await NatsPollAnswerStore(kv.js, bucket=kv.name).put(PollId("poll-1"), second)
    release.set()
    await writing

    assert await store.get(PollId("poll-1")) == first


async def test_a_missing_bucket_is_a_backend_error(nats_client: NatsClient) -> None:
    js: JetStream = JetStream(nats_client)
    store = NatsPollAnswerStore(js, bucket=bucket_name())

    with pytest.raises(BackendError, match="is missing"):
        await store.get(PollId("poll-1"))
