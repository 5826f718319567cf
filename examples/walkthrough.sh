#!/usr/bin/env bash
# A walk through the bridge's HTTP API with curl: connect, poll, and every resolve action
# (complete, fail, pause, checkpoint, heartbeat, stream, continue, send_signal, wait_signal),
# each followed by the history events it produced, as the engine reads them.
#
#     make run-memory                 # in one terminal: a bridge with the simulator
#     examples/walkthrough.sh         # in another
#
# It also runs against `dagnats-bridge serve --backend memory --clock manual`, where it moves
# the clock instead of waiting, and against `make run` (embedded NATS); it expects the engine
# simulation's default retry settings. DAGNATS_BRIDGE_URL (default http://127.0.0.1:8080) says where
# the bridge is; DAGNATS_BRIDGE_TOKEN, when set, is sent as a bearer token. Each step prints
# its request (>), the answer (<) and what to notice (#). An answer that is not the expected
# one stops the walk with status 1. Needs bash, curl and jq.
set -euo pipefail

URL=${DAGNATS_BRIDGE_URL:-http://127.0.0.1:8080}
RUN=walk-$$ # every run of this walk is named $RUN-<what it shows>
WORKER=$RUN-worker
TYPES='"walk.complete","walk.retry","walk.later","walk.pause","walk.loop","walk.signal"'

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "walkthrough: needs $tool" >&2; exit 1; }
done

scratch=$(mktemp -d)
stream_pid=
cleanup() {
  if [[ -n $stream_pid ]]; then kill "$stream_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# curl reads the token from a file (mktemp -d makes the folder private), so that the token
# never shows in `ps`. `${auth[@]+"${auth[@]}"}` below expands an empty array to nothing
# under `set -u` in bash 3.2 (macOS) too.
auth=()
if [[ -n ${DAGNATS_BRIDGE_TOKEN:-} ]]; then
  printf 'Authorization: Bearer %s\n' "$DAGNATS_BRIDGE_TOKEN" >"$scratch/auth"
  auth=(-H "@$scratch/auth")
fi

die() {
  printf '\nwalkthrough: %s\n' "$*" >&2
  exit 1
}

section() { printf '\n=== %s\n' "$*"; }

note() { printf '# %s\n' "$*"; }

# call STATUS METHOD PATH [BODY]: send the request, print it and its answer, and stop unless
# the answer's status is STATUS. The answer's body is then in $answer, its headers in
# $answer_headers.
call() {
  local expected=$1 method=$2 path=$3 body=${4-}
  local out # its own files, for a call run in the background too
  out=$(mktemp "$scratch/answer.XXXXXX")
  local args=(-sS -X "$method" -o "$out" -D "$out.headers" -w '%{http_code}')
  args+=(${auth[@]+"${auth[@]}"})
  if [[ -n $body ]]; then args+=(-H 'Content-Type: application/json' --data "$body"); fi
  printf '> %s %s %s\n' "$method" "$path" "$body"
  status=$(curl "${args[@]}" "$URL$path") || die "cannot reach $URL"
  answer=$(<"$out")
  answer_headers=$(<"$out.headers")
  rm -f "$out" "$out.headers"
  printf '< %s %s\n' "$status" "$answer"
  [[ $status == "$expected" ]] || die "expected HTTP $expected to $method $path, got $status"
}

# expect FILTER JSON: the jq FILTER of the last answer must give JSON (compared compactly).
expect() {
  local actual wanted
  actual=$(jq -c "$1" <<<"$answer") || die "the answer is not JSON"
  wanted=$(jq -c . <<<"$2")
  [[ $actual == "$wanted" ]] || die "expected $1 to be $wanted, got $actual"
}

# field FILTER: a value of the last answer, raw.
field() { jq -r "$1" <<<"$answer"; }

# events RUN TYPE...: print the run's history and check its event types, in order. The engine
# simulation appends its reaction before the resolve that caused it answers, so no waiting.
events() {
  local run=$1
  shift
  call 200 GET "/v1/sim/runs/$run/events"
  expect '[.[].type]' "$(jq -cn '$ARGS.positional' --args "$@")"
}

# enqueue RUN TYPE [INPUT]: publish a task as the engine would.
enqueue() {
  call 201 POST /v1/sim/tasks "{\"task_type\":\"$2\",\"run_id\":\"$1\",\"input\":${3:-null}}"
}

# take TYPE [MAX]: poll as the connected worker; stops unless a task comes.
take() {
  call 200 POST /v1/tasks/poll \
    "{\"task_types\":[\"$1\"],\"max_tasks\":${2:-1},\"timeout_ms\":5000,\"worker_id\":\"$WORKER\"}"
  [[ $(field length) -gt 0 ]] || die "no task of type $1 came"
}

# resolve STATUS TASK_ID LEASE_ID BODY_FIELDS: resolve with the given lease.
resolve() {
  call "$1" POST "/v1/tasks/$2/resolve" "{\"lease_id\":\"$3\",$4}"
}

# worker_listed COUNT: wait up to 5 s for the worker to be listed COUNT times (0 or 1), then
# show the list and stop unless it is.
worker_listed() {
  local count=$1 listed="map(select(.worker_id == \"$WORKER\")) | length"
  for _ in $(seq 50); do
    call 200 GET /v1/workers >/dev/null
    if [[ $(field "$listed") == "$count" ]]; then break; fi
    sleep 0.1
  done
  call 200 GET /v1/workers
  expect "$listed" "$count"
}

# pass MS: let MS milliseconds pass: the manual clock moves at once, the system one is waited.
pass() {
  if [[ $clock == manual ]]; then
    call 200 POST /v1/sim/clock/advance "{\"ms\":$1}"
  else
    note "waiting $1 ms"
    sleep "$(jq -n "$1 / 1000")"
  fi
}

section "0. The bridge, and its clock"
call 200 GET /readyz
note "a clock advance answers 200 with --clock manual and 400 otherwise: it tells the walk"
note "whether to move the clock or to wait"
status=$(curl -sS -o /dev/null -w '%{http_code}' ${auth[@]+"${auth[@]}"} -X POST \
  -H 'Content-Type: application/json' --data '{"ms":1}' "$URL/v1/sim/clock/advance")
case $status in
  200) clock=manual ;;
  400) clock=system ;;
  *) die "POST /v1/sim/clock/advance answered $status: is this a bridge with the simulator?" ;;
