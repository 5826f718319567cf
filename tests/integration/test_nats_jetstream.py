"""`JetStream.publish` and its direct reads keep nats-py's contract: the same PubAck or
message, the same errors.

Each case runs through nats-py's own `JetStreamContext` and through `JetStream` on one
connection, against a real nats-server, and compares what each returned or raised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, PubAck, RawStreamMsg, StreamConfig
from nats.js.client import JetStreamContext

from adapters.nats.jetstream import JetStream
from tests.integration.kv_helpers import bucket_name

pytestmark = pytest.mark.integration

Publish = Callable[[JetStreamContext], Awaitable[object]]


@pytest.fixture
async def stream(nats_client: NatsClient) -> AsyncIterator[str]:
    name = bucket_name("pubs").upper()
    js = nats_client.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], duplicate_window=60))
    yield name
    await js.delete_stream(name)


def outcome(result: object) -> tuple[str, object]:
    """A PubAck as its fields less the sequence (each publish takes the next); an error as
    its type and JetStream's error code."""
    if isinstance(result, PubAck):
        return ("ack", (result.stream, result.duplicate, result.domain))
    if isinstance(result, nats.js.errors.APIError):
        return ("raised", (type(result).__name__, result.code, result.err_code))
    return ("raised", type(result).__name__)


async def both(nats_client: NatsClient, publish: Publish) -> list[tuple[str, object]]:
    results = []
    for js in (nats_client.jetstream(), JetStream(nats_client)):
        try:
            results.append(outcome(await publish(js)))
        except Exception as exc:
            results.append(outcome(exc))
    return results


async def test_a_publish_is_stored_as_the_next_message_of_its_stream(
    nats_client: NatsClient, stream: str
) -> None:
    js = JetStream(nats_client)
    first = await js.publish(f"{stream}.a", b"1", stream=stream)
    second = await js.publish(f"{stream}.b", b"2", headers={"k": "v"})
    assert (first.stream, first.seq, second.seq) == (stream, 1, 2)
    stored = await nats_client.jetstream().get_msg(stream, 2)
    assert (stored.subject, stored.data, (stored.headers or {}).get("k")) == (
        f"{stream}.b",
        b"2",
        "v",
    )


@pytest.mark.parametrize(
    ("case", "publish"),
    [
        (
            "a first msg-id",
            lambda js, s: js.publish(f"{s}.a", b"", headers={"Nats-Msg-Id": f"{type(js)}"}),
        ),
        ("the expected stream", lambda js, s: js.publish(f"{s}.a", b"", stream=s)),
        ("another stream expected", lambda js, s: js.publish(f"{s}.a", b"", stream="OTHER")),
        ("no stream takes the subject", lambda js, s: js.publish(f"nobody.{s}", b"")),
        ("a bad subject", lambda js, s: js.publish(f"{s}.a b", b"")),
        (
            "a last sequence that is not",
            lambda js, s: js.publish(
                f"{s}.a", b"", headers={"Nats-Expected-Last-Subject-Sequence": "999"}
            ),
        ),
    ],
)
async def test_a_publish_answers_as_nats_pys_does(
    nats_client: NatsClient,
    stream: str,
    case: str,
    publish: Callable[[JetStreamContext, str], Awaitable[Any]],
) -> None:
    nats_py, ours = await both(nats_client, lambda js: publish(js, stream))
    assert ours == nats_py, case


async def test_a_repeated_msg_id_is_a_duplicate_for_both(
    nats_client: NatsClient, stream: str
) -> None:
    async def twice(js: JetStreamContext) -> PubAck:
        await js.publish(f"{stream}.a", b"", headers={"Nats-Msg-Id": f"{type(js)}"})
        return await js.publish(f"{stream}.a", b"", headers={"Nats-Msg-Id": f"{type(js)}"})

    nats_py, ours = await both(nats_client, twice)
    assert ours == nats_py == ("ack", (stream, True, None))


async def test_kv_writes_through_it_keep_nats_pys_errors(nats_client: NatsClient) -> None:
    js = JetStream(nats_client)
    name = bucket_name("jskv")
    bucket = await js.create_key_value(KeyValueConfig(bucket=name))
    try:
        revision = await bucket.put("k", b"1")
        assert await bucket.update("k", b"2", last=revision) == revision + 1
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await bucket.update("k", b"3", last=revision)
        await bucket.delete("k")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await bucket.get("k")
    finally:
        await js.delete_key_value(name)


