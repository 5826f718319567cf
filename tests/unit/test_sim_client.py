"""The `dagnats-bridge sim` client: its wire pieces, the follow loop and the CLI's options."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from app import sim_client, sim_commands
from app.cli import bridge_from, parser
from app.sim_client import BridgeError, Item, json_array, task_body
from app.sim_target import Bridge, NewTask, raw_json

BRIDGE = Bridge(url="http://bridge:8080")


def test_each_element_of_an_answer_keeps_the_text_the_bridge_sent() -> None:
    items = json_array(b' [ {"n": 1.50} ,\n2 , "x,]" ] ', "/p")

    assert [item.raw for item in items] == ['{"n": 1.50}', "2", '"x,]"']
    assert items[0].value == {"n": 1.5}
    assert json_array(b"[ ]", "/p") == []


@pytest.mark.parametrize("body", [b"", b"{}", b"[1", b"[1,]", b"[,1]", b"[1 2]", b"[1]x", b"\xff"])
def test_an_answer_that_is_not_a_json_array_is_one_error_line(body: bytes) -> None:
    with pytest.raises(BridgeError, match=r"^the answer to GET /p is not a JSON array$"):
        json_array(body, "/p")


def test_the_input_goes_into_the_enqueue_body_byte_for_byte() -> None:
    raw_input = b' {"to":\n "a@b.c", "n": 1.50} '
    task = NewTask(task_type="t", raw_input=raw_input, run_id='r"1', step_id="s")

    body = task_body(task)

    assert raw_input in body
    assert json.loads(body) == {
        "task_type": "t",
        "input": {"to": "a@b.c", "n": 1.5},
        "run_id": 'r"1',
        "step_id": "s",
    }
    assert json.loads(task_body(NewTask(task_type="t"))) == {"task_type": "t"}


def test_an_argument_is_raw_json_only_when_it_is_one_json_value() -> None:
    assert raw_json(' {"é": 1.50} ') == ' {"é": 1.50} '.encode()
    for text in ("", "{", "NaN", "-Infinity", "1 2", "\udcff"):
        with pytest.raises(ValueError):  # noqa: PT011 - json's and the codec's errors alike
            raw_json(text)


def test_a_line_of_json_has_no_newline_left() -> None:
    assert sim_client.one_line('{"a":\r\n1,\n"b": "x\\ny"}') == '{"a":  1, "b": "x\\ny"}'


def test_a_bridge_url_is_http_or_https_and_its_token_is_not_in_its_repr() -> None:
    bridge = Bridge(url="https://bridge.example/", token="hunter2")

    assert bridge.url == "https://bridge.example"
    assert "hunter2" not in repr(bridge)
    for url in ("ftp://bridge", "bridge:8080", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            Bridge(url=url)


def test_the_url_and_token_come_from_a_flag_before_or_after_the_verb_then_the_environment() -> None:
    environ = {"DAGNATS_BRIDGE_URL": "http://env:1", "DAGNATS_BRIDGE_TOKEN": "from-env"}
    cli = parser()

    default = bridge_from(cli.parse_args(["sim", "runs"]), {})
    from_env = bridge_from(cli.parse_args(["sim", "runs"]), environ)
    before = bridge_from(cli.parse_args(["sim", "--url", "http://a:1", "runs"]), environ)
    after = bridge_from(
        cli.parse_args(["sim", "--url", "http://a:1", "runs", "--url", "http://b:2/"]), environ
    )
    token = bridge_from(cli.parse_args(["sim", "events", "r1", "--token", "flag"]), environ)

    assert (default.url, default.token) == ("http://127.0.0.1:8080", None)
    assert (from_env.url, from_env.token) == ("http://env:1", "from-env")
    assert (before.url, after.url) == ("http://a:1", "http://b:2")
    assert token.token == "flag"


def test_a_bad_url_in_the_environment_or_a_token_no_header_carries_is_refused() -> None:
    args = parser().parse_args(["sim", "runs"])

    with pytest.raises(ValueError, match="DAGNATS_BRIDGE_URL"):
        bridge_from(args, {"DAGNATS_BRIDGE_URL": "bridge:8080"})
    with pytest.raises(ValueError, match="cannot carry") as refused:
        bridge_from(args, {"DAGNATS_BRIDGE_TOKEN": "to\nken"})
    assert "to\nken" not in str(refused.value)


def event(kind: str) -> Item:
    text = json.dumps({"type": kind})
    return Item(text, json.loads(text))


def test_follow_prints_only_the_new_events_until_the_run_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    histories = iter(
        [
            [event("step.started")],
            [event("step.started")],
            [event("step.started"), event("step.failed"), event("workflow.failed")],
        ]
    )
    monkeypatch.setattr(sim_client, "events", lambda *_: next(histories))
    naps: list[float] = []
    out = io.BytesIO()

    sim_commands.follow(BRIDGE, out, "r1", until_done=True, sleep=naps.append)

    printed = [json.loads(line)["type"] for line in out.getvalue().splitlines()]
    assert printed == ["step.started", "step.failed", "workflow.failed"]
    assert naps == [0.5, 0.5]


def test_follow_returns_when_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_client, "events", lambda *_: [event("workflow.completed")])

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    out = io.BytesIO()
    sim_commands.follow(BRIDGE, out, "r1", sleep=interrupt)

    assert out.getvalue() == b'{"type": "workflow.completed"}\n'


def test_a_verb_that_fails_prints_one_line_and_exits_1() -> None:
    def failing() -> Any:
        raise BridgeError("HTTP 401: unauthorized", 401)

    err = io.StringIO()

    assert sim_commands.run(failing, err) == 1
    assert err.getvalue() == "dagnats-bridge: HTTP 401: unauthorized\n"
    assert sim_commands.run(lambda: None, err) == 0
