"""Findings of an attack pass on the built filter, each fixed and shown here against real Envoy 1.40 whose
HTTP connection manager does NOT normalise paths (`normalize_path`/`merge_slashes` off, Envoy's
defaults): path spellings that skipped the filter, list results answered on another request's stream,
sessions used by another caller, refusals that echoed huge names, repeated credentials, and `params.meta`.
Each assertion is what the client saw and what the upstream received."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
from typing import Iterator

import httpx
import pytest

from harness import rawhttp
from harness.envoy import Envoy, filter_config
from harness.keys import make_key, mint
from harness.mcp_upstream import McpServer
from harness.servers import JwksServer

RULES = [
    {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
    {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
    {"method": "tools/call", "name": "whoami"},
    {"method": "tools/call", "name": "admin_*", "scopes": ["admin"]},
]
HIDDEN_FROM_READERS = ("createTask", "admin_reset")
MCP_HEADERS = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def call(name: str, id_: int | str = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name}}).encode()


class Upstream:
    """Envoy without path normalisation in front of the official SDK's stateful sample server."""

    def __init__(self, envoy: Envoy, server: McpServer, key) -> None:
        self.envoy, self.server, self.key = envoy, server, key
        self.url = f"{envoy.url}/mcp"

    def token(self, scope: str, sub: str = "alice") -> str:
        return mint(self.key, scope=scope, sub=sub)

    def raw(self, method: str, path: str, body: bytes = b"", token: str | None = None,
            headers: list[tuple[str, str]] = ()) -> rawhttp.RawResponse:
        hdrs = list(MCP_HEADERS) + ([("authorization", f"Bearer {token}")] if token else []) + list(headers)
        hdrs.append(("content-length", str(len(body))))
        return rawhttp.send(self.envoy.listener_port, method, path, hdrs, [body] if body else [])

    def post(self, body: dict | bytes, token: str, headers: dict | None = None, timeout: float = 20) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = dict(MCP_HEADERS) | {"authorization": f"Bearer {token}"} | (headers or {})
        return httpx.post(self.url, content=content, headers=hdrs, timeout=timeout)

    def session(self, token: str) -> dict:
        """Initializes a session (2025-06-18); the headers its later requests carry."""
        r = self.post(INITIALIZE, token)
        assert r.status_code == 200, r.text
        headers = {"mcp-protocol-version": "2025-06-18", "mcp-session-id": r.headers["mcp-session-id"]}
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, token, headers).status_code == 202
        return headers

    def tool_calls_received(self) -> list[str | None]:
        names = []
        for r in self.server.received():
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(r["body"])
                if doc.get("method") == "tools/call":
                    names.append(doc["params"].get("name"))
        return names


@contextlib.contextmanager
def upstream(tmp_path_factory, name: str, sessions: dict | None = None, concurrency: int = 1) -> Iterator[Upstream]:
    key = make_key("ES256", kid=f"{name}-es256")
    with contextlib.ExitStack() as stack:
        jwks = stack.enter_context(JwksServer([key]))
        server = McpServer(json_response=False)
        stack.callback(server.stop)

        def configure(listener_port: int) -> dict:
            cfg = filter_config(jwks.port, listener_port)
            cfg["paths"] = [{"prefix": "/mcp"}]
            cfg["mcp"] = {"paths": [{"exact": "/mcp"}], "rules": RULES}
            if sessions is not None:
                cfg["mcp"]["sessions"] = sessions
            return cfg

        envoy = Envoy(tmp_path_factory.mktemp(name), upstream_port=server.port, jwks_port=jwks.port,
                      filter_cfg=configure, name=name, normalize=False, concurrency=concurrency)
        stack.callback(envoy.stop)
        envoy.start()
        yield Upstream(envoy, server, key)


@pytest.fixture(scope="module")
def sdk(tmp_path_factory) -> Iterator[Upstream]:
    with upstream(tmp_path_factory, "envoy-hardening", concurrency=2) as u:
        yield u


@pytest.fixture(autouse=True)
def _clean(request) -> None:
    if "sdk" in request.fixturenames:
        request.getfixturevalue("sdk").server.reset()


# -- 1. Path spellings ------------------------------------------------------------------------------

# Spellings the SDK's server (Starlette) routes to /mcp, which Envoy without normalisation forwards as sent.
ROUTED_AS_MCP = ["/%6dcp", "/%6Dcp", "/m%63p", "/%6D%63%70", "//mcp", "/./mcp", "/x/../mcp", "/mcp/."]


