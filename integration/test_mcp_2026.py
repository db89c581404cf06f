"""MCP 2026-07-28 request metadata through real Envoy: `MCP-Protocol-Version`, `Mcp-Method`/`Mcp-Name` and
`Mcp-Param-*` must agree with the body (streamable HTTP, "Server Validation"), header values that are not
UTF-8 never crash the filter, and the official SDK's 2026-07-28 client (which mirrors `x-mcp-header`
parameters) works through it. Each refusal is checked on both sides: 400 + JSON-RPC -32020 with the id
echoed to the client, and nothing at the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from typing import Iterator

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from harness.envoy import Envoy, filter_config
from harness.keys import SigningKey, make_key, mint
from harness.mcp_upstream import McpServer
from harness.servers import JwksServer

MODERN = "2026-07-28"
META = "io.modelcontextprotocol/protocolVersion"
HEADER_MISMATCH = -32020


class Stack:
    def __init__(self, envoy: Envoy, server: McpServer, key: SigningKey) -> None:
        self.envoy, self.server, self.key = envoy, server, key
        self.url = f"{envoy.url}/mcp"
        self.token = mint(key, scope="read:tasks", sub="alice")

    def post(self, body: dict, headers: dict | None = None) -> httpx.Response:
        hdrs = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                "authorization": f"Bearer {self.token}"}
        hdrs.update(headers or {})
        return httpx.post(self.url, content=json.dumps(body), headers=hdrs, timeout=20)

    def raw(self, head_lines: list[bytes], body: bytes) -> tuple[int, bytes]:
        """One HTTP/1.1 request written byte for byte (header values may hold any byte): status and body."""
        head = [b"POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{self.envoy.listener_port}".encode(),
                b"Content-Type: application/json", b"Accept: application/json, text/event-stream",
                f"Authorization: Bearer {self.token}".encode(), f"Content-Length: {len(body)}".encode(),
                b"Connection: close", *head_lines]
        with socket.create_connection(("127.0.0.1", self.envoy.listener_port), timeout=20) as s:
            s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    key = make_key("ES256", kid="mcp-2026")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        server = McpServer(json_response=True, header_tool=True)
        es.callback(server.stop)

        def configure(listener_port: int) -> dict:
            cfg = filter_config(jwks.port, listener_port)
            cfg["mcp"] = {
                "rules": [{"method": "tools/call", "name": "*", "scopes": ["read:tasks"]}],
                # The server does not annotate get_project_tasks: declared here, as for a tool whose list
                # the filter never reads.
                "param_headers": {"get_project_tasks": {"type": "object", "properties": {
                    "project": {"type": "string", "x-mcp-header": "Project"}}}},
            }
            return cfg

        envoy = Envoy(tmp_path_factory.mktemp("mcp-2026"), upstream_port=server.port, jwks_port=jwks.port,
                      filter_cfg=configure, name="envoy-mcp-2026")
        es.callback(envoy.stop)
        envoy.start()
        yield Stack(envoy, server, key)


@pytest.fixture(autouse=True)
def _clean(stack: Stack) -> None:
    stack.server.reset()


def envelope(version: str = MODERN) -> dict:
    return {META: version, "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}


def call(name: str, arguments: dict, id_: int | str = 7, version: str | None = MODERN) -> dict:
    params: dict = {"name": name, "arguments": arguments}
    if version is not None:
        params["_meta"] = envelope(version)
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


def test_a_header_value_that_is_not_utf8_is_refused_and_the_filter_keeps_serving(stack: Stack) -> None:
    body = json.dumps(call("search", {"q": "x"})).encode()
    for name in (b"Mcp-Name", b"X-Other"):
        status, _ = stack.raw([b"MCP-Protocol-Version: 2026-07-28", b"Mcp-Method: tools/call",
                               name + b": caf\xe9\xff"], body)
        assert status == 400, name
    assert stack.server.received() == []
    # The worker did not trap: the next request is served.
    ok = stack.post(call("search", {"q": "x"}), {"mcp-protocol-version": MODERN, "mcp-method": "tools/call",
                                                 "mcp-name": "search", "mcp-param-q": "x"})
    assert ok.status_code == 200, ok.text


def modern_headers(name: str | None = "search", method: str = "tools/call", **params: str) -> dict:
    headers = {"mcp-protocol-version": MODERN, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers | {f"mcp-param-{k}": v for k, v in params.items()}


def assert_refused(stack: Stack, r: httpx.Response, id_: int | str = 7) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == HEADER_MISMATCH and body["id"] == id_, body
    assert stack.server.received() == [], "nothing reached the upstream"


def learn_search(stack: Stack) -> None:
    """A tools/list through the filter: it learns search's x-mcp-header parameters from the answer."""
    r = stack.post({"jsonrpc": "2.0", "id": "l", "method": "tools/list", "params": {"_meta": envelope()}},
                   modern_headers(name=None, method="tools/list"))
    assert r.status_code == 200, r.text
    [search] = [t for t in r.json()["result"]["tools"] if t["name"] == "search"]
    assert search["inputSchema"]["properties"]["q"]["x-mcp-header"] == "Q"
    stack.server.reset()


