"""The OpenAPI description of the API, written out where Litestar cannot infer it.

The handlers read raw bodies (so raw JSON passes through byte-exact) and answer bytes, and
Litestar documents neither (litestar#4482): each route names its request and answer
schemas and its error statuses here, and `documented` builds the `operation_class` that puts
them in its operation. The schemas describe valid bodies; the handlers stay as lenient as
the Go bridge (unknown fields ignored, out-of-range counts clamped).

Every property has a description and examples: a field that means the same wherever it
appears takes them from `FIELDS` by its name; one that means something of its own in a body
gets them there (`_field`). Every error status has its description and example problems
(`ERRORS`), with the Go bridge's messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from litestar.enums import ParamType
from litestar.openapi.spec import (
    Components,
    Example,
    Link,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Responses,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_503_SERVICE_UNAVAILABLE

from adapters.http.problems import PROBLEM_JSON, TITLES
from domain.protocol import (
    MAX_NAME_BYTES,
    MAX_PAUSE_MS,
    MAX_POLL_ID_CHARS,
    MAX_SIGNAL_WAIT_MS,
    MAX_TASK_TYPE_BYTES,
)
from domain.tracing import (
    MAX_TRACESTATE_CHARS,
    TRACEPARENT_PATTERN,
    TRACESTATE_PATTERN,
)

JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"

STRING: Final = Schema(type=OpenAPIType.STRING)
EMPTY: Final = Schema(type=OpenAPIType.STRING, max_length=0)
INTEGER: Final = Schema(type=OpenAPIType.INTEGER)
BOOLEAN: Final = Schema(type=OpenAPIType.BOOLEAN)
TIMESTAMP: Final = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)
ANY_JSON: Final = Schema(description="Any JSON value, passed on byte for byte.")
STRING_MAP: Final = Schema(type=OpenAPIType.OBJECT, additional_properties=STRING)
TASK_TYPE: Final = Schema(
    type=OpenAPIType.STRING,
    pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
    max_length=MAX_TASK_TYPE_BYTES,
)
TASK_TYPES: Final = Schema(type=OpenAPIType.ARRAY, items=TASK_TYPE, min_items=1)
KV_KEY: Final = Schema(
    type=OpenAPIType.STRING,
    pattern=r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$",
    description="Letters, digits and - / _ = in dot-separated parts, none of them empty.",
)
ID_TOKEN: Final = Schema(type=OpenAPIType.STRING, pattern=r"^[A-Za-z0-9_-]+$")
POLL_ID: Final = Schema(
    type=OpenAPIType.STRING, pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_POLL_ID_CHARS}}}$"
)
EXAMPLE_TRACEPARENT: Final = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EXAMPLE_TRACESTATE: Final = "congo=t61rcWkgMzE"
TRACEPARENT: Final = Schema(
    type=OpenAPIType.STRING,
    pattern=f"^{TRACEPARENT_PATTERN}$",
    description="W3C trace context: the task carries it to the worker and its events.",
    examples=[EXAMPLE_TRACEPARENT],
)
TRACESTATE: Final = Schema(
    type=OpenAPIType.STRING,
    pattern=f"^{TRACESTATE_PATTERN}$",
    max_length=MAX_TRACESTATE_CHARS,
    description="W3C vendor trace state; kept only with a traceparent.",
    examples=[EXAMPLE_TRACESTATE],
)
NON_NEGATIVE: Final = Schema(type=OpenAPIType.INTEGER, minimum=0)
CLAMPED_MAX_TASKS: Final = Schema(
    type=OpenAPIType.INTEGER, description="1 when 0 or less; at most 256."
)

EXAMPLE_TASK_ID: Final = "r1.step-1"
EXAMPLE_LEASE_ID: Final = "3f2b8c1e9a0d4b6f8e7a5c4d2b1a0f9e"
EXAMPLE_TIME: Final = "2026-01-01T00:05:30Z"


@dataclass(frozen=True)
class Meaning:
    """What a field means, and values it may take."""

    description: str
    examples: tuple[object, ...]


FIELDS: Final = {
    "task_id": Meaning(
        "The task's id, `<run_id>.<step_id>`; percent-encode it whole in a path.",
        (EXAMPLE_TASK_ID,),
    ),
    "run_id": Meaning("The workflow run the task belongs to.", ("r1",)),
    "step_id": Meaning("The step of the run the task executes.", ("step-1",)),
    "attempt": Meaning(
        "The delivery's attempt, from 1: the engine's attempt when it set one, else how many "
        "times NATS has delivered the task.",
        (1, 2),
    ),
    "lease_id": Meaning(
        "The lease this delivery was handed out under; send it back on resolve to be fenced "
        "against a newer delivery (409 when it is no longer current).",
        (EXAMPLE_LEASE_ID,),
    ),
    "iteration": Meaning(
        "The step's agent-loop iteration: each `continue` has the engine publish the step "
        "again with one more; left out when 0.",
        (1, 2),
    ),
    "input": Meaning("The task's input, as the engine published it.", ({"to": "a@b.c"},)),
    "metadata": Meaning(
        "String labels, passed on as they are.", ({"region": "eu-west-1", "tenant": "acme"},)
    ),
    "workflow_name": Meaning("The workflow the run executes.", ("onboarding",)),
    "dispatch_nonce": Meaning(
        "The engine's nonce for this dispatch, passed on from the task message.",
        ("9c1d7e2a5b",),
    ),
    "traceparent": Meaning(
        "W3C trace context of the task's dispatch: the worker's spans continue it.",
        (EXAMPLE_TRACEPARENT,),
    ),
    "tracestate": Meaning(
        "W3C vendor trace state, passed on with the traceparent.", (EXAMPLE_TRACESTATE,)
    ),
    "checkpoint": Meaning(
        "The checkpoint saved for the task (by `checkpoint` or `pause`), handed to its next "
        "delivery.",
        ({"page": 3},),
    ),
    "worker_id": Meaning(
        "The worker's id, as it connected: dot-separated parts of letters, digits and - / _ =, "
        f"at most {MAX_NAME_BYTES} bytes.",
        ("worker-1",),
    ),
    "task_types": Meaning(
        "The task types the worker takes tasks of: dot-separated parts of letters, digits, "
        "- and _, at most 128 bytes each.",
        (["email.send"], ["email.send", "sms.send"]),
    ),
    "max_tasks": Meaning(
        "How many leases the worker may hold at once; its polls take no more.", (4,)
    ),
    "poll_id": Meaning(
        "Makes the poll repeatable: the same poll_id within 60 s, on any replica, answers the "
        "same tasks and leases (those not resolved or redelivered since) instead of fetching "
        "more.",
        ("poll-7f3a9c",),
    ),
    "output": Meaning(
        "The step's result, published in its `step.completed` (or `step.continue`) event.",
        ({"ok": True},),
    ),
    "error": Meaning("Why the step failed; `unspecified error` when empty.", ("rate limited",)),
    "retry_after_ms": Meaning(
        "How long the engine waits before the retry, in milliseconds.", (5000,)
    ),
    "duration_ms": Meaning(
        "How long to pause, in milliseconds: the task is redelivered after it.", (60000,)
    ),
    "name": Meaning(
        f"The signal's name, at most {MAX_NAME_BYTES} bytes: it is stored under `<run_id>.<name>`.",
        ("approved",),
    ),
    "data": Meaning("The signal's value, answered to the run's `wait_signal`.", (True,)),
    "language": Meaning(
        "`http` for a worker behind the bridge (a native worker registers `go`).", ("http",)
    ),
    "transport": Meaning(
        "`bridge` for a worker behind the bridge (a native worker registers `nats`).", ("bridge",)
    ),
    "last_seen": Meaning(
        "When the registration was last refreshed: at connect and on every heartbeat.",
        (EXAMPLE_TIME,),
    ),
    "task_type": Meaning(
        "The task's type, which workers poll for (published on `task.<type>.<run_id>`).",
        ("email.send",),
    ),
    "timestamp": Meaning("When the event happened.", (EXAMPLE_TIME,)),
    "payload": Meaning(
        "The event's body: the step's output, its failure, or the workflow's result.",
        ({"ok": True}, {"error": "rate limited", "failure_type": "retriable"}),
    ),
    "trace_parent": Meaning(
        "W3C trace context the event was published under.", (EXAMPLE_TRACEPARENT,)
    ),
    "trace_state": Meaning(
        "W3C vendor trace state the event was published under.", (EXAMPLE_TRACESTATE,)
    ),
    "attempt_number": Meaning("The attempt of the step the event is about.", (1, 2)),
    "ms": Meaning("How far to move the manual clock forward, in milliseconds.", (330000,)),
    "now": Meaning("The manual clock's time after the move.", (EXAMPLE_TIME,)),
    "attempts": Meaning("How many attempts of the step have started so far.", (1, 2)),
    "last_event": Meaning(
        "The last history event the run published.", ("step.failed", "workflow.completed")
    ),
    "retry_at": Meaning("When a pending retry re-publishes the task.", (EXAMPLE_TIME,)),
}
"""Fields that mean the same in every schema they appear in, by name."""


def _field(schema: Schema, description: str, *examples: object) -> Schema:
    """`schema` as a property: what it means there, followed by any note of its own (a
    format, a clamp), and values it may take."""
    note = f" {schema.description}" if schema.description else ""
    return replace(schema, description=description + note, examples=list(examples))


def _property(name: str, schema: Schema) -> Schema:
    """The property as given when it has its examples, else with its meaning in FIELDS."""
    if schema.examples:
        return schema
    meaning = FIELDS[name]
    return _field(schema, meaning.description, *meaning.examples)


def _const(value: str, description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, const=value, description=description, examples=[value])


def _duration(upper: int) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=upper)


def _object(required: Sequence[str] = (), **properties: Schema) -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        properties={name: _property(name, schema) for name, schema in properties.items()},
        required=list(required) or None,
    )


PROBLEM: Final = _object(
    ("type", "title", "status", "detail"),
    type=_field(STRING, "`about:blank`: the status says what kind of error it is.", "about:blank"),
    title=_field(STRING, "The status's reason phrase.", "Bad Request", "Conflict"),
    status=_field(INTEGER, "The HTTP status, the same as the answer's.", 400, 409),
    detail=_field(
        STRING,
        "What went wrong, with the Go bridge's message where it has one.",
        "task_types is required",
    ),
    field=_field(STRING, "The request field at fault, with 400 when there is one.", "task_types"),
)

CONNECT_BODY: Final = _object(
    ("worker_id", "task_types"),
    worker_id=_field(
        KV_KEY,
        "The worker's id: its registration's key, which its polls name to be capped by "
        "`max_tasks`.",
        "worker-1",
    ),
    task_types=TASK_TYPES,
    max_tasks=CLAMPED_MAX_TASKS,
    metadata=_field(
        STRING_MAP,
        "String labels of the worker, kept in its registration.",
        {"region": "eu-west-1"},
    ),
)

POLL_BODY: Final = _object(
    ("task_types",),
    task_types=TASK_TYPES,
    max_tasks=_field(CLAMPED_MAX_TASKS, "How many tasks to take at most.", 1, 10),
    timeout_ms=_field(
        Schema(type=OpenAPIType.INTEGER, description="5000 when 0 or less; at most 60000."),
        "How long to wait for a task, in milliseconds; `[]` when none came.",
        30000,
    ),
    worker_id=_field(
        KV_KEY,
        "Ties the leases to this worker: `step.started` carries it, and while the worker is "
        "connected it gets no more than its `max_tasks` less the leases it holds.",
        "worker-1",
    ),
    poll_id=POLL_ID,
)

POLLED_TASK: Final = _object(
    ("task_id", "run_id", "step_id", "attempt", "lease_id"),
    task_id=STRING,
    run_id=STRING,
    step_id=STRING,
    attempt=INTEGER,
    lease_id=STRING,
    iteration=INTEGER,
    input=ANY_JSON,
    metadata=STRING_MAP,
    workflow_name=STRING,
    dispatch_nonce=STRING,
    traceparent=STRING,
    tracestate=STRING,
    checkpoint=ANY_JSON,
)

SIGNAL_RUN_ID: Final = _field(
    KV_KEY, "The run the signal is for: its `wait_signal` of that name gets it.", "r1"
)


def _action(name: str, required: Sequence[str] = (), /, **fields: Schema) -> Schema:
    return _object(
        ("action", *required),
        action=_const(name, "The action to take on the task."),
        lease_id=_field(
            STRING,
            "The lease_id of the poll that handed the task out: the resolve is fenced against "
            "a newer delivery (409 once it is superseded); without it, not fenced.",
            EXAMPLE_LEASE_ID,
        ),
        worker_id=_field(
            KV_KEY,
            "The worker the published events name (default: the polling worker).",
            "worker-1",
        ),
        **fields,
    )


FAIL_ERROR: Final = _property("error", STRING)

RESOLVE_BODY: Final = Schema(
    one_of=[
        _action("complete", output=ANY_JSON),
        _action(
            "fail",
            error=FAIL_ERROR,
            failure_type=_field(
                Schema(type=OpenAPIType.STRING, enum=["retriable", "non_retriable", "permanent"]),
                "Whether the engine retries: `retriable` (the default), or `non_retriable` "
                "(`permanent` is the same), which fails the step.",
                "retriable",
                "non_retriable",
            ),
        ),
        _action(
            "fail",
            ("failure_type", "retry_after_ms"),
            error=FAIL_ERROR,
            failure_type=_const(
                "retry_after", "Retry after `retry_after_ms`, not the engine's backoff."
            ),
            retry_after_ms=Schema(type=OpenAPIType.INTEGER, description="Clamped to 100..3600000."),
        ),
        _action(
            "pause",
            ("duration_ms",),
            duration_ms=_duration(MAX_PAUSE_MS),
            checkpoint=_field(
                ANY_JSON,
                "The checkpoint to save for the next delivery.",
                {"page": 3},
            ),
            name=_field(
                STRING,
                'The pause\'s name: without a checkpoint, `{"pause_resume": name}` is saved, '
                "as a native worker's Pause(name) does.",
                "await-approval",
            ),
        ),
        _action(
            "checkpoint",
            ("data",),
            data=_field(
                ANY_JSON,
                "The checkpoint to save: the task's next delivery carries it. Extends the lease.",
                {"page": 3},
            ),
        ),
        _action("heartbeat"),
        _action(
            "stream",
            ("data",),
            data=_field(
                ANY_JSON,
                "A chunk to publish on the step's stream. Extends the lease.",
                {"token": "Hel"},
            ),
        ),
        _action("continue", output=ANY_JSON),
        _action(
            "send_signal",
            ("run_id", "name", "data"),
            run_id=SIGNAL_RUN_ID,
            name=KV_KEY,
            data=ANY_JSON,
        ),
        _action(
            "wait_signal",
            ("name", "timeout_ms"),
            name=KV_KEY,
            timeout_ms=_field(
                _duration(MAX_SIGNAL_WAIT_MS),
                "How long to wait for the signal, in milliseconds; 408 when none came.",
                30000,
            ),
        ),
    ]
)

RESOLVE_BATCH_BODY: Final = Schema(
    type=OpenAPIType.ARRAY,
    max_items=256,
    items=Schema(
        all_of=[_object(("task_id",), task_id=STRING), RESOLVE_BODY],
        description="A resolve body and its task_id; any action but wait_signal.",
    ),
)
RESOLVE_BATCH_ANSWER: Final = Schema(
    type=OpenAPIType.ARRAY,
    description="One answer per item, in the order given.",
    items=_object(
        ("task_id", "status"),
        task_id=STRING,
        status=_field(
            INTEGER,
            "What the single resolve would answer: 200, 400, 404, 409, 413, 503...",
            200,
            409,
        ),
        replayed=_field(
            BOOLEAN, "With 200: whether it repeated a terminal action already taken.", False
        ),
        detail=_field(
            STRING,
            "Without 200: the problem's detail, as the single resolve's.",
            f"lease {EXAMPLE_LEASE_ID} is not the task's current lease",
        ),
        field=_field(STRING, "With 400: the item's field at fault.", "duration_ms"),
    ),
)

WORKER_REGISTRATION: Final = _object(
    ("worker_id", "task_types", "language", "transport", "max_tasks", "last_seen"),
    worker_id=STRING,
    task_types=Schema(type=OpenAPIType.ARRAY, items=STRING),
    language=STRING,
    transport=STRING,
    max_tasks=INTEGER,
    last_seen=TIMESTAMP,
    metadata=_field(STRING_MAP, "The labels the worker connected with.", {"region": "eu-west-1"}),
)

STATUS: Final = _object(
    ("status",), status=_field(STRING, "`ok` from /healthz, `ready` from /readyz.", "ok", "ready")
)

CONNECT_EVENT: Final = Schema(
    one_of=[
        _object(
            ("event", "data"),
            event=_const("heartbeat", "Sent every heartbeat interval while registered."),
            data=_const("ok", "Always `ok`."),
        ),
        _object(
            ("event", "data"),
            event=_const("shutdown", "The bridge drains: connect to another replica."),
            data=_const("draining", "Always `draining`."),
        ),
    ],
    description="`heartbeat` every interval; `shutdown` when the bridge drains (connect "
    "elsewhere).",
)

SIM_TASK_BODY: Final = _object(
    ("task_type",),
    task_type=TASK_TYPE,
    input=ANY_JSON,
    run_id=_field(ID_TOKEN, "The run to enqueue the task in; `run-<new id>` when left out.", "r1"),
    step_id=_field(ID_TOKEN, "The task's step; `step-1` when left out.", "step-1"),
    attempt=_field(
        NON_NEGATIVE, "The attempt the engine would publish: 0 on first dispatch.", 0, 1
    ),
    iteration=_field(NON_NEGATIVE, "The agent-loop iteration of the step.", 0),
    metadata=_field(
        STRING_MAP, "String labels the task carries to its worker.", {"tenant": "acme"}
    ),
    traceparent=TRACEPARENT,
    tracestate=TRACESTATE,
)

SIM_TASK_CREATED: Final = _object(
    ("task_id", "run_id", "step_id"), task_id=STRING, run_id=STRING, step_id=STRING
)

EVENT: Final = _object(
    ("type", "run_id", "timestamp"),
    type=_field(
        STRING,
        "The history event's type.",
        "step.started",
        "step.completed",
        "workflow.completed",
    ),
    run_id=STRING,
    step_id=_field(STRING, "The step the event is about; none on workflow events.", "step-1"),
    timestamp=TIMESTAMP,
    payload=ANY_JSON,
    trace_parent=STRING,
    trace_state=STRING,
    worker_id=_field(STRING, "The worker that ran the attempt, when known.", "worker-1"),
    attempt_number=INTEGER,
)

SIM_SIGNAL_BODY: Final = _object(
    ("run_id", "name", "data"), run_id=SIGNAL_RUN_ID, name=KV_KEY, data=ANY_JSON
)

CLOCK_ADVANCE_BODY: Final = _object(("ms",), ms=Schema(type=OpenAPIType.INTEGER, minimum=1))

CLOCK: Final = _object(("now",), now=TIMESTAMP)

SIM_RUN: Final = _object(
    ("run_id", "step_id", "task_type", "status", "attempts", "iteration"),
    run_id=STRING,
    step_id=STRING,
    task_type=STRING,
    status=_field(
        Schema(type=OpenAPIType.STRING, enum=["running", "completed", "failed"]),
        "Where the run is: `running` until its workflow completes or fails.",
        "running",
        "completed",
    ),
    attempts=INTEGER,
    iteration=INTEGER,
    last_event=STRING,
    error=_field(STRING, "Why the run failed.", "rate limited"),
    retry_at=TIMESTAMP,
)

POLL_TASKS: Final = "pollTasks"
RESOLVE_TASK: Final = "resolveTask"
RESOLVE_TASKS: Final = "resolveTasks"
READ_CHECKPOINT: Final = "readCheckpoint"
ENQUEUE_TASK: Final = "enqueueTask"
RUN_EVENTS: Final = "runEvents"

FIRST_TASK_ID: Final = "$response.body#/0/task_id"
POLL_LINKS: Final[dict[str, Link | Reference]] = {
    "ResolveTheFirstTask": Link(operation_id=RESOLVE_TASK, parameters={"task_id": FIRST_TASK_ID}),
    "ReadTheFirstTasksCheckpoint": Link(
        operation_id=READ_CHECKPOINT, parameters={"task_id": FIRST_TASK_ID}
    ),
}
ENQUEUE_LINKS: Final[dict[str, Link | Reference]] = {
    "PollTheTask": Link(
        operation_id=POLL_TASKS, request_body={"task_types": ["$request.body#/task_type"]}
    ),
    "ReadTheRunsEvents": Link(
        operation_id=RUN_EVENTS, parameters={"run_id": "$response.body#/run_id"}
    ),
}


def array_of(item: Schema) -> Schema:
    return Schema(type=OpenAPIType.ARRAY, items=item)


@dataclass(frozen=True)
class Problem:
    """An example problem+json answer: the Go bridge's detail, and the field at fault."""

    detail: str
    field: str | None = None