esac
note "clock: $clock"

section "1. connect: the worker's registration is an open event stream"
note "the stream stays open in the background; it sends 'event: heartbeat' every interval"
curl -sSN ${auth[@]+"${auth[@]}"} -X POST -H 'Content-Type: application/json' \
  --data "{\"worker_id\":\"$WORKER\",\"task_types\":[$TYPES],\"max_tasks\":4}" \
  "$URL/v1/workers/connect" >"$scratch/stream" &
stream_pid=$!
worker_listed 1
note "the worker is registered with its max_tasks: its polls below hold at most 4 tasks"
expect "map(select(.worker_id == \"$WORKER\")) | .[0].max_tasks" 4

section "2. poll and complete; a repeated poll_id and a repeated complete are safe"
enqueue "$RUN-complete" walk.complete '{"to":"a@b.c"}'
poll="{\"task_types\":[\"walk.complete\"],\"worker_id\":\"$WORKER\",\"poll_id\":\"$RUN-poll\"}"
call 200 POST /v1/tasks/poll "$poll"
task=$(field '.[0].task_id')
lease=$(field '.[0].lease_id')
note "each task comes under a lease; every resolve of it sends the lease_id back"
expect '.[0].attempt' 1
call 200 POST /v1/tasks/poll "$poll"
note "the same poll_id within 60 s answers the same task and lease: a lost answer is retried"
expect '.[0].lease_id' "\"$lease\""
resolve 200 "$task" "$lease" '"action":"complete","output":{"sent":true}'
resolve 200 "$task" "$lease" '"action":"complete","output":{"sent":true}'
note "the repeated complete changed nothing, and says so:"
grep -i '^x-dagnats-replayed: true' <<<"$answer_headers" || die "no X-Dagnats-Replayed header"
resolve 409 "$task" "$lease" '"action":"fail","error":"too late"'
note "a different terminal action on a settled task is refused"
events "$RUN-complete" step.started step.completed workflow.completed
note "step.started carries the polling worker's id"
expect '.[0].worker_id' "\"$WORKER\""

