"""DagNats wire names: streams, subjects, buckets and consumer names (PROTOCOL.md 1, 4.1).

The one place adapters take them from, so the memory fake and JetStream agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

TASK_STREAM: Final = "TASK_QUEUES"
TASK_SUBJECTS: Final = "task.>"
HISTORY_STREAM: Final = "WORKFLOW_HISTORY"
HISTORY_SUBJECTS: Final = "history.>"
HISTORY_DUPLICATE_WINDOW: Final = timedelta(seconds=5)
HISTORY_MAX_AGE: Final = timedelta(days=30)

CHECKPOINTS_BUCKET: Final = "checkpoints"
SIGNALS_BUCKET: Final = "signals"
WORKERS_BUCKET: Final = "workers"
WORKERS_TTL: Final = timedelta(seconds=60)
LEASES_BUCKET: Final = "bridge_leases"
"""The bridge's own bucket: it creates it when absent, with or without provisioning."""
POLLS_BUCKET: Final = "bridge_polls"
"""The bridge's own bucket of poll answers by poll_id, created like `bridge_leases`."""

CONSUMER_ACK_WAIT: Final = timedelta(minutes=5)
CONSUMER_MAX_ACK_PENDING: Final = 1_000
"""JetStream's default, which the consumers the bridge creates keep, as the Go bridge's do:
a consumer delivers no new message while this many of its deliveries are unsettled."""
MSG_ID_HEADER: Final = "Nats-Msg-Id"
EXPECTED_STREAM_HEADER: Final = "Nats-Expected-Stream"
"""What a JetStream publish naming its stream adds to the message's headers."""
DEFAULT_MAX_PAYLOAD: Final = 1_048_576
"""nats-server's default max_payload: the most a message weighs, its headers included."""
_HEADER_BLOCK_BYTES: Final = len(b"NATS/1.0\r\n") + len(b"\r\n")
_HEADER_LINE_BYTES: Final = len(b": \r\n")

_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")


def consumer_name(task_type: str) -> str:
    """`workers-<type>` with `.` as `-` and anything outside [A-Za-z0-9_-] as `_`."""
    return "workers-" + _UNSAFE_NAME_CHARS.sub("_", task_type.replace(".", "-"))


def consumer_filter(task_type: str) -> str:
    return f"task.{task_type}.>"


def task_subject(task_type: str, run_id: str) -> str:
    return f"task.{task_type}.{run_id}"


def history_subject(run_id: str) -> str:
    return f"history.{run_id}"


def stream_subject(run_id: str, step_id: str) -> str:
    return f"stream.{run_id}.{step_id}"


def name_conflict(name: str, existing_filter: str, wanted_filter: str) -> str:
    return (
        f'consumer "{name}" already serves filter {existing_filter} but this poll needs '
        f"{wanted_filter}: two task types sanitize to the same durable name (dots collapse "
        "to hyphens) — rename one of them"
    )


def overlap_conflict(name: str, wanted_filter: str, other_filter: str) -> str:
    return (
        f'cannot create consumer "{name}" on filter {wanted_filter}: another consumer already '
        f"covers an overlapping filter {other_filter} on the {TASK_STREAM} work-queue stream"
    )


WILDCARD: Final = "*"
FULL_WILDCARD: Final = ">"


def subject_matches(subject_filter: str, subject: str) -> bool:
    """Whether the concrete `subject` matches `subject_filter` (`*` one token, `>` the rest)."""
    tokens = subject.split(".")
    for index, wanted in enumerate(subject_filter.split(".")):
        if wanted == FULL_WILDCARD:
            return len(tokens) > index
        if index >= len(tokens) or wanted not in (WILDCARD, tokens[index]):
            return False
    return len(tokens) == len(subject_filter.split("."))


def filters_overlap(first: str, second: str) -> bool:
    """Whether some concrete subject matches both subject filters."""
    left, right = first.split("."), second.split(".")
    for mine, theirs in zip(left, right, strict=False):
        if FULL_WILDCARD in (mine, theirs):
            # `>` takes whatever the other filter still needs: at least one token, which it has.
            return True
        if WILDCARD not in (mine, theirs) and mine != theirs:
            return False
    # Neither ended in `>`, so a common subject has exactly as many tokens as each filter.
    return len(left) == len(right)


def message_bytes(payload: bytes, headers: Mapping[str, str] | None) -> int:
    """What a message weighs against max_payload, as the server counts it: its payload and
    the header block nats-py writes for `headers` (at most: it may drop newlines)."""
    if not headers:
        return len(payload)
    lines = (
        len(key.strip().encode()) + len(value.strip().encode()) + _HEADER_LINE_BYTES
        for key, value in headers.items()
        if key.strip()
    )
    return len(payload) + _HEADER_BLOCK_BYTES + sum(lines)