@dataclass(frozen=True)
class ErrorStatus:
    """When a status is answered, and the problems it comes with."""

    description: str
    examples: Mapping[str, Problem]


ERRORS: Final = {
    400: ErrorStatus(
        "Bad input: a body that is not UTF-8 JSON of the expected shape, or a field that "
        "breaks its rules; `field` names the culprit when there is one (`[1].action` for an "
        "item of a batch).",
        {
            "MissingTaskTypes": Problem("task_types is required", "task_types"),
            "BadDuration": Problem("duration_ms must be in (0, 3600000]", "duration_ms"),
            "UnknownAction": Problem("invalid action: finish", "action"),
            "NotJson": Problem("invalid JSON: nested too deeply"),
            "BadBatchItem": Problem("item 1: action is required", "[1].action"),
        },
    ),
    401: ErrorStatus(
        "The bridge has tokens (`DAGNATS_BRIDGE_TOKEN` or a tokens file) and the request's "
        "`Authorization: Bearer <token>` header is missing or holds none of them.",
        {"NoToken": Problem("unauthorized")},
    ),
    404: ErrorStatus(
        "The task is not in flight (any id the bridge never handed out is unknown), or it "
        "has no checkpoint saved.",
        {
            "UnknownTask": Problem("task not found"),
            "NoCheckpoint": Problem("no checkpoint saved for this task"),
        },
    ),
    408: ErrorStatus(
        "wait_signal: no signal of that name came before `timeout_ms`; the lease stays.",
        {"NoSignal": Problem("no signal 'approved' before the timeout")},
    ),
    409: ErrorStatus(
        "A resolve with a `lease_id` that is no longer the task's current one, a different "
        "terminal action on a settled task, or a concurrent resolve that got there first; "
        "a poll whose task types overlap another consumer's on the work-queue stream.",
        {
            "StaleLease": Problem(f"lease {EXAMPLE_LEASE_ID} is not the task's current lease"),
            "AlreadySettled": Problem("task already resolved with action complete"),
            "ConcurrentResolve": Problem(
                f"task {EXAMPLE_TASK_ID} was changed by a concurrent resolve"
            ),
        },
    ),
    413: ErrorStatus(
        "The body is over `--max-body-bytes`, or an event the request would publish is over "
        "the NATS server's `max_payload`.",
        {
            "BodyTooLarge": Problem("request body too large"),
            "EventTooLarge": Problem(
                "publish step.completed on history.r1: larger than the NATS server's max_payload"
            ),
        },
    ),
    503: ErrorStatus(
        "NATS is unreachable, or the bridge is shutting down; retry after `Retry-After` "
        "seconds (another replica may answer at once).",
        {
            "NatsAway": Problem("fetch email.send tasks: NATS unavailable (reconnecting)"),
            "Draining": Problem("the bridge is shutting down: try another replica"),
        },
    ),
}
"""Every error status the API documents: when it happens, and example problems."""

