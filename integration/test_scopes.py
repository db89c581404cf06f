"""Scope hierarchies and scope challenges against real Envoy and the MCP Python SDK server: a broader scope
passes rules that need a narrower one and shows in trimmed lists; a refusal that several scopes would cure
gets one 403 naming all of them (one rule needing several, or a batch whose elements need different ones);
claim headers stay as issued; hierarchies with a cycle and advertised `offline_access` are refused at load
with the field in Envoy's log."""

from __future__ import annotations

import json
import re
from typing import Iterator

import httpx
import pytest

from harness.envoy import Envoy, filter_config
from harness.keys import mint
from harness.mcp_upstream import McpServer, envoy_before_mcp_server
from harness.ports import free_port

HIERARCHY = {"admin": ["write:tasks"], "write:tasks": ["read:tasks"], "tasks": ["tasks:read", "tasks:write"]}
RULES = [
    {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
    {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
    {"method": "tools/call", "name": "get_project_tasks", "scopes": ["tasks:read"]},
    {"method": "tools/call", "name": "admin_reset", "scopes": ["read:tasks", "admin:reset", "audit"]},
]
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def call(name: str, id_: int, arguments: dict | None = None) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


class Stack:
    def __init__(self, envoy: Envoy, server: McpServer, key) -> None:
        self.envoy, self.server, self.key = envoy, server, key
        self.url = f"{envoy.url}/mcp"

    def post(self, body: object, scope: str, headers: dict | None = None) -> httpx.Response:
        token = mint(self.key, scope=scope)
        return httpx.post(self.url, content=json.dumps(body), timeout=20,
                          headers=HEADERS | (headers or {}) | {"authorization": f"Bearer {token}"})

    def session(self, scope: str) -> dict:
        r = self.post(INIT, scope)
        assert r.status_code == 200, r.text
        headers = {"mcp-protocol-version": "2025-06-18", "mcp-session-id": r.headers["mcp-session-id"]}
        done = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, scope, headers)
        assert done.status_code == 202, done.text
        return headers

    def tools_called(self) -> list[str]:
        return [m["params"]["name"] for m in self.server.messages() if m.get("method") == "tools/call"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with envoy_before_mcp_server(tmp_path_factory.mktemp("scopes"), "envoy-scopes", scope_hierarchy=HIERARCHY,
                                 mcp={"rules": RULES}) as (envoy, server, key):
        yield Stack(envoy, server, key)


@pytest.fixture(autouse=True)
def _clean(stack: Stack) -> None:
    stack.server.reset()


def test_a_broader_scope_passes_a_rule_needing_a_narrower_one(stack: Stack) -> None:
    headers = stack.session("admin")
    r = stack.post(call("getTasks", 1), "admin", headers)
    assert r.status_code == 200, r.text
    assert "error" not in r.json() and "www-authenticate" not in r.headers
    assert stack.tools_called() == ["getTasks"]
    forwarded = [m["headers"] for m in stack.server.received() if '"getTasks"' in m["body"]]
    assert forwarded[0]["x-user-scopes"] == "admin", "claim headers carry the scopes as issued, not expanded"
    # One way only: the narrower scope does not pass the broader rule.
    refused = stack.post(call("createTask", 2, {"title": "x"}), "read:tasks", stack.session("read:tasks"))
    assert refused.status_code == 403
    assert stack.tools_called() == ["getTasks"]


def test_lists_are_trimmed_through_the_hierarchy(stack: Stack) -> None:
    def listed(scope: str) -> set[str]:
        r = stack.post({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, scope, stack.session(scope))
        assert r.status_code == 200, r.text
        return {t["name"] for t in r.json()["result"]["tools"]}

    assert listed("admin") == {"getTasks", "createTask"}
    assert listed("write:tasks") == {"getTasks", "createTask"}
    assert listed("read:tasks") == {"getTasks"}
    assert listed("tasks") == {"get_project_tasks"}, "prefix style: tasks implies tasks:read"
    assert listed("profile") == set()


@pytest.mark.parametrize("scope", ["read:tasks", "admin"])
def test_a_rule_needing_several_scopes_gets_one_challenge_with_all(stack: Stack, scope: str) -> None:
    r = stack.post(call("admin_reset", 3), scope, stack.session(scope))
    assert r.status_code == 403, r.text
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="read:tasks admin:reset audit"'), challenge
    assert "admin" not in re.search(r'scope="([^"]*)"', challenge).group(1).split(" "), "never the broader scope"
    assert "resource_metadata=" in challenge
    error = r.json()["error"]
    assert error["code"] == -32003
    assert error["data"]["missing"] == ["admin:reset", "audit"], "read:tasks is held (or implied): not missing"
    assert error["data"]["required"] == ["read:tasks", "admin:reset", "audit"]
    assert stack.tools_called() == []


def test_a_batch_needing_different_scopes_gets_one_challenge_with_all(stack: Stack) -> None:
    batch = [call("getTasks", 1), call("createTask", 2, {"title": "x"}), call("get_project_tasks", 3, {"project": "a"}),
             {"jsonrpc": "2.0", "id": 4, "method": "ping"}]
    r = stack.post(batch, "profile")
    assert r.status_code == 403, r.text
    challenge = r.headers["www-authenticate"]
    scopes = re.search(r'scope="([^"]*)"', challenge).group(1).split(" ")
    assert scopes == ["read:tasks", "write:tasks", "tasks:read"], challenge
    errors = r.json()
    assert [e["id"] for e in errors] == [1, 2, 3, 4]
    assert [e["error"]["data"].get("missing") for e in errors] == [
        ["read:tasks"], ["write:tasks"], ["tasks:read"], None]
    assert errors[3]["error"]["data"]["error"] == "batch_denied"
    assert stack.server.received() == [], "the upstream got nothing of a refused batch"
    # A token with exactly what the challenge named is enough for each element: the challenge was complete.
    granted = " ".join(scopes)
    headers = stack.session(granted)
    for message in batch[:3]:
        r = stack.post(message, granted, headers)
        assert r.status_code == 200 and "result" in r.json(), r.text
    assert stack.tools_called() == ["getTasks", "createTask", "get_project_tasks"]


def _refused_at_load(tmp_path, mutate) -> str:
    def render(listener_port: int) -> str:
        cfg = filter_config(jwks_port=9, listener_port=listener_port)
        mutate(cfg)
        return json.dumps(cfg)

    envoy = Envoy(tmp_path, upstream_port=free_port(), jwks_port=free_port(), filter_json=render)
    rc, log = envoy.start_expect_failure()
    assert rc != 0, log[-3000:]
    return log


def test_a_hierarchy_with_a_cycle_is_refused_at_load(tmp_path) -> None:
    log = _refused_at_load(tmp_path, lambda c: c.update(scope_hierarchy={"admin": ["write"], "write": ["admin"]}))
    lines = [line for line in log.splitlines() if "scope_hierarchy.admin" in line]
    assert lines and "cycle: admin implies write implies admin" in lines[0], log[-3000:]


@pytest.mark.parametrize("field, mutate", [
    ("resource_metadata.scopes_supported[1]",
     lambda c: c["resource_metadata"].update(scopes_supported=["read:tasks", "offline_access"])),
    ("mcp.rules[0].scopes[0]",
     lambda c: c.update(mcp={"rules": [{"method": "tools/call", "scopes": ["offline_access"]}]})),
])
def test_advertising_offline_access_is_refused_at_load(tmp_path, field: str, mutate) -> None:
    log = _refused_at_load(tmp_path, mutate)
    lines = [line for line in log.splitlines() if field in line]
    assert lines and "offline_access" in lines[0] and "SHOULD NOT" in lines[0], log[-3000:]
