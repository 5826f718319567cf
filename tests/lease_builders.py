"""A plain lease builder for the lease store tests (Hypothesis strategies: lease_strategies)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from adapters.memory.clock import EPOCH
from domain.models import (
    DeliveryHandle,
    Lease,
    LeaseId,
    RunId,
    StepId,
    TaskId,
    TaskType,
    WorkerId,
)

TASK: Final = TaskId("run-1.s1")
LIFETIME: Final = timedelta(minutes=5, seconds=30)
"""How long after EPOCH (a ManualClock's start) a built lease's deadline comes."""


def lease(lease_id: str = "lease-1", task_id: TaskId = TASK) -> Lease:
    """An active lease of worker `w-1`, at revision 0, with every wire field set."""
    return Lease(
        task_id=task_id,
        run_id=RunId("run-1"),
        step_id=StepId("s1"),
        task_type=TaskType("email"),
        lease_id=LeaseId(lease_id),
        handle=DeliveryHandle("$JS.ACK.TASK_QUEUES.workers-email.1.7.7.1767225600000000000.0"),
        attempt=1,
        iteration=0,
        delivery_count=1,
        ack_wait=timedelta(minutes=5),
        deadline=EPOCH + LIFETIME,
        worker_id=WorkerId("w-1"),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