RETRY_AFTER: Final = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=1, examples=[5, 1]),
    description="Seconds to wait before retrying: 1 while the bridge drains, 5 while NATS is away.",
    required=True,
)

V1_ERRORS: Final = (400, 401, 503)
"""What every /v1/ route may answer: bad input, no token, backend away."""

BEARER: Final = "bearer"
COMPONENTS: Final = Components(
    security_schemes={
        BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="A token of the bridge's (`DAGNATS_BRIDGE_TOKEN`), on every /v1/ "
            "route; a bridge started without tokens asks for none.",
        )
    }
)
"""What the operations refer to, for the app's OpenAPI config."""
BEARER_REQUIRED: Final[list[SecurityRequirement]] = [{BEARER: []}]

TRACE_HEADERS: Final = (
    Parameter(
        name="traceparent",
        param_in=ParamType.HEADER,
        required=False,
        schema=TRACEPARENT,
        description="The parent of the `bridge.resolve` span, whose context the published "
        "events carry; a malformed one is ignored (the task's dispatch span is the parent).",
    ),
    Parameter(
        name="tracestate",
        param_in=ParamType.HEADER,
        required=False,
        schema=TRACESTATE,
        description="Passed on with the traceparent; a malformed one is dropped.",
    ),
)
HEADERS_READ: Final[Mapping[str, Sequence[Parameter]]] = {
    RESOLVE_TASK: TRACE_HEADERS,
    RESOLVE_TASKS: TRACE_HEADERS,
}
"""The request headers an operation's handler reads, by operation id."""


