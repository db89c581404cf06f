"""integration/docker-compose.yml for real (`make compose-test`, part of `make test`).

The stack runs in containers built by `make images` (the same compose file users run with the official
images), under a project name of its own, its ports published on 127.0.0.1 where Docker chose. The tests
run in order and share it:

1. the demo's MCP conversation from the host, through the published ports;
2. the same conversation from the `tests` container, on the compose network;
3. container faults, each showing the failure and then the recovery: the identity provider stopped, the
   token exchange server cut off the network, the MCP server killed, Envoy restarted;
4. `down -v`: no container, network or volume of the project is left.

Without a Docker engine these tests skip with one line; with CI=true that is a failure instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from harness import docker
from harness.compose import ComposeStack, poll
from harness.envoy import die_with_parent
from harness.jsonrpc import messages

INTEGRATION = Path(__file__).resolve().parents[1]
DEMO = INTEGRATION / "demo.py"
PROTOCOL = "2025-06-18"
CLIENT_TIMEOUT = 20.0  # every request of these tests; a hang shows as httpx.ReadTimeout, not as a pass
READER = "read:tasks"
WRITER = "read:tasks write:tasks"


# One line when there is nothing to run them on; never in CI.
PROBLEM = docker.engine_problem()
if PROBLEM and docker.in_ci():
    pytest.fail(f"CI=true and {PROBLEM}: the compose tests must run in CI", pytrace=False)
if PROBLEM:
    pytest.skip(f"compose tests skipped: {PROBLEM}", allow_module_level=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeStack]:
    if not docker.IMAGES_ENV.exists():
        pytest.fail(f"{docker.IMAGES_ENV} missing: run `make images` (make compose-test does)")
    s = ComposeStack(docker.read_env_file())
    try:
        s.up()
        yield s
    except BaseException:
        print(s.logs(), file=sys.stderr)
        raise
    finally:
        if s.leftovers():
            s.down()


# -- talking to the stack ------------------------------------------------------------------------------


def token(stack: ComposeStack, scope: str) -> str:
    r = httpx.post(f"{stack.url('idp', 9000)}/token", json={"sub": "alice", "scope": scope, "alg": "RS256"},
                   timeout=CLIENT_TIMEOUT)
    r.raise_for_status()
    return r.json()["access_token"]


def kid_of(jwt: str) -> str:
    import base64

    header = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


class Mcp:
    """Raw Streamable HTTP against Envoy's published port: every answer's status is visible."""

    def __init__(self, stack: ComposeStack) -> None:
        self.url = f"{stack.url('envoy', 10000)}/mcp"

    def post(self, jwt: str, message: dict, headers: dict | None = None) -> httpx.Response:
        return httpx.post(self.url, json=message, timeout=CLIENT_TIMEOUT, headers={
            "authorization": f"Bearer {jwt}", "accept": "application/json, text/event-stream", **(headers or {})})

    def initialize(self, jwt: str) -> httpx.Response:
        return self.post(jwt, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "compose-test", "version": "1"}}})

    def call_tool(self, jwt: str, name: str, arguments: dict) -> httpx.Response:
        """A session (initialize, initialized), then one tools/call; the answer to the tools/call."""
        r = self.initialize(jwt)
        assert r.status_code == 200, (r.status_code, r.text)
        headers = {"mcp-protocol-version": PROTOCOL, "mcp-session-id": r.headers["mcp-session-id"]}
        self.post(jwt, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        return self.post(jwt, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": name, "arguments": arguments}}, headers)


def tool_text(r: httpx.Response) -> str:
    [answer] = [m for m in messages(r) if m.get("id") == 1]
    return "\n".join(c.get("text", "") for c in answer["result"]["content"])


def run_demo(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-u", str(DEMO), "--once", "--external"], capture_output=True, text=True,
                            timeout=240, stdin=subprocess.DEVNULL, env={**os.environ, **env},
                            preexec_fn=die_with_parent)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


# -- 1, 2: the conversation ----------------------------------------------------------------------------


DEMO_LINES = [
    "[ok] list-tools: tools/list -> crm_whoami, getTasks, get_reddit_user, whoami",
    "hidden by the filter (the reader lacks their scopes): admin_reset, createTask",
    "[ok] denied-call: createTask -> HTTP 403",
    'WWW-Authenticate: Bearer error="insufficient_scope", scope="write:tasks"',
    "JSON-RPC error -32003: Insufficient scope: requires write:tasks",
    "[ok] connector-exchange: get_reddit_user -> the provider knows this user as alice_on_reddit",
    "[ok] id-jag-exchange: crm_whoami -> the MCP server got a token from iss=http",
    "[ok] rfc8693-exchange: createTask -> Created task: Try mcp-authz",
    "[ok] opaque-token: whoami -> the MCP server saw x-user-sub=alice x-user-scopes=read:tasks",
    "RESULT: 7/7 steps as expected",
]


def test_conversation_from_the_host_through_published_ports(stack: ComposeStack) -> None:
    out = run_demo({
        "MCP_AUTHZ_MCP_URL": f"{stack.url('envoy', 10000)}/mcp",
        "MCP_AUTHZ_IDP_URL": stack.url("idp", 9000),
        "MCP_AUTHZ_CONNECTOR_URL": stack.url("connector", 9200),
        "MCP_AUTHZ_ENVOY_ADMIN_URL": stack.url("envoy", 9901),
        "MCP_AUTHZ_TASKS_API_URL": stack.url("backend-api", 4000),
    })
    for line in DEMO_LINES:
        assert line in out, f"missing {line!r}:\n{out}"
    assert re.search(r"\[ok\] allowed-call: getTasks -> Found \d+ tasks for alice:", out), out
    # The tasks API verified the reader's own token for getTasks, and the exchanged one for createTask.
    assert "the tasks API verified the same token again: iss=http://idp:9000 sub=alice scopes=read:tasks" in out, out
    assert ('the tasks API received the exchanged token: iss=http://sts:9100 aud=tasks-api scopes=read:tasks '
            'write:tasks act={"sub": "mcp-gateway"}') in out, out


def test_conversation_from_the_tests_container_on_the_compose_network(stack: ComposeStack) -> None:
    result = stack.compose("run", "--rm", "-T", "tests", check=False, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"\b1 passed\b", out), out
    assert not stack.docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={stack.project}",
                            "--filter", "label=com.docker.compose.service=tests").stdout.strip(), "run --rm left it"


# -- 3: container faults -------------------------------------------------------------------------------


def test_idp_stopped_known_keys_still_verify_a_new_kid_is_refused_then_picked_up(stack: ComposeStack) -> None:
    mcp = Mcp(stack)
    idp = stack.container("idp")
    old = token(stack, READER)
    assert mcp.initialize(old).status_code == 200
    fetched = stack.envoy_counter("wasmcustom.mcp_authz.jwks_fetch_success")
    # The IdP rotates (its keys file keeps both keys); a token signed with the new key has not been seen
    # by Envoy yet, and the IdP goes away before Envoy could fetch it.
    r = httpx.post(f"{stack.url('idp', 9000)}/rotate", json={"keep_old": True}, timeout=CLIENT_TIMEOUT)
    assert r.status_code == 200, r.text
    new = token(stack, READER)
    assert kid_of(new) != kid_of(old)
    stack.docker("stop", "--time", "5", idp)
    try:
        assert mcp.initialize(old).status_code == 200, "keys Envoy already holds must keep working"
        started = time.monotonic()
        refused = mcp.initialize(new)  # an unknown kid: one refetch, which fails; an answer, not a hang
        print(f"IdP stopped: a token with a new kid got HTTP {refused.status_code} after "
              f"{time.monotonic() - started:.2f} s")
        assert refused.status_code == 401, refused.text
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert refused.json()["message"] == "signing key not found"
        assert stack.envoy_counter("wasmcustom.mcp_authz.jwks_fetch_failed") >= 1
    finally:
        stack.docker("start", idp)
    stack.wait_healthy("idp")
    # The rotation is picked up: the unknown kid triggers a refetch (at most one per 10 s) that now works.
    poll("the new kid accepted after the IdP is back", lambda: mcp.initialize(new).status_code, lambda s: s == 200)
    assert stack.envoy_counter("wasmcustom.mcp_authz.jwks_fetch_success") > fetched
    assert mcp.initialize(old).status_code == 200


def test_token_exchange_cut_off_answers_504_or_502_then_works_when_reconnected(stack: ComposeStack) -> None:
    mcp = Mcp(stack)
    sts, network = stack.container("sts"), stack.network
    stack.docker("network", "disconnect", network, sts)
    try:
        started = time.monotonic()
        r = mcp.call_tool(token(stack, WRITER), "createTask", {"title": "while the STS is away"})
        took = time.monotonic() - started
        assert r.status_code in (502, 504), (r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == -32603 and error["data"]["error"] == "api_error", error
        print(f"exchange with the STS cut off: HTTP {r.status_code} after {took:.1f} s")
    finally:
        # `--alias sts`: the name Envoy's `sts` cluster resolves (compose gave it; a bare reconnect does not).
        stack.docker("network", "connect", "--alias", "sts", network, sts)
    # A fresh writer token each time: exchanged tokens are cached per client token, failures never are.
    created = poll("createTask after the STS is reconnected",
                   lambda: mcp.call_tool(token(stack, WRITER), "createTask", {"title": "after reconnect"}),
                   lambda r: r.status_code == 200, timeout=60, interval=1.0)
    assert tool_text(created) == "Created task: after reconnect"
    last = httpx.get(f"{stack.url('backend-api', 4000)}/_calls", timeout=CLIENT_TIMEOUT).json()[-1]
    assert (last["iss"], last["aud"], last["act"]) == ("http://sts:9100", "tasks-api", {"sub": "mcp-gateway"})


def test_mcp_server_killed_envoy_answers_503_then_restarted_works(stack: ComposeStack) -> None:
    mcp = Mcp(stack)
    reader = token(stack, READER)
    assert mcp.initialize(reader).status_code == 200
    server = stack.container("mcp-server")
    stack.docker("kill", server)
    try:
        started = time.monotonic()
        r = mcp.initialize(reader)
        assert r.status_code == 503, (r.status_code, r.text)
        print(f"MCP server killed: HTTP 503 ({r.text[:60]!r}) after {time.monotonic() - started:.2f} s")
    finally:
        stack.docker("start", server)
    stack.wait_healthy("mcp-server")
    poll("initialize after the MCP server restarted", lambda: mcp.initialize(reader).status_code,
         lambda s: s == 200, timeout=60)
    r = mcp.call_tool(reader, "getTasks", {})
    assert r.status_code == 200 and tool_text(r).startswith("Found "), r.text


def test_envoy_restarted_refetches_keys_and_holds_requests_until_they_arrive(stack: ComposeStack) -> None:
    reader = token(stack, READER)
    idp = stack.container("idp")
    # The IdP frozen: the restarted Envoy's first JWKS fetch gets no answer yet (connections are accepted,
    # nothing replies), so a request that arrives meanwhile is held, not refused.
    stack.docker("pause", idp)
    try:
        stack.docker("restart", "--time", "5", stack.container("envoy"))
        stack.wait_envoy_ready()
        mcp = Mcp(stack)  # the published port changed with the restart
        assert stack.envoy_counter("wasmcustom.mcp_authz.jwks_fetch_success") == 0
        answer: dict[str, object] = {}

        def request() -> None:
            try:
                answer["response"] = mcp.initialize(reader)
            except httpx.HTTPError as e:
                answer["error"] = e

        held = threading.Thread(target=request, daemon=True)
        sent = time.monotonic()
        held.start()
        poll("the request held for keys", lambda: stack.envoy_counter("wasmcustom.mcp_authz.held_for_keys"),
             lambda n: n >= 1, timeout=10, interval=0.05)
        assert held.is_alive() and not answer, f"answered before the keys came: {answer}"
    finally:
        stack.docker("unpause", idp)
    held.join(timeout=CLIENT_TIMEOUT + 5)
    assert not held.is_alive()
    assert "error" not in answer, answer
    response = answer["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    print(f"Envoy restarted with the IdP frozen: the request was held, then answered 200 "
          f"{time.monotonic() - sent:.2f} s after it was sent")
    assert stack.envoy_counter("wasmcustom.mcp_authz.jwks_fetch_success") >= 1
    assert mcp.initialize(reader).status_code == 200


# -- 4: nothing left behind ----------------------------------------------------------------------------


def test_down_leaves_no_container_network_or_volume(stack: ComposeStack) -> None:
    before = stack.leftovers()
    # envoy, idp, sts, crm-as, connector, backend-api, mcp-server (the `tests` service has run and gone).
    assert len(before.get("containers", [])) == 7 and before.get("networks") and before.get("volumes"), before
    stack.down()
    assert stack.leftovers() == {}

