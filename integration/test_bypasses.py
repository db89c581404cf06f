"""Bypass attempts found in review, each confirmed against real Envoy before the fix: request trailers
(which released held requests undecided), path spellings upstream frameworks route alike, and JSON-RPC
ids that another parser reads differently."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from harness.keys import make_key, mint

RULES = [{"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
         {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]}]


@pytest.fixture(scope="module")
def key():
    return make_key("ES256", kid="bypass-es256")


@pytest.fixture
def stack(stack_factory, key):
    def configure(cfg):
        cfg["paths"] = [{"prefix": "/mcp"}]
        cfg["mcp"] = {"paths": [{"exact": "/mcp"}], "rules": RULES}

    return stack_factory([key], configure=configure)


def call(name: str, id_=1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name}}).encode()


def chunked_with_trailers(stack, path: str, token: str | None, body: bytes, test_id: str) -> int:
    """HTTP/1.1 POST with a chunked body followed by a trailer field; returns the status code."""
    host, port = "127.0.0.1", stack.envoy.listener_port
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            "Transfer-Encoding: chunked", "Trailer: x-t", f"x-test-id: {test_id}", "Connection: close"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    half = len(body) // 2
    raw = ("\r\n".join(head) + "\r\n\r\n").encode()
    for part in (body[:half], body[half:]):
        raw += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    raw += b"0\r\nx-t: 1\r\n\r\n"
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_trailers_do_not_skip_body_authorization(stack, key) -> None:
    reader = mint(key, scope="read:tasks")
    assert chunked_with_trailers(stack, "/mcp", reader, call("createTask"), "tr-denied") == 403
    assert stack.upstream_saw("tr-denied") == []
    assert chunked_with_trailers(stack, "/mcp", reader, call("getTasks"), "tr-allowed") == 200
    [seen] = stack.upstream_saw("tr-allowed")
    assert json.loads(seen["body"])["params"]["name"] == "getTasks"


def test_trailers_do_not_skip_authentication(stack, key) -> None:
    forged = mint(make_key("ES256", kid="attacker"), scope="read:tasks write:tasks")
    assert chunked_with_trailers(stack, "/mcp", forged, call("getTasks"), "tr-forged") == 401
    assert stack.upstream_saw("tr-forged") == []


@pytest.mark.parametrize("path", ["/MCP", "/Mcp", "/mcp/"])
def test_path_spellings_are_guarded_and_authorized(stack, key, path) -> None:
    resp, tid = stack.request("POST", path, token=None, content=call("createTask"),
                              headers={"content-type": "application/json"})
    assert resp.status_code == 401, (path, resp.text)
    resp, tid = stack.request("POST", path, token=mint(key, scope="read:tasks"), content=call("createTask"),
                              headers={"content-type": "application/json"})
    assert resp.status_code == 403, (path, resp.text)
    assert stack.upstream_saw(tid) == []


@pytest.mark.parametrize("path", ["/%6dcp", "//mcp", "/x/../mcp"])
def test_encoded_and_dotted_paths_are_normalised_before_matching(stack, path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.envoy.listener_port, timeout=20)
    try:  # http.client sends the path verbatim (httpx would resolve `//mcp` and `..` itself)
        conn.request("POST", path, body=call("getTasks"), headers={"content-type": "application/json",
                                                                   "x-test-id": "norm" + str(len(path))})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 401, (path, status)
    assert stack.upstream_saw("norm" + str(len(path))) == []


@pytest.mark.parametrize("id_text", ["1.0", "1e0", "9007199254740993"])
def test_ids_other_parsers_read_differently_are_refused(stack, key, id_text) -> None:
    body = ('{"jsonrpc":"2.0","id":%s,"method":"tools/list"}' % id_text).encode()
    resp, tid = stack.request("POST", "/mcp", token=mint(key, scope="read:tasks"), content=body,
                              headers={"content-type": "application/json"})
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, -32600)
    assert stack.upstream_saw(tid) == []