PATH_PARAMETERS: Final = {
    "task_id": Meaning(
        "The task's id as a poll handed it out, percent-encoded whole (`a/b` as `a%2Fb`).",
        (EXAMPLE_TASK_ID,),
    ),
    "run_id": Meaning("The run's id, as the enqueue answered it.", ("r1",)),
}
"""The path parameters' meanings, which Litestar documents without them."""


def _with_meaning(parameter: Parameter | Reference) -> Parameter | Reference:
    if not isinstance(parameter, Parameter) or parameter.param_in != ParamType.PATH:
        return parameter
    meaning = PATH_PARAMETERS.get(parameter.name)
    if meaning is None:
        return parameter
    schema = parameter.schema
    if isinstance(schema, Schema):
        schema = replace(schema, examples=list(meaning.examples))
    return replace(parameter, description=meaning.description, schema=schema)


def _problem_response(status: int) -> OpenAPIResponse:
    error = ERRORS[status]
    examples: dict[str, Example | Reference] = {
        name: Example(value=_problem_body(status, problem))
        for name, problem in error.examples.items()
    }
    return OpenAPIResponse(
        description=error.description,
        headers={"Retry-After": RETRY_AFTER} if status == HTTP_503_SERVICE_UNAVAILABLE else None,
        content={PROBLEM_JSON: OpenAPIMediaType(schema=PROBLEM, examples=examples)},
    )


