"""The simulator's engine side: enqueue tasks as the DagNats engine does."""

from __future__ import annotations

import attrs

from domain.errors import InvalidRequestError
from domain.models import RawJson, RunId, StepId, TaskPayload, TaskType, task_id_of
from domain.ports import IdSource, TaskPublisher
from domain.protocol import queued_msg_id, validate_id_token


@attrs.frozen(kw_only=True)
class EnqueueCommand:
    task_type: TaskType
    input: RawJson | None = None
    run_id: RunId | None = None
    step_id: StepId | None = None
    attempt: int = 0
    iteration: int = 0
    metadata: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class EnqueueTask:
    """Publish a task message with the engine's subject and first-dispatch msg-id.

    Enqueueing the same run and step twice within the queue's duplicate window is a no-op,
    as it is on JetStream.
    """

    publisher: TaskPublisher
    ids: IdSource

    async def __call__(self, cmd: EnqueueCommand) -> TaskPayload:
        run_id = RunId(validate_id_token(cmd.run_id or f"run-{self.ids.new_id()}", "run_id"))
        step_id = StepId(validate_id_token(cmd.step_id or "step-1", "step_id"))
        for field, value in (("attempt", cmd.attempt), ("iteration", cmd.iteration)):
            if value < 0:
                raise InvalidRequestError(f"{field} must not be negative", field)
        task = TaskPayload(
            task_id=task_id_of(run_id, step_id),
            run_id=run_id,
            step_id=step_id,
            iteration=cmd.iteration,
            attempt=cmd.attempt,
            input=cmd.input,
            metadata=cmd.metadata,
        )
        await self.publisher.publish_task(
            cmd.task_type, task, msg_id=queued_msg_id(run_id, step_id)
        )
        return task
