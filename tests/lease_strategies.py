"""Hypothesis strategies for leases, shared by the lease store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

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

texts = st.text(min_size=1, max_size=12)
# Naive bounds, as Hypothesis wants them; every value drawn is UTC.
deadlines = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
# The codec keeps durations to the millisecond, as the wire does.
ack_waits = st.integers(min_value=1, max_value=24 * 3_600_000).map(
    lambda ms: timedelta(milliseconds=ms)
)


def leases(task_ids: st.SearchStrategy[str] = texts) -> st.SearchStrategy[Lease]:
    """Any lease the bridge may store, at revision 0 (the store assigns revisions)."""
    return st.builds(
        Lease,
        task_id=task_ids.map(TaskId),
        run_id=texts.map(RunId),
        step_id=texts.map(StepId),
        task_type=texts.map(TaskType),
        lease_id=texts.map(LeaseId),
        handle=texts.map(DeliveryHandle),
        attempt=st.integers(min_value=1, max_value=100_000),
        iteration=st.integers(min_value=0, max_value=1_000),
        delivery_count=st.integers(min_value=1, max_value=1_000),
        ack_wait=ack_waits,
        deadline=deadlines,
        worker_id=st.none() | texts.map(WorkerId),
        traceparent=st.none() | texts,
        tracestate=st.none() | texts,
        state=st.sampled_from(LeaseState),
        terminal_action=st.none() | st.sampled_from(["complete", "fail", "pause", "continue"]),
        revision=st.just(0),
    )
