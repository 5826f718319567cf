"""A tokens file on a real bridge process: rotation without a restart, SIGHUP (to one bridge,
and to the parent of `--workers`), bad files."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedNats
from tests.integration.conftest import BRIDGE_COMMAND, BridgeProcess, eventually, start_bridge

pytestmark = pytest.mark.integration

OLD, NEW = "tok-old-41d7", "tok-new-8e02"
REQUESTS = 12
"""Each on a new connection, which the kernel hands to any worker."""


def write_tokens(path: Path, text: str) -> None:
    """Replace the file as rotation tools do: a new file renamed over the old one."""
    draft = path.with_suffix(".draft")
    draft.write_text(text)
    draft.chmod(0o600)
    draft.replace(path)


@pytest.fixture
def tokens_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    write_tokens(path, f"# the CI's token\nci:{OLD}\n")
    return path


@pytest.fixture
def bridge(tmp_path: Path, tokens_path: Path) -> Iterator[BridgeProcess]:
    process = start_bridge(tmp_path, "--backend", "memory", "--tokens-file", str(tokens_path))
    yield process
    if process.process.poll() is None:
        process.stop()


def rewrite_unseen(path: Path, text: str, pids: Sequence[int]) -> None:
    """Rewrite the file in place, keeping its inode, size and modification time, so the
    file watch cannot see the change: only a SIGHUP makes the bridge read it. The
    processes are stopped meanwhile, so that no check of theirs falls between the write
    and the restored time."""
    seen = path.stat()
    assert len(text.encode()) == seen.st_size
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert all(eventually(functools.partial(stopped, pid)) for pid in pids)
        path.write_text(text)
        os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def stopped(pid: int) -> bool:
    # /proc/<pid>/stat: "pid (name) state ...", and the name may hold spaces or parentheses.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] == "T"


def status_with(bridge: BridgeProcess, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{bridge.url}/v1/workers", headers=headers).status_code


def test_tokens_rotate_by_rewriting_the_file_with_no_restart(
    bridge: BridgeProcess, tokens_path: Path
) -> None:
    before = (status_with(bridge, OLD), status_with(bridge, NEW))

    write_tokens(tokens_path, f"ci:{OLD}\nci-next:{NEW}\n")
    both_valid = eventually(lambda: status_with(bridge, NEW) == 200)
    old_still_valid = status_with(bridge, OLD)
    write_tokens(tokens_path, f"ci-next:{NEW}\n")
    old_revoked = eventually(lambda: status_with(bridge, OLD) == 401)
    write_tokens(tokens_path, "ci-next:\n")
    assert eventually(lambda: "tokens not reloaded" in bridge.log.read_text())
    after_a_bad_file = status_with(bridge, NEW)
    status = bridge.stop()

    assert before == (200, 401)
    assert both_valid
    assert old_still_valid == 200
    assert old_revoked
    assert after_a_bad_file == 200
    assert status == 0
    log = bridge.log.read_text()
    assert "auth on (tokens ci)" in log
    assert "tokens reloaded: ci, ci-next" in log
    assert "tokens reloaded: ci-next" in log
    assert "line 1: empty token" in log
    assert OLD not in log
    assert NEW not in log


def test_sighup_rereads_the_tokens_file_at_once(bridge: BridgeProcess, tokens_path: Path) -> None:
    rewrite_unseen(tokens_path, f"# the CI's token\nci:{NEW}\n", [bridge.process.pid])
    unseen = (status_with(bridge, OLD), status_with(bridge, NEW))

    bridge.process.send_signal(signal.SIGHUP)

    assert unseen == (200, 401)
    assert eventually(lambda: status_with(bridge, NEW) == 200)
    assert status_with(bridge, OLD) == 401


def test_sighup_to_a_bridge_without_a_tokens_file_is_ignored(tmp_path: Path) -> None:
    bridge = start_bridge(tmp_path, "--backend", "memory")
    try:
        bridge.process.send_signal(signal.SIGHUP)

        assert eventually(lambda: "SIGHUP ignored" in bridge.log.read_text())
        answer = httpx.get(f"{bridge.url}/healthz")
        alive = bridge.process.poll() is None
    finally:
        bridge.stop()

    assert (answer.status_code, alive) == (200, True)


def test_sighup_to_the_parent_of_workers_reloads_every_worker_and_stops_none(
    tmp_path: Path, tokens_path: Path, nats_server: EmbeddedNats
) -> None:
    bridge = start_bridge(
        tmp_path,
        *("--nats-url", nats_server.url, "--provision", "--no-simulate-engine"),
        *("--workers", "2", "--tokens-file", str(tokens_path)),
    )
    try:
        assert eventually(lambda: started_workers(bridge) == 2)
        rewrite_unseen(tokens_path, f"# the CI's token\nci:{NEW}\n", worker_pids(bridge))
        unseen = {status_with(bridge, NEW) for _ in range(REQUESTS)}

        bridge.process.send_signal(signal.SIGHUP)

        assert eventually(lambda: bridge.log.read_text().count("tokens reloaded: ci") == 2)
        new_token = {status_with(bridge, NEW) for _ in range(REQUESTS)}
        old_token = {status_with(bridge, OLD) for _ in range(REQUESTS)}
        alive = bridge.process.poll() is None
    finally:
        status = bridge.stop()

    assert unseen == {401}
    assert (new_token, old_token) == ({200}, {401})
    assert alive
    assert status == 0
    assert "SIGHUP passed on to 2 worker(s)" in bridge.log.read_text()


def started_workers(bridge: BridgeProcess) -> int:
    return bridge.log.read_text().count("Application startup complete")


def worker_pids(bridge: BridgeProcess) -> list[int]:
    found = re.search(r"2 workers on \S+ \(pids (\d+), (\d+)\)", bridge.log.read_text())
    assert found is not None, bridge.log.read_text()
    return [int(pid) for pid in found.groups()]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"ci:{OLD}\nci:{NEW}\n", "tokens file {path}: line 2: token name 'ci' given twice"),
        (None, "tokens file {path}: cannot be read"),
    ],
)
def test_a_bad_tokens_file_stops_the_bridge_before_it_serves(
    tmp_path: Path, text: str | None, error: str
) -> None:
    path = tmp_path / "tokens"
    if text is not None:
        write_tokens(path, text)

    finished = subprocess.run(
        [BRIDGE_COMMAND, "serve", "--backend", "memory", "--tokens-file", str(path)],
        capture_output=True,
        timeout=20,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("DAGNATS_BRIDGE_")},
    )

    assert finished.returncode == 2
    stderr = finished.stderr.decode()
    assert error.format(path=path) in stderr
    assert OLD not in stderr
    assert NEW not in stderr