@pytest.mark.parametrize("path", ROUTED_AS_MCP)
def test_encoded_and_dotted_spellings_of_the_mcp_path_are_guarded(sdk: Upstream, path: str) -> None:
    r = sdk.raw("POST", path, call("admin_reset"))
    assert r.status == 401, (path, r.status, r.body)
    assert r.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    r = sdk.raw("POST", path, call("admin_reset"), token=sdk.token("read:tasks"))
    assert r.status == 403, (path, r.status, r.body)
    assert json.loads(r.body)["error"]["data"]["missing"] == ["admin"]
    assert sdk.tool_calls_received() == [], f"{path} reached the upstream"


def test_an_unauthenticated_client_cannot_open_a_session_through_a_spelling(sdk: Upstream) -> None:
    r = sdk.raw("POST", "/%6dcp", json.dumps(INITIALIZE).encode())
    assert r.status == 401 and "mcp-session-id" not in r.headers
    assert sdk.server.received() == []


def test_spellings_are_guarded_over_http2_and_in_absolute_form(sdk: Upstream) -> None:
    with httpx.Client(http1=False, http2=True, timeout=20) as h2:
        r = h2.post(f"{sdk.envoy.url}/%6dcp", content=call("admin_reset"), headers=dict(MCP_HEADERS))
        assert r.http_version == "HTTP/2" and r.status_code == 401, (r.http_version, r.status_code)
    r = sdk.raw("POST", f"http://127.0.0.1:{sdk.envoy.listener_port}/m%63p", call("admin_reset"))
    assert r.status == 401, r.body
    assert sdk.tool_calls_received() == []


@pytest.mark.parametrize("path", ["/x%2F..%2Fmcp", "/%2Fmcp", "/x%2f..%2fmcp", "/x%5C..%5Cmcp",
                                  "/x\\..\\mcp", "/mcp%00", "/mcp;x=1", "/%256dcp", "/x//../mcp"])
def test_ambiguous_spellings_near_the_mcp_path_are_refused(sdk: Upstream, path: str) -> None:
    token = sdk.token("read:tasks write:tasks admin")
    before = sdk.envoy.metric("mcp_authz.denied.ambiguous_path")
    r = sdk.raw("POST", path, call("getTasks"), token=token)
    assert r.status == 400, (path, r.status, r.body)
    assert json.loads(r.body)["error"] == "invalid_request"
    assert sdk.envoy.metric("mcp_authz.denied.ambiguous_path") == before + 1
    assert sdk.server.received() == []


def test_plain_and_unrelated_paths_are_unaffected(sdk: Upstream) -> None:
    token = sdk.token("read:tasks")
    headers = sdk.session(token)
    r = sdk.post(call("getTasks"), token, headers)
    assert r.status_code == 200 and "Found 2 tasks" in r.text
    # Outside the guarded prefix nothing changes, odd spellings included.
    assert sdk.raw("GET", "/other;x=%2F").status == 404


# -- 2. Lists answered on another request's stream ----------------------------------------------------


def test_a_list_answered_on_another_requests_stream_is_trimmed_by_a_real_server(sdk: Upstream) -> None:
    """The SDK keys in-flight requests by str(id): `tools/list` with id "5000" and `ping` with id 5000 in
    one session can make it answer the list on the ping's stream (and leave the list's own stream
    unanswered). Whatever stream carries it, the list is trimmed."""
    token = sdk.token("read:tasks")
    headers = sdk.session(token)

    def post(body: dict) -> str:
        try:
            return sdk.post(body, token, headers, timeout=3).text
        except httpx.HTTPError:
            return ""  # the stream the server left unanswered

    misrouted = 0
    for i in range(40):
        requests = [{"jsonrpc": "2.0", "id": str(5000 + i), "method": "tools/list"},
                    {"jsonrpc": "2.0", "id": 5000 + i, "method": "ping"}]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list_text, ping_text = pool.map(post, requests)
        for text in (list_text, ping_text):
            assert not any(name in text for name in HIDDEN_FROM_READERS), text
        if '"tools"' in ping_text:
            misrouted += 1
            assert '"getTasks"' in ping_text and '"cacheScope":"private"' in ping_text, ping_text
            break
    if not misrouted:
        pytest.skip("the server answered every list on its own stream in 40 tries: nothing misrouted to check")