def _problem_body(status: int, problem: Problem) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": TITLES[status],
        "status": status,
        "detail": problem.detail,
    }
    return body | ({"field": problem.field} if problem.field else {})


def documented(
    *,
    body: Schema | None = None,
    answer: Schema | Mapping[str, Schema] | None = None,
    errors: Sequence[int] = V1_ERRORS,
    links: dict[str, Link | Reference] | None = None,
) -> type[Operation]:
    """An `operation_class` that documents `body` (JSON), the success answer (a JSON schema,
    or schemas by media type), problem+json answers for `errors`, the bearer token where 401
    is one of them, the meanings of its path parameters (`PATH_PARAMETERS`) and the headers
    the operation reads (`HEADERS_READ`)."""
    answers = {JSON: answer} if isinstance(answer, Schema) else dict(answer or {})

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = RequestBody(
                    content={JSON: OpenAPIMediaType(schema=body)}, required=True
                )
            self.responses = {
                **_success(self.responses or {}, answers, links),
                **{str(status): _problem_response(status) for status in errors},
            }
            if HTTP_401_UNAUTHORIZED in errors:
                self.security = BEARER_REQUIRED
            parameters = [_with_meaning(parameter) for parameter in self.parameters or []]
            headers = HEADERS_READ.get(self.operation_id or "", ())
            self.parameters = [*parameters, *headers] or None

    return DocumentedOperation


def _success(
    generated: Responses,
    answers: dict[str, Schema],
    links: dict[str, Link | Reference] | None,
) -> Responses:
    """Litestar's success response (its status and description) with the real schemas;
    Litestar's responses as they are when it made no 2xx one."""
    found = next(
        (
            (code, response)
            for code, response in generated.items()
            if code.startswith("2") and isinstance(response, OpenAPIResponse)
        ),
        None,
    )
    if found is None:
        return dict(generated)
    status, response = found
    content = {kind: OpenAPIMediaType(schema=schema) for kind, schema in answers.items()}
    return {
        status: OpenAPIResponse(
            description=response.description, content=content or None, links=links or None
        )
    }
