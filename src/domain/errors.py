"""The domain's error tree: each class is an outcome a caller can act on."""

from __future__ import annotations


class DomainError(Exception):
    """Base for failures the domain raises on purpose; `str(exc)` is the client-facing detail."""


class InvalidRequestError(DomainError):
    """The request is malformed; `field` names the offending field when there is one."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class TaskNotFoundError(DomainError):
    def __init__(self) -> None:
        super().__init__("task not found")


class CheckpointNotFoundError(DomainError):
    def __init__(self) -> None:
        super().__init__("no checkpoint saved for this task")


class StaleLeaseError(DomainError):
    """The resolve names a lease that is no longer the task's current one."""

    def __init__(self, sent: str) -> None:
        # The current lease id is not told: a stale holder must not learn how to settle it.
        super().__init__(f"lease {sent} is not the task's current lease")


class AlreadySettledError(DomainError):
    """The task was already settled by another terminal action."""

    def __init__(self, action: str) -> None:
        super().__init__(f"task already resolved with action {action}")


class SignalTimeoutError(DomainError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no signal {name!r} before the timeout")


class ConsumerConflictError(DomainError):
    """A task type's consumer collides with another consumer of the work-queue stream."""


class BucketUnavailableError(DomainError):
    """A KV bucket an action needs does not exist on this deployment."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} KV not configured")


class BackendUnavailableError(DomainError):
    """The message broker cannot be reached; retrying later may succeed."""


class BackendError(DomainError):
    """The message broker answered with a fault."""


class LeaseRevisionError(DomainError):
    """A lease changed between read and write (another resolve got there first)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was changed by a concurrent resolve")


class PayloadTooLargeError(DomainError):
    """What the request would publish exceeds what the broker accepts in one message."""