@pytest.fixture
def echo_stack(stack_factory):
    key = make_key("ES256", kid="lists-es256")

    def configure(cfg):
        cfg["mcp"] = {"rules": RULES, "max_list_response_bytes": 1024}

    stack = stack_factory([key], configure=configure, normalize=False)
    stack.reader = mint(key, scope="read:tasks")
    return stack


TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("getTasks", "createTask", "admin_reset", "whoami")]


def list_result(id_) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "result": {"tools": TOOLS}}).encode()


def answered(stack, test_id: str, content_type: str, pieces: list[bytes], body: bytes) -> httpx.Response:
    stack.echo.answer(test_id, content_type, pieces)
    return stack.client.post("/mcp", content=body, headers={
        "x-test-id": test_id, "authorization": f"Bearer {stack.reader}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"})


def test_a_json_list_on_a_ping_is_trimmed(echo_stack) -> None:
    r = answered(echo_stack, "ping-json", "application/json", [list_result(7)], json.dumps(
        {"jsonrpc": "2.0", "id": 7, "method": "ping"}).encode())
    assert r.status_code == 200
    result = r.json()["result"]
    assert [t["name"] for t in result["tools"]] == ["getTasks", "whoami"]
    assert result["cacheScope"] == "private"


def test_a_json_list_in_the_second_piece_of_a_tool_result_is_trimmed_whole(echo_stack) -> None:
    doc = list_result(8)
    r = answered(echo_stack, "call-json", "application/json", [doc[:20], doc[20:]], call("getTasks", 8))
    assert [t["name"] for t in r.json()["result"]["tools"]] == ["getTasks", "whoami"]


def test_a_list_after_a_large_first_piece_is_cut_where_it_begins(echo_stack) -> None:
    """The first piece is larger than the filter holds, so it went out before the list began: the client
    gets a truncated document, never the list's entries."""
    before = echo_stack.envoy.metric("mcp_authz.response_replaced")
    padding = b'{"jsonrpc":"2.0","id":9,"result":{"pad":"' + b"p" * 2000 + b'",'
    rest = b'"tools":' + json.dumps(TOOLS).encode() + b"}}"
    echo_stack.echo.answer("call-cut", "application/json", [padding, None, rest])
    echo_stack.echo.hold("call-cut/gate")
    received = b""
    headers = {"x-test-id": "call-cut", "authorization": f"Bearer {echo_stack.reader}",
               "content-type": "application/json"}
    with echo_stack.client.stream("POST", "/mcp", content=call("getTasks", 9), headers=headers) as r:
        pieces = r.iter_raw()
        while len(received) < len(padding):  # the first piece arrives while the upstream holds the rest
            received += next(pieces)
        echo_stack.echo.release("call-cut/gate")
        with contextlib.suppress(httpx.HTTPError):
            for piece in pieces:
                received += piece
    assert received.startswith(padding)
    assert not any(name.encode() in received for name in HIDDEN_FROM_READERS), received[-200:]
    assert b'"tools"' not in received
    assert echo_stack.envoy.metric("mcp_authz.response_replaced") == before + 1


def test_an_sse_list_on_a_tool_call_is_trimmed(echo_stack) -> None:
    event = b"event: message\nid: 3\ndata: " + list_result(10) + b"\n\n"
    r = answered(echo_stack, "call-sse", "text/event-stream", [event[:30], event[30:]], call("getTasks", 10))
    assert "createTask" not in r.text and "getTasks" in r.text and "id: 3" in r.text, r.text


def test_an_unreadable_sse_event_where_a_list_may_be_is_replaced(echo_stack) -> None:
    broken = b'data: {"jsonrpc":"2.0","id":11,"result":{"tools":' + json.dumps(TOOLS).encode() + b"}\n\n"
    r = answered(echo_stack, "sse-broken", "text/event-stream", [broken], call("getTasks", 11))
    assert "could not be filtered" in r.text, r.text
    assert not any(name in r.text for name in HIDDEN_FROM_READERS), r.text


def test_other_responses_pass_byte_for_byte(echo_stack) -> None:
    body = b'{"jsonrpc":"2.0","id":12,"result":{"content":[{"type":"text","text":"\\"tools\\": []"}],' \
           b'"structuredContent":{"tools":["x"]}}}'
    r = answered(echo_stack, "call-other", "application/json", [body[:10], body[10:]], call("getTasks", 12))
    assert r.content == body
    event = b"id: 1\ndata: " + body + b"\n\n: keep-alive\n\n"
    r = answered(echo_stack, "sse-other", "text/event-stream", [event], call("getTasks", 12))
    assert r.content == event