section "3. fail, retriable: the engine runs the step again after its backoff"
enqueue "$RUN-retry" walk.retry
take walk.retry
resolve 200 "$(field '.[0].task_id')" "$(field '.[0].lease_id')" \
  '"action":"fail","error":"smtp timeout","failure_type":"retriable"'
events "$RUN-retry" step.started step.failed
call 200 GET /v1/sim/runs
note "the engine simulation holds the run until its retry_at"
expect "map(select(.run_id == \"$RUN-retry\")) | .[0].status" '"running"'
pass 1000
take walk.retry
note "attempt 2 of the same step"
expect '.[0].attempt' 2
resolve 200 "$(field '.[0].task_id')" "$(field '.[0].lease_id')" '"action":"complete"'
events "$RUN-retry" step.started step.failed step.started step.completed workflow.completed

section "4. fail with retry_after, then non_retriable; bad input is 400 with the field named"
enqueue "$RUN-retry-after" walk.later
take walk.later
task=$(field '.[0].task_id')
lease=$(field '.[0].lease_id')
resolve 400 "$task" "$lease" '"action":"fail","error":"x","failure_type":"sometimes"'
expect .field '"failure_type"'
resolve 200 "$task" "$lease" \
  '"action":"fail","error":"rate limited","failure_type":"retry_after","retry_after_ms":500'
note "step.failed carries the delay the worker asked for"
events "$RUN-retry-after" step.started step.failed
expect '.[1].payload' '{"error":"rate limited","failure_type":"retry_after","retry_after_ms":500}'
pass 500
take walk.later
expect '.[0].attempt' 2
resolve 200 "$(field '.[0].task_id')" "$(field '.[0].lease_id')" \
  '"action":"fail","error":"account closed","failure_type":"non_retriable"'
note "non_retriable ends the run at once (permanent is accepted as a synonym)"
events "$RUN-retry-after" step.started step.failed step.started step.failed workflow.failed

section "5. checkpoint, heartbeat, stream, then pause; the redelivery carries the checkpoint"
enqueue "$RUN-pause" walk.pause '{"pages":3}'
take walk.pause
task=$(field '.[0].task_id')
lease=$(field '.[0].lease_id')
resolve 200 "$task" "$lease" '"action":"checkpoint","data":{"page":1}'
call 200 GET "/v1/tasks/$task/checkpoint"
note "checkpoint saved the data and extended the lease, like heartbeat and stream:"
expect . '{"page":1}'
resolve 200 "$task" "$lease" '"action":"heartbeat"'
resolve 200 "$task" "$lease" '"action":"stream","data":{"progress":0.5}'
note "the chunk went to the step's stream (a NATS subject), not to its history"
resolve 200 "$task" "$lease" '"action":"pause","duration_ms":1000,"checkpoint":{"page":2}'
call 200 GET "/v1/sim/checkpoints/$task"
expect . '{"page":2}'
pass 1000
take walk.pause
note "the task is back after the pause, under a new lease, with its checkpoint"
expect '.[0].checkpoint' '{"page":2}'
new_lease=$(field '.[0].lease_id')
resolve 409 "$task" "$lease" '"action":"complete"'
note "the old lease is fenced off: only the current delivery can settle the task"
resolve 200 "$task" "$new_lease" '"action":"complete","output":{"pages":3}'
note "a pause is no failure: the history shows a second start, and no step.failed"
events "$RUN-pause" step.started step.started step.completed workflow.completed

