"""What the NATS lease store writes: KV keys made from task ids, and leases as JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.codec import decode, encode
from adapters.nats.kv import check_key
from adapters.nats.leases import HELD_PREFIX, held_key, held_keys, lease_key
from domain.errors import InvalidRequestError
from domain.models import (
    DeliveryHandle,
    Lease,
    LeaseId,
    LeaseState,
    RunId,
    StepId,
    TaskId,
    TaskType,
    WorkerId,
)
from tests.lease_strategies import leases


def unescape(key: str) -> str:
    return unquote(key.replace("=", "%"))


@given(st.text(min_size=1))
@example("run-1.step-1")
@example(".")
@example("a..b.")
@example("=2E.%é ~*>")
def test_a_lease_key_is_a_valid_kv_key_that_gives_back_the_task_id(task_id: str) -> None:
    key = lease_key(TaskId(task_id))

    assert check_key(key) == key
    assert unescape(key) == task_id


def test_a_task_id_inside_the_key_alphabet_is_its_own_key() -> None:
    assert lease_key(TaskId("run-1.step_2/x")) == "run-1.step_2/x"


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", "a.*", "a.>", "é"])
def test_a_key_jetstream_cannot_store_is_a_client_mistake(key: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid KV key"):
        check_key(key)


@given(leases())
def test_a_lease_survives_the_codec(lease: Lease) -> None:
    assert decode(encode(lease), Lease) == lease


def test_a_lease_is_json_with_its_ack_wait_in_milliseconds_and_defaults_left_out() -> None:
    lease = Lease(
        task_id=TaskId("r.s"),
        run_id=RunId("r"),
        step_id=StepId("s"),
        task_type=TaskType("email"),
        lease_id=LeaseId("l-1"),
        handle=DeliveryHandle("$JS.ACK.TASK_QUEUES.c.1.7.7.0.0"),
        attempt=2,
        iteration=0,
        delivery_count=2,
        ack_wait=timedelta(minutes=5),
        deadline=datetime(2026, 1, 1, 0, 5, 30, tzinfo=UTC),
        state=LeaseState.SETTLING,
        terminal_action="complete",
    )

    assert encode(lease) == (
        b'{"task_id":"r.s","run_id":"r","step_id":"s","task_type":"email","lease_id":"l-1",'
        b'"handle":"$JS.ACK.TASK_QUEUES.c.1.7.7.0.0","attempt":2,"iteration":0,'
        b'"delivery_count":2,"ack_wait":300000,"deadline":"2026-01-01T00:05:30Z",'
        b'"state":"settling","terminal_action":"complete"}'
    )


kv_key_text = st.from_regex(r"[-/_=.a-zA-Z0-9]{1,30}", fullmatch=True)


@given(st.text(min_size=1), kv_key_text, kv_key_text)
@example("=W.w.run.step", "w", "lease-1")
@example("W.x", "a.b", "1.2")
def test_an_index_key_is_a_kv_key_no_lease_key_can_be_and_names_one_worker_and_lease(
    task_id: str, worker_id: str, lease_id: str
) -> None:
    key = held_key(WorkerId(worker_id), TaskId(task_id), LeaseId(lease_id))

    check_key(key)
    assert not lease_key(TaskId(task_id)).startswith(f"{HELD_PREFIX}.")
    prefix, worker, rest = key.split(".", 2)
    named, lease = rest.rsplit(".", 1)
    assert (prefix, unescape(worker), named, unescape(lease)) == (
        HELD_PREFIX,
        worker_id,
        lease_key(TaskId(task_id)),
        lease_id,
    )
    assert held_keys(WorkerId(worker_id)) == f"{prefix}.{worker}.>"