# -- 3. Sessions bound to their caller ---------------------------------------------------------------


def test_a_session_is_refused_to_another_subject_and_kept_for_its_owner(sdk: Upstream) -> None:
    alice, bob = sdk.token("read:tasks", sub="alice"), sdk.token("read:tasks", sub="bob")
    headers = sdk.session(alice)
    before = sdk.envoy.metric("mcp_authz.denied.session_not_owned")
    for _ in range(4):  # both workers (connections are balanced exactly over them)
        r = sdk.post(call("getTasks"), bob, headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["data"]["error"] == "session_not_owned"
    assert sdk.envoy.metric("mcp_authz.denied.session_not_owned") == before + 4
    assert not [x for x in sdk.server.received() if x["headers"].get("x-user-sub") == "bob"]
    for _ in range(4):
        r = sdk.post(call("getTasks"), alice, headers)
        assert r.status_code == 200 and "Found 2 tasks for alice" in r.text, r.text
    # Bob's own session works.
    assert sdk.post(call("getTasks"), bob, sdk.session(bob)).status_code == 200


def test_an_unknown_session_is_404_and_an_ended_one_too(sdk: Upstream) -> None:
    alice = sdk.token("read:tasks")
    r = sdk.post(call("getTasks"), alice, {"mcp-protocol-version": "2025-06-18", "mcp-session-id": "made-up"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Session not found"
    assert sdk.server.received() == []
    headers = sdk.session(alice)
    r = httpx.delete(sdk.url, headers=headers | {"authorization": f"Bearer {alice}"}, timeout=20)
    assert r.status_code == 200, r.text
    assert sdk.post(call("getTasks"), alice, headers).status_code == 404


def test_binding_off_leaves_sessions_to_the_upstream(tmp_path_factory) -> None:
    with upstream(tmp_path_factory, "envoy-sessions-off", sessions={"binding": "off"}) as u:
        headers = u.session(u.token("read:tasks", sub="alice"))
        r = u.post(call("getTasks"), u.token("read:tasks", sub="bob"), headers)
        assert r.status_code == 200, "the upstream (which binds nothing here) served bob"


def test_adopt_binds_an_unknown_session_to_its_first_caller(tmp_path_factory) -> None:
    with upstream(tmp_path_factory, "envoy-sessions-adopt", sessions={"unknown_sessions": "adopt"}) as u:
        alice, bob = u.token("read:tasks", sub="alice"), u.token("read:tasks", sub="bob")
        # A session the filter did not see created (another Envoy, or before a restart): created upstream.
        init = httpx.post(f"http://127.0.0.1:{u.server.port}/mcp", json=INITIALIZE, timeout=20,
                          headers={"accept": "application/json, text/event-stream"})
        headers = {"mcp-protocol-version": "2025-06-18", "mcp-session-id": init.headers["mcp-session-id"]}
        assert u.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, alice, headers).status_code == 202
        assert u.post(call("getTasks"), alice, headers).status_code == 200
        assert u.post(call("getTasks"), bob, headers).status_code == 403


# -- 4. Amplification, 5. repeated credentials, 6. params.meta -----------------------------------------


def test_a_huge_denied_name_is_cut_in_the_answer_and_the_log(sdk: Upstream) -> None:
    name = "x" * 900_000
    r = sdk.post(call(name), sdk.token("read:tasks"))
    assert r.status_code == 403
    assert len(r.content) < 2_000, len(r.content)
    assert r.json()["error"]["data"]["name"].endswith("…[cut]")
    longest = max(len(line) for line in sdk.envoy.log_text().splitlines())
    assert longest < 4_000, f"a log line of {longest} bytes"


@pytest.mark.parametrize("second", ["Bearer other", "Basic Zm9vOmJhcg=="])
def test_two_credentials_are_400_invalid_request(sdk: Upstream, second: str) -> None:
    token = sdk.token("read:tasks")
    body = call("getTasks")
    r = rawhttp.send(sdk.envoy.listener_port, "POST", "/mcp",
                     MCP_HEADERS + [("authorization", f"Bearer {token}"), ("authorization", second),
                                    ("content-length", str(len(body)))], [body])
    assert r.status == 400, r.body
    assert json.loads(r.body)["error"] == "invalid_request"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert sdk.server.received() == []


def test_params_meta_is_refused(sdk: Upstream) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "getTasks", "meta": {"userId": "bob"}}}
    r = sdk.post(body, sdk.token("read:tasks"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602 and r.json()["id"] == 3
    assert sdk.server.received() == []