def test_protocol_version_header_must_match_the_body_envelope(stack: Stack) -> None:
    body = call("search", {"q": "x"}, id_="v-1", version="2025-11-25")
    assert_refused(stack, stack.post(body, modern_headers(q="x")), "v-1")
    body = call("search", {"q": "x"}, id_="v-2")
    headers = modern_headers(q="x")
    del headers["mcp-protocol-version"]
    assert_refused(stack, stack.post(body, headers), "v-2")


def test_a_2026_call_without_mcp_method_or_mcp_name_is_refused(stack: Stack) -> None:
    body = call("search", {"q": "x"}, id_=11)
    assert_refused(stack, stack.post(body, {"mcp-protocol-version": MODERN, "mcp-param-q": "x"}), 11)
    assert_refused(stack, stack.post(body, modern_headers(name=None, q="x")), 11)
    assert_refused(stack, stack.post(body, modern_headers(name="getTasks", q="x")), 11)


def test_a_forged_or_missing_param_header_is_refused_once_the_tool_is_known(stack: Stack) -> None:
    learn_search(stack)
    assert_refused(stack, stack.post(call("search", {"q": "evil"}), modern_headers(q="safe")))
    assert_refused(stack, stack.post(call("search", {"q": "evil"}), modern_headers()))
    assert_refused(stack, stack.post(call("search", {"q": "x", "limit": 5}), modern_headers(q="x", limit="6")))
    # What agrees passes: Base64 sentinel form, an integer written 5.0, an unrecognised Mcp-Param-*.
    ok = stack.post(call("search", {"q": "Hello, 世界", "limit": 5}),
                    modern_headers(q="=?base64?SGVsbG8sIOS4lueVjA==?=", limit="5.0", zone="eu"))
    assert ok.status_code == 200, ok.text
    [seen] = stack.server.received()
    assert seen["headers"]["mcp-param-zone"] == "eu", "unrecognised Mcp-Param-* forwarded untouched"


def test_a_configured_param_header_is_checked_for_a_tool_never_listed(stack: Stack) -> None:
    body = call("get_project_tasks", {"project": "apollo"}, id_=21)
    assert_refused(stack, stack.post(body, modern_headers("get_project_tasks", project="zeus")), 21)
    assert_refused(stack, stack.post(body, modern_headers("get_project_tasks")), 21)
    ok = stack.post(body, modern_headers("get_project_tasks", project="apollo"))
    assert ok.status_code == 200, ok.text
    assert json.loads(ok.json()["result"]["content"][0]["text"])["project"] == "apollo"


def test_an_earlier_era_call_without_mirrors_still_passes(stack: Stack) -> None:
    stack.post(call("search", {"q": "x"}, version=None), {"mcp-protocol-version": "2025-06-18"})
    # Not this era's request: the filter asks for no mirrors and lets it through (the server decides).
    assert len(stack.server.received()) == 1


async def _sdk(url: str, token: str, work):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await work(client)


def test_the_sdk_client_mirrors_x_mcp_header_parameters_and_passes(stack: Stack) -> None:
    async def work(client: Client):
        await client.list_tools()
        return await client.call_tool("search", {"q": "Grüße", "limit": 3})

    result = asyncio.run(asyncio.wait_for(_sdk(stack.url, stack.token, work), timeout=60))
    assert not result.is_error, result
    assert json.loads(result.content[0].text) == {"q": "Grüße", "limit": 3}
    [sent] = [r for r in stack.server.received() if '"tools/call"' in r["body"]]
    h = sent["headers"]
    assert (h["mcp-protocol-version"], h["mcp-method"], h["mcp-name"]) == (MODERN, "tools/call", "search")
    assert base64.b64decode(h["mcp-param-q"].removeprefix("=?base64?").removesuffix("?=")).decode() == "Grüße"
    assert h["mcp-param-limit"] == "3"
    # The same call with the parameter header forged is refused before the upstream.
    stack.server.reset()
    forged = {k: v for k, v in h.items() if k.startswith("mcp-")} | {"mcp-param-q": "safe"}
    assert_refused(stack, stack.post(json.loads(sent["body"]) | {"id": 7}, forged))
