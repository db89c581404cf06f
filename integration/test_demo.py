"""`make demo` works: integration/demo.py starts the whole stack, runs the MCP SDK session through Envoy,
prints what a user should see, and stops every process it started (after --once, and on Ctrl-C).

In the compose `tests` service (MCP_AUTHZ_MCP_URL set) the same session runs against the containers
instead (`demo.py --once --external`); the local tests are skipped there, and vice versa.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.envoy import die_with_parent

DEMO = Path(__file__).parent / "demo.py"
EXTERNAL = "MCP_AUTHZ_MCP_URL" in os.environ
RUN_TIMEOUT = 240.0  # the stack starts in seconds; generous for a loaded 2-core CI machine

EXPECTED = [
    "[ok] list-tools: tools/list -> crm_whoami, getTasks, get_reddit_user, whoami",
    "hidden by the filter (the reader lacks their scopes): admin_reset, createTask",
    "[ok] allowed-call: getTasks -> Found ",
    "[ok] denied-call: createTask -> HTTP 403",
    'WWW-Authenticate: Bearer error="insufficient_scope", scope="write:tasks", resource_metadata="http://',
    "JSON-RPC error -32003: Insufficient scope: requires write:tasks",
    "[ok] connector-exchange: get_reddit_user -> the provider knows this user as alice_on_reddit",
    "[ok] id-jag-exchange: crm_whoami -> the MCP server got a token from iss=http",
    "[ok] rfc8693-exchange: createTask -> Created task: Try mcp-authz",
    "[ok] opaque-token: whoami -> the MCP server saw x-user-sub=alice x-user-scopes=read:tasks",
    "RESULT: 7/7 steps as expected",
]


def assert_session_output(out: str) -> None:
    for line in EXPECTED:
        assert line in out, f"missing from the demo output: {line!r}\n--- output ---\n{out}"
    assert "[FAIL]" not in out, out


def urls_in(out: str) -> list[tuple[str, int]]:
    return [(host, int(port)) for host, port in re.findall(r"http://(127\.0\.0\.1):(\d+)", out)]


def assert_all_closed(addresses: list[tuple[str, int]]) -> None:
    """Nothing listens any more on the ports the demo printed (its servers and child processes are gone)."""
    assert addresses, "the demo printed no addresses"
    still_open = []
    for host, port in sorted(set(addresses)):
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                still_open.append(port)
    assert not still_open, f"still listening after the demo ended: {still_open}"


def start_demo(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-u", str(DEMO), "--workdir", str(tmp_path / "demo"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=die_with_parent,
    )


@pytest.mark.skipif(EXTERNAL, reason="runs the local stack; the compose tests service uses the external test")
def test_demo_once_shows_the_session_and_stops_everything(tmp_path):
    proc = start_demo(tmp_path, "--once")
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert_session_output(out)
    assert "MCP endpoint (Envoy + mcp-authz)" in out
    # Details only the local stack can show (it asks its servers what they received).
    assert "[ok] allowed-call: getTasks -> Found 2 tasks for alice:" in out
    assert "createTask -> HTTP 403 (the MCP server never saw it)" in out
    assert "the tasks API verified the same token again" in out
    assert re.search(r"the tasks API received the exchanged token: iss=http://127\.0\.0\.1:\d+ aud=tasks-api "
                     r"scopes=read:tasks write:tasks act=\{\"sub\": \"mcp-gateway\"\}", out), out
    assert_all_closed(urls_in(out))


@pytest.mark.skipif(EXTERNAL, reason="runs the local stack; the compose tests service uses the external test")
def test_demo_stays_up_with_a_ready_token_until_ctrl_c(tmp_path):
    proc = start_demo(tmp_path)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any("Press Ctrl-C" in line for line in out):
            remaining = deadline - time.monotonic()
            assert remaining > 0, "".join(out)
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"demo exited early ({proc.wait()}):\n{''.join(out)}"
            out.append(line)
        text = "".join(out)
        assert_session_output(text)
        assert re.search(r"export TOKEN=\S+\.\S+\.\S+", text), text
        # The stack is still serving while the demo waits.
        addresses = urls_in(text)
        with socket.create_connection(addresses[0], timeout=5):
            pass
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=10)) is not None:
        out.append(line)
    assert "stopped" in "".join(out).splitlines()[-1]
    assert_all_closed(urls_in("".join(out)))


@pytest.mark.skipif(not EXTERNAL, reason="runs in the compose tests service against the containers (MCP_AUTHZ_MCP_URL)")
def test_demo_against_the_compose_stack():
    result = subprocess.run([sys.executable, "-u", str(DEMO), "--once", "--external"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    for line in EXPECTED:
        assert line in out, f"missing: {line!r}\n{out}"
    assert result.returncode == 0, out
    # On the compose network the demo also asks the tasks API and the MCP server what reached them.
    if os.environ.get("MCP_AUTHZ_TASKS_API_URL"):
        # (a count that grows: the stack keeps the tasks earlier sessions created)
        assert re.search(r"\[ok\] allowed-call: getTasks -> Found \d+ tasks for alice:", out), out
        assert "the tasks API verified the same token again: iss=http://idp:9000 sub=alice" in out, out
        assert re.search(r"the tasks API received the exchanged token: iss=http://sts:9100 aud=tasks-api "
                         r"scopes=read:tasks write:tasks act=\{\"sub\": \"mcp-gateway\"\}", out), out
    if os.environ.get("MCP_AUTHZ_MCP_SERVER_URL"):
        assert "createTask -> HTTP 403 (the MCP server never saw it)" in out, out
