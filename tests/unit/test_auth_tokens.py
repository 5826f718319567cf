"""Named bearer tokens: the tokens file, its reloads, and the auth that checks them."""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from adapters.tokens import Tokens, TokensError, parse_tokens
from app.main import create_app, without_userinfo
from app.settings import Settings
from app.tokens import TokenSource
from tests.factories import memory_container

SECRET = "s3cret-9f2b"


def tokens_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_tokens_file_names_one_token_a_line_around_comments_and_blank_lines() -> None:
    text = "# rotation of 2026-11\n\n ci : abc:def#1 \n  # old\nops-2.a:Z9_~+/=\n"

    named = parse_tokens(text)

    assert named == {"ci": "abc:def#1", "ops-2.a": "Z9_~+/="}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"a:{SECRET}\na:{SECRET}x", "line 2: token name 'a' given twice"),
        (f"a:{SECRET}\nb:{SECRET}", "line 2: token 'b' is the same as another name's"),
        ("a:\n", "line 1: empty token"),
        (f"a:{SECRET} x", "line 1: the token has a space"),
        (f"a:{SECRET}\x07", "line 1: the token has a space or a character"),
        (f"a:{SECRET}é", "line 1: the token has a space or a character"),
        (SECRET, "line 1: not name:token"),
        (f"b a:{SECRET}", "line 1: token name 'b a' is not"),
        (f":{SECRET}", "line 1: token name '' is not"),
        ("# nothing yet\n\n", "no token in it"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line_and_never_the_token(
    text: str, error: str
) -> None:
    with pytest.raises(TokensError) as refused:
        parse_tokens(text)

    assert error in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_header_of_a_token_is_attributed_to_its_name_and_anything_else_to_none() -> None:
    tokens = Tokens.of({"ci": "t-ci", "ops": "t-ops"})

    assert tokens.name_of(b"Bearer t-ci") == "ci"
    assert tokens.name_of(b"Bearer t-ops") == "ops"
    assert tokens.name_of(b"Bearer t-other") is None
    assert tokens.name_of(b"bearer t-ci") is None
    assert tokens.name_of(b"Bearer  t-ci") is None
    assert tokens.name_of(b"") is None
    assert tokens.names == ["ci", "ops"]


def test_every_token_is_compared_in_constant_time_even_after_a_match_by_digests_of_one_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(sent: Any, expected: Any) -> bool:
        compared.append((sent, expected))
        return constant_time(sent, expected)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    tokens = Tokens.of({"first": "t-1", "second": "a-much-longer-token-2", "third": "t-3"})

    name = tokens.name_of(b"Bearer t-1")
    too_long = tokens.name_of(b"Bearer " + b"x" * 500)

    assert (name, too_long) == ("first", None)
    expected = [
        sha256(f"Bearer {token}".encode()).digest()
        for token in ("t-1", "a-much-longer-token-2", "t-3")
    ]
    assert [stored for _, stored in compared] == expected * 2
    # Neither the header's length nor a token's reaches the comparison.
    assert {len(value) for pair in compared for value in pair} == {32}


def test_the_environment_token_is_named_default_beside_the_files(tmp_path: Path) -> None:
    path = tokens_file(tmp_path, "ci:t-ci\n")

    source = TokenSource.load(Settings(token="t-env", tokens_file=path))

    assert source.tokens.names == ["ci", "default"]
    assert source.tokens.name_of(b"Bearer t-env") == "default"


@pytest.mark.parametrize(
    ("text", "token", "error"),
    [
        ("default:t-file\n", "t-env", "DAGNATS_BRIDGE_TOKEN: token name 'default' given twice"),
        ("ci:t-same\n", "t-same", "DAGNATS_BRIDGE_TOKEN: token 'default' is the same"),
        ("ci:t-ci\n", "t env", "DAGNATS_BRIDGE_TOKEN: the token has a space"),
    ],
)
def test_the_environment_token_follows_the_files_rules(
    tmp_path: Path, text: str, token: str, error: str
) -> None:
    path = tokens_file(tmp_path, text)

    with pytest.raises(TokensError, match=error):
        TokenSource.load(Settings(token=token, tokens_file=path))


def test_a_missing_tokens_file_is_refused_at_startup(tmp_path: Path) -> None:
    missing = tmp_path / "absent"

    with pytest.raises(TokensError, match=f"tokens file {missing}: cannot be read"):
        TokenSource.load(Settings(tokens_file=missing))


def test_a_tokens_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = tokens_file(tmp_path, "ci:t-ci\n")
    TokenSource.load(Settings(tokens_file=private))
    assert "readable by group or others" not in caplog.text

    readable = tokens_file(tmp_path, "ci:t-ci\n", mode=0o644)
    source = TokenSource.load(Settings(tokens_file=readable))

    assert source.tokens.names == ["ci"]
    assert "readable by group or others (mode 0o644): chmod 600 it" in caplog.text


def test_a_changed_file_is_reloaded_and_an_unchanged_one_is_not_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tokens_file(tmp_path, "old:t-old\n")
    source = TokenSource.load(Settings(tokens_file=path))
    caplog.set_level(logging.INFO)

    source.check()
    path.write_text("old:t-old\nnew:t-new\n")
    source.check()

    assert source.tokens.names == ["new", "old"]
    assert caplog.text.count("tokens reloaded") == 1
    assert "t-new" not in caplog.text


def test_a_reload_of_a_bad_file_keeps_the_tokens_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tokens_file(tmp_path, "ci:t-ci\n")
    source = TokenSource.load(Settings(tokens_file=path))

    path.write_text(f"ci:t-ci\nci:{SECRET}\n")
    source.check()
    os.remove(path)
    source.check()

    assert source.tokens.name_of(b"Bearer t-ci") == "ci"
    assert "tokens not reloaded, the 1 in use stay" in caplog.text
    assert "line 2: token name 'ci' given twice" in caplog.text
    assert "cannot be read" in caplog.text
    assert SECRET not in caplog.text


async def test_v1_routes_take_any_named_token_and_log_its_name_never_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tokens_file(tmp_path, f"ci:{SECRET}\nops:t-ops\n")
    app = create_app(memory_container(tokens_file=path, token="t-env"))
    caplog.set_level(logging.DEBUG, logger="adapters.http.auth")

    async with AsyncTestClient(app=app) as client:
        answers = {
            token: (await client.get("/v1/workers", headers=bearer(token))).status_code
            for token in (SECRET, "t-ops", "t-env", "t-wrong")
        }
        sim = await client.post("/v1/sim/tasks", json={"task_type": "t"})
        health = await client.get("/healthz")

    assert answers == {SECRET: 200, "t-ops": 200, "t-env": 200, "t-wrong": 401}
    assert sim.status_code == 401
    assert health.status_code == 200
    assert "GET /v1/workers with token ci" in caplog.text
    assert "GET /v1/workers with token default" in caplog.text
    assert SECRET not in caplog.text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_nats_urls_are_logged_without_their_credentials() -> None:
    assert without_userinfo(f"nats://ops:{SECRET}@nats-1:4222") == "nats://***@nats-1:4222"
    assert without_userinfo(f"tls://{SECRET}@nats-2") == "tls://***@nats-2"
    assert without_userinfo("nats://nats-3:4222") == "nats://nats-3:4222"
