"""Whether a terminal action that was cut short got its event stored.

A terminal resolve claims the lease (SETTLING), publishes its event, then acks. A fault after
the publish (NATS away, the bridge killed) can leave the lease SETTLING with nothing telling
that the event is out. Publishing it again, or handing the task out again, would then store a
second terminal event once WORKFLOW_HISTORY's 5 s duplicate window has passed, so whoever
finds such a lease asks the run's history first. Only then: a lease claimed by the request at
hand needs no look-up.
"""

from __future__ import annotations

from domain.models import Lease
from domain.ports import EventLog
from domain.protocol import STEP_COMPLETED, STEP_FAILED, continue_msg_id, event_msg_id
from domain.services.actions import Complete, Continue, Fail


def terminal_msg_id(lease: Lease) -> str | None:
    """The msg-id of the event the lease's terminal action publishes; None for one that
    publishes none (a pause saves a checkpoint, a release only NAKs)."""
    if lease.terminal_action == Continue.action:
        return continue_msg_id(lease.run_id, lease.step_id, lease.iteration, lease.lease_id)
    if lease.terminal_action == Complete.action:
        return event_msg_id(lease.run_id, lease.step_id, STEP_COMPLETED, lease.attempt)
    if lease.terminal_action == Fail.action:
        return event_msg_id(lease.run_id, lease.step_id, STEP_FAILED, lease.attempt)
    return None


async def event_recorded(events: EventLog, lease: Lease) -> bool:
    """Whether the event of the lease's terminal action is stored: as the lease says, else as
    the run's history says (a read of all of it). False for an action without an event."""
    if lease.recorded:
        return True
    msg_id = terminal_msg_id(lease)
    return msg_id is not None and await events.contains(lease.run_id, msg_id)