def read(result: object) -> tuple[str, Any]:
    """A message as what a KV read uses of it; an error as its type."""
    if isinstance(result, RawStreamMsg):
        return ("msg", (result.subject, result.seq, result.data, result.time, result.headers))
    return ("raised", type(result).__name__)


async def both_reads(
    nats_client: NatsClient,
    stream: str,
    subject: str,
    *,
    direct: bool = True,
    api_prefix: str | None = None,
) -> list[tuple[str, Any]]:
    results = []
    for js in (nats_client.jetstream(), JetStream(nats_client)):
        if api_prefix is not None:
            js._prefix = api_prefix  # where nats-py sends JetStream API requests
        try:
            results.append(read(await js.get_msg(stream, subject=subject, direct=direct)))
        except Exception as exc:
            results.append(read(exc))
    return results


async def test_a_direct_read_of_a_key_answers_as_nats_pys_does(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    name = bucket_name("reads")
    bucket = await js.create_key_value(KeyValueConfig(bucket=name, direct=True))
    try:
        await bucket.put("k", b"first")
        revision = await bucket.put("k", b"latest")
        await bucket.put("gone", b"1")
        await bucket.delete("gone")

        kept = await both_reads(nats_client, f"KV_{name}", f"$KV.{name}.k")
        deleted = await both_reads(nats_client, f"KV_{name}", f"$KV.{name}.gone")
        absent = await both_reads(nats_client, f"KV_{name}", f"$KV.{name}.never")
    finally:
        await js.delete_key_value(name)
    no_stream = await both_reads(nats_client, "KV_NOBODY", "$KV.NOBODY.k")
    bad_name = await both_reads(nats_client, "KV.bad", "$KV.bad.k")

    assert kept[0] == kept[1]
    assert kept[1][1][1:3] == (revision, b"latest")
    assert deleted[0] == deleted[1]
    assert deleted[1][1][4]["KV-Operation"] == "DEL"
    assert absent == [("raised", "NotFoundError")] * 2
    assert no_stream == [("raised", "NoRespondersError")] * 2
    assert bad_name == [("raised", "ValueError")] * 2


async def test_a_read_of_a_key_without_direct_gets_answers_as_nats_pys_does(
    nats_client: NatsClient,
) -> None:
    js = nats_client.jetstream()
    name = bucket_name("apireads")
    bucket = await js.create_key_value(KeyValueConfig(bucket=name, direct=False))
    stream, subject = f"KV_{name}", f"$KV.{name}"
    try:
        await bucket.put("k", b"first")
        revision = await bucket.put("k", b"latest")
        await js.publish(f"{subject}.headed", b"", headers={"A": "1", "B-Two": "x: y"})
        await bucket.put("gone", b"1")
        await bucket.delete("gone")

        kept = await both_reads(nats_client, stream, f"{subject}.k", direct=False)
        headed = await both_reads(nats_client, stream, f"{subject}.headed", direct=False)
        deleted = await both_reads(nats_client, stream, f"{subject}.gone", direct=False)
        absent = await both_reads(nats_client, stream, f"{subject}.never", direct=False)
    finally:
        await js.delete_key_value(name)
    no_stream = await both_reads(nats_client, "KV_NOBODY", "$KV.NOBODY.k", direct=False)
    no_api = await both_reads(
        nats_client, stream, f"{subject}.k", direct=False, api_prefix="$JS.nobody.API"
    )
    bad_name = await both_reads(nats_client, "KV.bad", "$KV.bad.k", direct=False)

    assert kept[0] == kept[1]
    assert kept[1][1][1:3] == (revision, b"latest")
    assert headed[0] == headed[1]
    _, (_, _, no_data, _, headers) = headed[1]
    assert (no_data, headers) == (None, {"A": "1", "B-Two": "x: y"})
    assert deleted[0] == deleted[1]
    assert deleted[1][1][4]["KV-Operation"] == "DEL"
    assert absent == [("raised", "NotFoundError")] * 2
    assert no_stream == [("raised", "NotFoundError")] * 2
    assert no_api == [("raised", "ServiceUnavailableError")] * 2
    assert bad_name == [("raised", "ValueError")] * 2