section "6. continue: an agent loop, one iteration per delivery"
enqueue "$RUN-loop" walk.loop
take walk.loop
resolve 200 "$(field '.[0].task_id')" "$(field '.[0].lease_id')" \
  '"action":"continue","output":{"thought":"look it up"}'
events "$RUN-loop" step.started step.continue
take walk.loop
note "the engine published the step again with the next iteration"
expect '.[0].iteration' 1
resolve 200 "$(field '.[0].task_id')" "$(field '.[0].lease_id')" \
  '"action":"complete","output":{"answer":42}'
call 200 GET "/v1/sim/runs/$RUN-loop/events"
note "iteration 1 started as attempt 1 again: its step.started has the msg-id of the first"
note "(<run>.<step>.step.started.1), so the history's duplicate window may drop it"
expect '[.[].type | select(. != "step.started")]' '["step.continue","step.completed","workflow.completed"]'

section "7. send_signal and wait_signal, between two runs"
enqueue "$RUN-approval" walk.signal
enqueue "$RUN-notified" walk.signal
take walk.signal 2
approval_task=$(field ".[] | select(.run_id == \"$RUN-approval\") | .task_id")
approval_lease=$(field ".[] | select(.run_id == \"$RUN-approval\") | .lease_id")
notified_task=$(field ".[] | select(.run_id == \"$RUN-notified\") | .task_id")
notified_lease=$(field ".[] | select(.run_id == \"$RUN-notified\") | .lease_id")
call 204 POST /v1/sim/signals "{\"run_id\":\"$RUN-approval\",\"name\":\"approved\",\"data\":{\"by\":\"ann\"}}"
note "the simulator stored a signal as another step would; wait_signal answers it at once"
resolve 200 "$approval_task" "$approval_lease" \
  '"action":"wait_signal","name":"approved","timeout_ms":5000'
expect . '{"by":"ann"}'
resolve 200 "$approval_task" "$approval_lease" \
  "\"action\":\"send_signal\",\"run_id\":\"$RUN-notified\",\"name\":\"go\",\"data\":{\"from\":\"$RUN-approval\"}"
note "one run's step signalled another run; that run's step now finds it"
resolve 200 "$notified_task" "$notified_lease" '"action":"wait_signal","name":"go","timeout_ms":5000'
expect .from "\"$RUN-approval\""
note "a signal that does not come in time is 408 (the wait keeps the lease alive meanwhile)"
(resolve 408 "$notified_task" "$notified_lease" \
  '"action":"wait_signal","name":"never","timeout_ms":200') &
waiting=$!
while kill -0 "$waiting" 2>/dev/null; do
  if [[ $clock == manual ]]; then pass 100 >/dev/null; fi
  sleep 0.1
done
wait "$waiting" || die "wait_signal did not time out with 408"
resolve 200 "$approval_task" "$approval_lease" '"action":"complete"'
resolve 200 "$notified_task" "$notified_lease" '"action":"complete"'
events "$RUN-approval" step.started step.completed workflow.completed
events "$RUN-notified" step.started step.completed workflow.completed

section "8. disconnect: closing the stream deregisters the worker"
kill "$stream_pid"
wait "$stream_pid" 2>/dev/null || true
stream_pid=
note "what the stream received: an 'event: heartbeat' per interval of the bridge (25 s by"
note "default, on its clock: a manual clock that moved less sent none)"
cat "$scratch/stream"
worker_listed 0

section "9. The runs, as the engine simulation sees them"
call 200 GET /v1/sim/runs
expect "map(select(.run_id | startswith(\"$RUN-\"))) | map({(.run_id): .status}) | add" \
  "{\"$RUN-complete\":\"completed\",\"$RUN-retry\":\"completed\",
    \"$RUN-retry-after\":\"failed\",\"$RUN-pause\":\"completed\",\"$RUN-loop\":\"completed\",
    \"$RUN-approval\":\"completed\",\"$RUN-notified\":\"completed\"}"
printf '\nwalkthrough: every step answered as expected\n'
