"""JetStream API facts that nats-py does not expose: request subjects, ack bodies, codes.

These are NATS's own wire names (pull requests, acks, API errors), not DagNats's; the DagNats
names are in `adapters.wire`. API request bodies are small JSON objects built with `json`, as
nats-py builds them; the codec is for DagNats's wire types.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

API_PREFIX: Final = "$JS.API"
DEFAULT_ACK_WAIT_S: Final = 30.0
"""What JetStream gives a consumer created without an AckWait."""

ACK: Final = b"+ACK"
NAK: Final = b"-NAK"
IN_PROGRESS: Final = b"+WPI"
TERM: Final = b"+TERM"

STATUS_HEADER: Final = "Status"
DESCRIPTION_HEADER: Final = "Description"
SEQUENCE_HEADER: Final = "Nats-Sequence"
"""On a message a direct get answers: its stream sequence."""
NUM_PENDING_HEADER: Final = "Nats-Num-Pending"
NO_MESSAGES: Final = "404"
"""A no-wait pull request found nothing (more) to deliver."""
REQUEST_TIMEOUT: Final = "408"
"""A pull request expired, or a no-wait one ended after a partial batch."""
HEARTBEAT: Final = "100"
CONFLICT: Final = "409"
"""A pull request ended for a reason its description gives."""
SERVER_SHUTDOWN: Final = "Server Shutdown"
PASSING_CONFLICTS: Final = frozenset({"Leadership Change", SERVER_SHUTDOWN})
"""The 409s that end a pull request with nothing wrong with its consumer: its leader moved
to another server of the cluster, or the server that held the request is stopping."""
END_OF_BATCH: Final = "204"
"""A batched direct get sent all it found."""
EMPTY_REQUEST: Final = (408, "Empty Request")
"""What a nats-server before 2.11 answers a batched direct get: it knows no `multi_last`."""
NO_RESPONDERS: Final = "503"

CONSUMER_NOT_FOUND: Final = 10014
NO_MESSAGE_FOUND: Final = 10037
STREAM_NAME_IN_USE: Final = 10058
"""A stream of that name exists with another configuration."""
WORKQUEUE_FILTER_NOT_UNIQUE: Final = 10100
CONSUMER_ALREADY_EXISTS: Final = 10148


def consumer_create_subject(stream: str, name: str, subject_filter: str) -> str:
    return f"{API_PREFIX}.CONSUMER.CREATE.{stream}.{name}.{subject_filter}"


def pull_subject(stream: str, consumer: str) -> str:
    return f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def nak_body(delay: timedelta) -> bytes:
    """`-NAK`, with the redelivery delay in nanoseconds when there is one."""
    delay_ns = delay // timedelta(microseconds=1) * 1000
    if delay_ns <= 0:
        return NAK
    return NAK + b' {"delay": %d}' % delay_ns


def nanoseconds(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
