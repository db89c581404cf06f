"""MCP-aware authorization through real Envoy, with the official MCP Python SDK on both sides.

The sample server (integration/stack/mcp_server.py) records every HTTP request it receives, so each test
can assert what reached the upstream, not only what the client saw. Every test runs against the server in
SSE mode and in JSON-response mode.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Iterator

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from harness.envoy import Envoy, filter_config
from harness.jsonrpc import messages
from harness.keys import SigningKey, make_key, mint
from harness.mcp_upstream import McpServer, run_bounded, sdk_session
from harness.servers import JwksServer


RULES = [
    {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
    {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
    {"method": "tools/call", "name": "whoami"},
    {"method": "tools/call", "name": "admin_*", "scopes": ["admin"]},
    # Tokens without `era: "modern"` are refused `server/discover`, so the SDK falls back to the
    # `initialize` handshake of the earlier revisions: both eras are exercised through the filter.
    {"method": "server/discover", "claims": [{"claim": "era", "equals": "modern"}]},
]
ALLOWED_ORIGIN = "https://app.example.com"


class McpStack:
    def __init__(self, envoy: Envoy, server: McpServer, key: SigningKey) -> None:
        self.envoy, self.server, self.key = envoy, server, key
        self.url = f"{envoy.url}/mcp"

    def token(self, scope: str, modern: bool = True) -> str:
        extra = {"era": "modern"} if modern else {}
        return mint(self.key, scope=scope, sub="alice", **extra)

    def post(self, body: str | bytes, token: str | None = None, headers: dict | None = None) -> httpx.Response:
        hdrs = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        return httpx.post(self.url, content=body, headers=hdrs, timeout=20)

    def upstream_methods(self) -> list[tuple[str, str | None]]:
        """(method, params.name) of every JSON-RPC message the MCP server received."""
        out = []
        for r in self.server.received():
            if r["method"] != "POST":
                continue
            try:
                doc = json.loads(r["body"])
            except ValueError:
                out.append(("<unparseable>", None))
                continue
            for m in doc if isinstance(doc, list) else [doc]:
                out.append((m.get("method"), (m.get("params") or {}).get("name")))
        return out


@pytest.fixture(scope="module", params=["sse", "json"])
def mcp(request, tmp_path_factory) -> Iterator[McpStack]:
    key = make_key("ES256", kid="mcp-es256")
    with contextlib.ExitStack() as stack:
        jwks = stack.enter_context(JwksServer([key]))
        server = McpServer(json_response=request.param == "json")
        stack.callback(server.stop)

        def configure(listener_port: int) -> dict:
            cfg = filter_config(jwks.port, listener_port)
            cfg["mcp"] = {"rules": RULES, "allowed_origins": [ALLOWED_ORIGIN], "max_body_bytes": 65536}
            return cfg

        envoy = Envoy(tmp_path_factory.mktemp(f"mcp-{request.param}"), upstream_port=server.port,
                      jwks_port=jwks.port, filter_cfg=configure, name=f"envoy-mcp-{request.param}")
        stack.callback(envoy.stop)
        envoy.start()
        yield McpStack(envoy, server, key)


@pytest.fixture(autouse=True)
def _clean(mcp: McpStack) -> None:
    mcp.server.reset()


# -- the official SDK client ---------------------------------------------------------------------------


def test_reader_sees_only_its_tools_calls_one_and_is_denied_the_other(mcp: McpStack) -> None:
    async def work(client: Client):
        tools = [t.name for t in (await client.list_tools()).tools]
        allowed = await client.call_tool("getTasks", {})
        with pytest.raises(MCPError) as denied:
            await client.call_tool("createTask", {"title": "sneaky"})
        return tools, allowed, denied.value

    tools, allowed, denied = run_bounded(sdk_session(mcp.url, mcp.token("read:tasks"), work))
    assert sorted(tools) == ["getTasks", "whoami"]
    assert not allowed.is_error and "Found" in allowed.content[0].text
    assert "Insufficient scope" in str(denied)
    seen = mcp.upstream_methods()
    assert ("tools/call", "getTasks") in seen
    assert ("tools/call", "createTask") not in seen, "the denied call never reached the server"


def test_sdk_client_without_token_gets_nothing(mcp: McpStack) -> None:
    async def work(client: Client):
        return await client.list_tools()

    async def no_token():
        async with httpx2.AsyncClient(timeout=20) as http:
            async with Client(streamable_http_client(mcp.url, http_client=http)) as client:
                return await work(client)

    with pytest.raises(BaseException):
        run_bounded(no_token())
    assert mcp.server.received() == [], "nothing reached the MCP server"


def test_writer_may_create_and_the_server_sees_identity_headers(mcp: McpStack) -> None:
    async def work(client: Client):
        created = await client.call_tool("createTask", {"title": "allowed"})
        who = await client.call_tool("whoami", {})
        return created, json.loads(who.content[0].text)

    token = mcp.token("read:tasks write:tasks")
    created, who = run_bounded(sdk_session(mcp.url, token, work))
    assert created.content[0].text == "Created task: allowed"
    assert who["authorization"] == f"Bearer {token}", "passthrough: the verified token goes upstream unchanged"
    assert who["x-user-sub"] == "alice"
    assert who["x-user-scopes"] == "read:tasks write:tasks"


def test_legacy_handshake_through_the_sdk_fallback(mcp: McpStack) -> None:
    """The SDK probes `server/discover` (2026-07-28) and falls back to `initialize` on 403: the session
    flow of 2025-03-26 … 2025-11-25 (initialize, Mcp-Session-Id, DELETE on close) works through the filter."""
    async def work(client: Client):
        tools = [t.name for t in (await client.list_tools()).tools]
        with pytest.raises(MCPError):
            await client.call_tool("createTask", {"title": "sneaky"})
        return tools, await client.call_tool("getTasks", {})

    tools, allowed = run_bounded(sdk_session(mcp.url, mcp.token("read:tasks", modern=False), work))
    assert sorted(tools) == ["getTasks", "whoami"]
    assert not allowed.is_error
    seen = mcp.upstream_methods()
    assert ("initialize", None) in seen and ("server/discover", None) not in seen
    assert ("tools/call", "createTask") not in seen
    assert any(r["headers"].get("mcp-session-id") for r in mcp.server.received()), "session header passed"


# -- raw HTTP: list trimming ---------------------------------------------------------------------------


def _legacy_headers(mcp: McpStack, token: str, version: str = "2025-06-18") -> dict:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = mcp.post(json.dumps(init), token)
    assert r.status_code == 200, r.text
    session = r.headers.get("mcp-session-id")
    headers = {"mcp-protocol-version": version} | ({"mcp-session-id": session} if session else {})
    mcp.post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), token, headers)
    return headers


def test_tools_list_is_trimmed_per_caller_and_marked_private(mcp: McpStack) -> None:
    for scope, expected in [("read:tasks", {"getTasks", "whoami"}),
                            ("read:tasks write:tasks admin", {"getTasks", "createTask", "whoami", "admin_reset"})]:
        token = mcp.token(scope)
        headers = _legacy_headers(mcp, token)
        r = mcp.post(json.dumps({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"}), token, headers)
        assert r.status_code == 200
        assert "content-length" not in r.headers or int(r.headers["content-length"]) == len(r.content)
        [message] = [m for m in messages(r) if m.get("id") == "list-1"]
        names = {t["name"] for t in message["result"]["tools"]}
        assert names == expected, scope
        assert message["result"]["cacheScope"] == "private"


def _resume(url: str, headers: dict, last_event_id: str, want_id: str) -> dict:
    """GET the stream from `last_event_id` on; the first replayed message with id `want_id`."""
    hdrs = {"accept": "text/event-stream", "last-event-id": last_event_id} | headers
    with httpx.stream("GET", url, headers=hdrs, timeout=20) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in r.iter_lines():  # the stream stays open after the replay: stop at the answer
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                message = json.loads("\n".join(data))
                data = []
                if message.get("id") == want_id:
                    return message
    raise AssertionError(f"stream ended without a message with id {want_id}")


def test_resumed_stream_replays_the_list_trimmed(mcp: McpStack) -> None:
    """A client drops a POST stream and resumes it with GET + Last-Event-ID (MCP 2025-11-25, how servers
    that close POST streams early are polled): the server replays the `tools/list` answer on the GET.
    The filter never saw that GET ask for a list, so it must recognise the list by its shape."""
    if mcp.server.json_response:
        pytest.skip("application/json answers carry no event ids to resume from")
    token = mcp.token("read:tasks")
    headers = _legacy_headers(mcp, token, version="2025-11-25")
    r = mcp.post(json.dumps({"jsonrpc": "2.0", "id": "list-r", "method": "tools/list"}), token, headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    event_ids = [line[3:].strip() for line in r.text.replace("\r\n", "\n").split("\n") if line.startswith("id:")]
    assert event_ids, f"the resumable server gave no event ids: {r.text!r}"

    replayed = _resume(mcp.url, headers | {"authorization": f"Bearer {token}"}, event_ids[0], "list-r")
    assert {t["name"] for t in replayed["result"]["tools"]} == {"getTasks", "whoami"}
    assert replayed["result"]["cacheScope"] == "private"
    # The server did replay the whole list: asked directly, the same resumption shows every tool.
    direct = _resume(f"http://127.0.0.1:{mcp.server.port}/mcp", headers, event_ids[0], "list-r")
    assert {"createTask", "admin_reset"} <= {t["name"] for t in direct["result"]["tools"]}


def test_get_stream_without_token_is_refused(mcp: McpStack) -> None:
    r = httpx.get(mcp.url, headers={"accept": "text/event-stream", "last-event-id": "1"}, timeout=20)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert not [x for x in mcp.server.received() if x["method"] == "GET"]


# -- raw HTTP: denials ---------------------------------------------------------------------------------


def _call(name: str, id_: int | str = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def test_insufficient_scope_answer(mcp: McpStack) -> None:
    r = mcp.post(json.dumps(_call("createTask", 42)), mcp.token("read:tasks"))
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="write:tasks", resource_metadata="http://127.0.0.1:')
    body = r.json()
    assert body["id"] == 42 and body["error"]["code"] == -32003
    assert body["error"]["data"]["missing"] == ["write:tasks"]
    assert body["error"]["data"]["required"] == ["write:tasks"]
    assert mcp.upstream_methods() == []


def test_unlisted_tool_is_denied_without_step_up(mcp: McpStack) -> None:
    r = mcp.post(json.dumps(_call("dropDatabase")), mcp.token("read:tasks write:tasks admin"))
    assert r.status_code == 403
    assert "www-authenticate" not in r.headers
    assert r.json()["error"]["data"]["error"] == "access_denied"
    assert mcp.upstream_methods() == []


def test_batch_with_one_denied_element_is_refused_whole(mcp: McpStack) -> None:
    batch = [_call("getTasks", 1), _call("createTask", 2), {"jsonrpc": "2.0", "method": "notifications/progress",
                                                           "params": {"progressToken": 1, "progress": 1}}]
    r = mcp.post(json.dumps(batch), mcp.token("read:tasks"))
    assert r.status_code == 403
    errors = {e["id"]: e["error"] for e in r.json()}
    assert errors[2]["data"]["error"] == "insufficient_scope"
    assert errors[1]["data"]["error"] == "batch_denied" and errors[1]["data"]["denied"] == [1]
    assert mcp.upstream_methods() == []


@pytest.mark.parametrize("body, status, code", [
    ('{"jsonrpc":"2.0","id":1,', 400, -32700),
    ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","name":"createTask"}}', 400, -32700),
    ('{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"createTask"}}', 400, -32700),
    ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","_meta":{"a":1,"a":2}}}', 400, -32700),
    ('\ufeff{"jsonrpc":"2.0","id":1,"method":"ping"}', 400, -32700),
    ('{"id":1,"method":"ping"}', 400, -32600),
    ('[]', 400, -32600),
    ('[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]', 400, -32600),
    ('"tools/call"', 400, -32600),
    ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["createTask"]}}', 400, -32602),
    ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}', 400, -32602),
])
def test_bad_bodies(mcp: McpStack, body: str, status: int, code: int) -> None:
    r = mcp.post(body.encode(), mcp.token("read:tasks write:tasks"))
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert mcp.upstream_methods() == []


def test_invalid_utf8_is_a_parse_error(mcp: McpStack) -> None:
    r = mcp.post(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\xff"}}', mcp.token("read:tasks"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32700)


def test_escaped_method_is_authorized_as_what_it_means(mcp: McpStack) -> None:
    r = mcp.post(r'{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"createT\u0061sk"}}',
                 mcp.token("read:tasks"))
    assert r.status_code == 403
    assert mcp.upstream_methods() == []


def test_method_in_another_case_is_not_a_bypass(mcp: McpStack) -> None:
    r = mcp.post(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "TOOLS/CALL", "params": {"name": "createTask"}}),
                 mcp.token("read:tasks"))
    # Refused by the filter: a case-insensitive server would otherwise run it as tools/call, unchecked.
    assert (r.status_code, r.json()["error"]["code"], r.json()["id"]) == (400, -32601, 1)
    assert mcp.upstream_methods() == []


def test_mirror_headers_must_match_the_body(mcp: McpStack) -> None:
    token = mcp.token("read:tasks write:tasks")
    r = mcp.post(json.dumps(_call("getTasks", 5)), token, {"mcp-method": "tools/call", "mcp-name": "createTask"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["id"]) == (400, -32020, 5)
    r = mcp.post(json.dumps(_call("getTasks", 5)), token, {"mcp-method": "tools/list"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, -32020)
    assert mcp.upstream_methods() == []
    # Agreeing headers pass (here with the Base64 sentinel form the spec uses for non-ASCII names).
    encoded = "=?base64?" + base64.b64encode("getTasks".encode()).decode() + "?="
    r = mcp.post(json.dumps(_call("getTasks", 6)), token, {"mcp-method": "tools/call", "mcp-name": encoded})
    assert r.status_code != 400 or r.json()["error"]["code"] != -32020, r.text


def test_head_level_refusals(mcp: McpStack) -> None:
    token = mcp.token("read:tasks")
    ok = json.dumps(_call("getTasks"))
    assert mcp.post(ok, token, {"content-type": "text/plain"}).status_code == 415
    assert mcp.post(ok, token, {"content-encoding": "gzip"}).status_code == 415
    assert mcp.post(b" " * 70000, token).status_code == 413

    def chunks():
        for _ in range(80):
            yield b" " * 1000
    r = httpx.post(mcp.url, content=chunks(), headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 413, "streamed without Content-Length"
    assert httpx.put(mcp.url, content=ok, headers={"authorization": f"Bearer {token}"}).status_code == 405
    r = mcp.post(ok, token, {"origin": "https://evil.example"})
    assert r.status_code == 403
    # An allowed Origin passes the filter (the server then answers a session-less call as it sees fit).
    assert mcp.post(ok, token, {"origin": ALLOWED_ORIGIN}).status_code != 403
    assert httpx.request("GET", mcp.url, content=b"x", headers={"authorization": f"Bearer {token}"}).status_code == 400
    assert ("tools/call", "getTasks") in mcp.upstream_methods()
    assert len(mcp.upstream_methods()) == 1, "only the allowed-origin request reached the server"


def test_body_split_into_one_byte_frames_is_decided_the_same(mcp: McpStack) -> None:
    def frames(body: bytes):
        for b in body:
            yield bytes([b])

    def send(token: str, id_: int, headers: dict) -> httpx.Response:
        body = json.dumps(_call("createTask", id_) | {"params": {"name": "createTask", "arguments": {"title": "t"}}})
        return httpx.post(mcp.url, content=frames(body.encode()), timeout=20, headers={
            "authorization": f"Bearer {token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", **headers})

    reader = mcp.token("read:tasks")
    r = send(reader, 9, _legacy_headers(mcp, reader))
    assert r.status_code == 403 and r.json()["id"] == 9
    assert ("tools/call", "createTask") not in mcp.upstream_methods()
    writer = mcp.token("read:tasks write:tasks")
    r = send(writer, 10, _legacy_headers(mcp, writer))
    assert r.status_code == 200, r.text
    [message] = [m for m in messages(r) if m.get("id") == 10]
    assert message["result"]["content"][0]["text"] == "Created task: t"


def test_client_responses_pass_after_authentication(mcp: McpStack) -> None:
    response = json.dumps({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
    assert mcp.post(response).status_code == 401
    r = mcp.post(response, mcp.token("read:tasks"))
    assert r.status_code != 403, r.text
    assert (None, None) in mcp.upstream_methods(), "the response reached the server"
