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
            cfg["mcp"] = {"rules": [{"method": "tools/call", "name": "*", "scopes": ["read:tasks"]}]}
            return cfg

        envoy = Envoy(tmp_path_factory.mktemp("mcp-2026"), upstream_port=server.port, jwks_port=jwks.port,
                      filter_cfg=configure, name="envoy-mcp-2026")
        es.callback(envoy.stop)
        envoy.start()
        yield Stack(envoy, server, key)


@pytest.fixture(autouse=True)
def _clean(stack: Stack) -> None:
    stack.server.reset()


def call(name: str, arguments: dict, id_: int | str = 7, version: str | None = MODERN) -> dict:
    params: dict = {"name": name, "arguments": arguments}
    if version is not None:
        params["_meta"] = {META: version, "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
                           "io.modelcontextprotocol/clientCapabilities": {}}
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
