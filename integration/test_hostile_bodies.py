"""Attacks on the MCP request body and its framing, through real Envoy (2 workers) in front of the echo
upstream. Each case asserts the status and JSON-RPC error that docs/configuration.md promises ("How MCP
requests are answered"), that the refusal was counted under its reason, and that the upstream never saw
a request that was not authorized. Controls show the same shapes pass when they are legitimate.

Caller: a reader (scope `read:tasks`). Rules: getTasks needs read:tasks, createTask write:tasks,
delete_all admin; other tools are denied (unlisted_tools), other methods allowed (unlisted_methods)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from conftest import shared_stack
from harness import rawhttp
from harness.keys import make_key, mint

RULES = [{"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
         {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
         {"method": "tools/call", "name": "delete_all", "scopes": ["admin"]}]
MAX_BODY = 1048576  # mcp.max_body_bytes (the default, set explicitly here)

PARSE, INVALID, NOT_FOUND, PARAMS, FORBIDDEN = -32700, -32600, -32601, -32602, -32003
# The `mcp_authz.denied.<reason>` counter each answer moves.
REASON = {(400, PARSE): "parse_error", (400, INVALID): "invalid_request", (400, NOT_FOUND): "invalid_request",
          (400, PARAMS): "invalid_params", (415, INVALID): "unsupported_media_type",
          (413, INVALID): "body_too_large", (405, INVALID): "method_not_allowed"}


@pytest.fixture(scope="module")
def key():
    return make_key("ES256", kid="bodies-es256")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, key):
    def configure(cfg):
        cfg["mcp"] = {"rules": RULES, "max_body_bytes": MAX_BODY}

    with shared_stack(tmp_path_factory, [key], concurrency=2, configure=configure) as s:
        yield s


@pytest.fixture(scope="module")
def reader(key):
    return mint(key, sub="reader", scope="read:tasks")


def call(name: str, id_=1, method: str = "tools/call") -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {"name": name, "arguments": {}}}


def post(stack, token: str, body: bytes | str, headers: dict | None = None):
    hdrs = {"content-type": "application/json"} | (headers or {})
    return stack.request("POST", "/mcp", token=token, content=body.encode() if isinstance(body, str) else body,
                         headers=hdrs)


def assert_refused(stack, resp, tid: str, status: int, code: int, before: dict[str, int]) -> dict:
    """The promised answer, counted under its reason, and nothing upstream. Returns the JSON body."""
    assert resp.status_code == status, resp.text
    doc = resp.json()
    errors = doc if isinstance(doc, list) else [doc]
    assert all(e["jsonrpc"] == "2.0" and e["error"]["code"] == code for e in errors), doc
    assert stack.upstream_saw(tid) == []
    reason = REASON.get((status, code))
    if reason:
        assert stack.envoy.metric(f"mcp_authz.denied.{reason}") == before[reason] + 1, reason
    return doc


@pytest.fixture
def before(stack) -> dict[str, int]:
    """Every refusal counter, read before the test's request."""
    names = set(REASON.values()) | {"insufficient_scope", "access_denied", "bad_request"}
    return {n: stack.envoy.metric(f"mcp_authz.denied.{n}") for n in names}


def assert_allowed(stack, resp, tid: str, body: bytes | str) -> dict:
    """Reached the upstream once, with exactly the bytes sent."""
    assert resp.status_code == 200, resp.text
    [seen] = stack.upstream_saw(tid)
    sent = body.decode() if isinstance(body, bytes) else body
    assert seen["body"] == sent
    return seen


# ---- duplicate keys on the decision path --------------------------------------------------------------

DUPLICATES = {
    "top_jsonrpc": '{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"getTasks"}}',
    "top_id": '{"jsonrpc":"2.0","id":1,"id":"x","method":"tools/call","params":{"name":"getTasks"}}',
    "top_method": '{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"createTask"}}',
    "top_method_escaped": '{"jsonrpc":"2.0","id":1,"method":"tools/list","m\\u0065thod":"tools/call","params":{"name":"createTask"}}',
    "params": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks"},"params":{"name":"createTask"}}',
    "params_name": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","name":"createTask"}}',
    "params_name_escaped": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","n\\u0061me":"createTask"}}',
    "params_uri": '{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a","uri":"file:///b"}}',
    "meta": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","_meta":{},"_meta":{"userId":"x"}}}',
    "meta_user_id": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","_meta":{"userId":"a","userId":"b"}}}',
    "arguments_deep": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":{"a":{"b":[{"c":1,"c":2}]}}}}',
    "batch_element": '[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"getTasks","name":"createTask"}}]',
}


@pytest.mark.parametrize("body", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_duplicate_keys_anywhere_are_a_parse_error(stack, reader, before, body):
    resp, tid = post(stack, reader, body)
    assert_refused(stack, resp, tid, 400, PARSE, before)


# ---- escapes: authorized as what they mean ------------------------------------------------------------

ESCAPED_DENIED = {
    "method_u002f": (r'{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"createTask"}}', "insufficient_scope"),
    "method_escaped_solidus": (r'{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"createTask"}}', "insufficient_scope"),
    "name_first_letter": (r'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0063reateTask"}}', "insufficient_scope"),
    "name_all_escaped": ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s"}}'
                         % "".join(f"\\u{ord(c):04x}" for c in "createTask"), "insufficient_scope"),
    "name_underscore": (r'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u005fall"}}', "insufficient_scope"),
    "name_nul_suffix": (r'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\u0000"}}', "access_denied"),
    "name_other_case": ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GetTasks"}}', "access_denied"),
    "name_surrogate_pair": (r'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\ud83d\ude00"}}', "access_denied"),
}


@pytest.mark.parametrize("body, reason", ESCAPED_DENIED.values(), ids=ESCAPED_DENIED.keys())
def test_escaped_method_and_names_are_authorized_as_what_they_mean(stack, reader, before, body, reason):
    resp, tid = post(stack, reader, body)
    doc = assert_refused(stack, resp, tid, 403, FORBIDDEN, before)
    assert doc["error"]["data"]["error"] == reason
    assert stack.envoy.metric(f"mcp_authz.denied.{reason}") == before[reason] + 1


def test_escaped_allowed_name_passes_unchanged(stack, reader):
    body = r'{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"get\u0054asks"}}'
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


# ---- methods spelled in another case -------------------------------------------------------------------

DISGUISED = ["Tools/Call", "TOOLS/CALL", "tools/Call", "Initialize", "PING", "Notifications/initialized",
             "tools/call ", "\ttools/call", "tools/call\u0000", "tool\u017f/call",
             # logging/setLevel is the one MCP method with an upper-case letter (found by fuzzing)
             "logging/setlevel", "logging/SetLevel", "LOGGING/SETLEVEL"]


@pytest.mark.parametrize("method", DISGUISED, ids=[repr(m) for m in DISGUISED])
def test_method_in_another_spelling_is_not_found_and_never_forwarded(stack, reader, before, method):
    resp, tid = post(stack, reader, json.dumps(call("createTask", 7, method=method)))
    doc = assert_refused(stack, resp, tid, 400, NOT_FOUND, before)
    assert doc["id"] == 7


def test_unknown_method_that_is_no_spelling_of_a_known_one_follows_unlisted_methods(stack, reader):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/frobnicate"})
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


# ---- batches -------------------------------------------------------------------------------------------


def test_batch_mixing_allowed_and_denied_is_refused_whole(stack, reader, before):
    batch = [call("getTasks", 1), call("createTask", 2), {"jsonrpc": "2.0", "method": "notifications/progress",
                                                          "params": {"progressToken": 1, "progress": 1}},
             {"jsonrpc": "2.0", "id": "srv-1", "result": {}}, call("delete_all", 3)]
    resp, tid = post(stack, reader, json.dumps(batch))
    doc = assert_refused(stack, resp, tid, 403, FORBIDDEN, before)
    by_id = {e["id"]: e["error"]["data"] for e in doc}
    assert by_id[2]["error"] == by_id[3]["error"] == "insufficient_scope"
    assert by_id[1] == {"error": "batch_denied", "denied": [1, 4]}
    assert stack.envoy.metric("mcp_authz.denied.insufficient_scope") == before["insufficient_scope"] + 1


def test_batch_of_allowed_calls_passes_whole(stack, reader):
    body = json.dumps([call("getTasks", 1), call("getTasks", 2), {"jsonrpc": "2.0", "id": 3, "method": "ping"}])
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


def test_huge_batch_with_one_denied_call_at_the_end(stack, reader, before):
    batch = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(5000)] + [call("createTask", 5000)]
    resp, tid = post(stack, reader, json.dumps(batch))
    doc = assert_refused(stack, resp, tid, 403, FORBIDDEN, before)
    assert len(doc) == 5001 and doc[-1]["error"]["data"]["error"] == "batch_denied"


def test_huge_batch_of_allowed_calls_passes(stack, reader):
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(20000)])
    assert len(body) < MAX_BODY
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


@pytest.mark.parametrize("body, code", [
    ('[[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"createTask"}}]]', INVALID),
    ('[{"jsonrpc":"2.0","id":1,"method":"ping"},[]]', INVALID),
    ("[]", INVALID),
    ("[{}]", INVALID),
    ('[1,2,3]', INVALID),
], ids=["nested_batch", "array_element", "empty_batch", "empty_object", "numbers"])
def test_nested_and_malformed_batches(stack, reader, before, body, code):
    resp, tid = post(stack, reader, body)
    assert_refused(stack, resp, tid, 400, code, before)


# ---- nesting, sizes and numbers at the limits ---------------------------------------------------------


def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + "0" + closer * depth


@pytest.mark.parametrize("where", ["top_level", "arguments_arrays", "arguments_objects"])
def test_ten_thousand_levels_of_nesting_is_a_parse_error_not_a_crash(stack, reader, before, where):
    depth = 10_000
    if where == "top_level":
        body = _nested(depth)
    elif where == "arguments_arrays":
        body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":{"x":%s}}}' % _nested(depth)
    else:
        body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":%s}}'
                % ('{"a":' * depth + "0" + "}" * depth))
    resp, tid = post(stack, reader, body)
    doc = assert_refused(stack, resp, tid, 400, PARSE, before)
    assert "recursion limit" in doc["error"]["message"]


def test_moderate_nesting_passes(stack, reader):
    """Control: nesting below serde_json's limit (128 levels in all) is ordinary input."""
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":{"x":%s}}}' % _nested(100)
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


def test_huge_array_and_long_string_arguments_pass_intact(stack, reader):
    array = json.dumps(call("getTasks") | {"params": {"name": "getTasks", "arguments": {"ids": [0] * 200_000}}})
    resp, tid = post(stack, reader, array)
    assert_allowed(stack, resp, tid, array)
    envelope = len(json.dumps(call("getTasks") | {"params": {"name": "getTasks", "arguments": {"s": ""}}}))
    string = json.dumps(call("getTasks") | {"params": {"name": "getTasks", "arguments": {"s": "x" * (MAX_BODY - envelope)}}})
    assert len(string) == MAX_BODY
    resp, tid = post(stack, reader, string)
    assert_allowed(stack, resp, tid, string)


def test_body_one_byte_over_the_limit_is_413(stack, reader, before):
    resp, tid = post(stack, reader, b" " * (MAX_BODY + 1))
    assert_refused(stack, resp, tid, 413, INVALID, before)


def test_huge_tool_name_is_denied_and_counted_as_other(stack, reader, before):
    other = stack.envoy.metric("mcp_authz.mcp.denied.tools_call.other") or 0
    resp, tid = post(stack, reader, json.dumps(call("t" * 500_000)))
    doc = assert_refused(stack, resp, tid, 403, FORBIDDEN, before)
    assert doc["error"]["data"]["error"] == "access_denied"
    assert stack.envoy.metric("mcp_authz.mcp.denied.tools_call.other") == other + 1
    assert not any("tttttttt" in name for name in stack.envoy.stats("mcp_authz")), "no stat per client name"


@pytest.mark.parametrize("id_text", ["9007199254740991", "-9007199254740991", "0", '""', '"x"'])
def test_ids_at_the_limits_pass(stack, reader, id_text):
    body = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"getTasks"}}' % id_text
    resp, tid = post(stack, reader, body)
    assert_allowed(stack, resp, tid, body)


@pytest.mark.parametrize("id_text, code", [
    ("9007199254740992", INVALID), ("-9007199254740992", INVALID), ("-0", INVALID), ("0.5", INVALID),
    ("1e400", PARSE), ("-1e400", PARSE), ("null", INVALID), ("true", INVALID), ("[1]", INVALID), ("{}", INVALID),
])
def test_ids_beyond_the_limits_are_refused(stack, reader, before, id_text, code):
    body = '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"getTasks"}}' % id_text
    resp, tid = post(stack, reader, body)
    assert_refused(stack, resp, tid, 400, code, before)


@pytest.mark.parametrize("number, passes", [
    ("123456789012345678901234567890", True), ("-0.0", True), ("1.7976931348623157e308", True), ("5e-324", True),
    ("1e400", False), ("-1e400", False),
])
def test_numbers_in_arguments(stack, reader, before, number, passes):
    """Numbers travel as sent (the body is forwarded byte for byte); one a double cannot hold is refused
    rather than read as infinity."""
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks","arguments":{"n":%s}}}' % number
    resp, tid = post(stack, reader, body)
    if passes:
        assert_allowed(stack, resp, tid, body)
    else:
        assert_refused(stack, resp, tid, 400, PARSE, before)


# ---- encodings ------------------------------------------------------------------------------------------

BAD_BYTES = {
    "invalid_utf8": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\xff"}}',
    "overlong_solidus": b'{"jsonrpc":"2.0","id":1,"method":"tools\xc0\xafcall","params":{"name":"createTask"}}',
    "utf8_surrogate": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\xed\xa0\x80"}}',
    "truncated_multibyte": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\xe2\x82"}}',
    "lone_surrogate_escape": rb'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks\ud800"}}',
    "bom": b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"getTasks"}}',
    "utf16_with_bom": '\ufeff{"jsonrpc":"2.0","id":1,"method":"ping"}'.encode("utf-16-le"),
    "nul_byte_after": b'{"jsonrpc":"2.0","id":1,"method":"ping"}\x00',
    "trailing_document": b'{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"createTask"}}',
    "form_body": b"jsonrpc=2.0&id=1&method=tools/call&name=createTask",
    "empty": b"",
}


@pytest.mark.parametrize("body", BAD_BYTES.values(), ids=BAD_BYTES.keys())
def test_bodies_that_are_not_one_utf8_json_text_are_a_parse_error(stack, reader, before, body):
    resp, tid = post(stack, reader, body)
    assert_refused(stack, resp, tid, 400, PARSE, before)


CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json-patch+json", "application/jsonx", "application/json, text/plain", "json", ""]


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_content_type_other_than_json_is_415(stack, reader, before, content_type):
    resp, tid = post(stack, reader, json.dumps(call("getTasks")), {"content-type": content_type})
    assert_refused(stack, resp, tid, 415, INVALID, before)


def test_missing_and_repeated_content_type_are_415(stack, reader, before):
    body = json.dumps(call("getTasks")).encode()
    for headers in ([], [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
                    [("Content-Type", "text/plain"), ("Content-Type", "application/json")]):
        r = rawhttp.send(stack.envoy.listener_port, "POST", "/mcp", [
            ("Authorization", f"Bearer {reader}"), ("x-test-id", "ct-repeat"), ("Content-Length", str(len(body)))] + headers,
            [body])
        assert (r.status, json.loads(r.body)["error"]["code"]) == (415, INVALID), headers
    assert stack.upstream_saw("ct-repeat") == []
    assert stack.envoy.metric("mcp_authz.denied.unsupported_media_type") == before["unsupported_media_type"] + 3


def test_json_content_type_with_parameters_and_case_passes(stack, reader):
    body = json.dumps(call("getTasks"))
    resp, tid = post(stack, reader, body, {"content-type": "Application/JSON; charset=utf-8"})
    assert_allowed(stack, resp, tid, body)


ENCODED = {
    "gzip": ("gzip", gzip.compress),
    "deflate": ("deflate", zlib.compress),
    "br": ("br", lambda b: b"\x8b\x07\x80" + b),  # no brotli encoder here; the header alone must refuse it
    "GZIP": ("GZIP", gzip.compress),
    "gzip_then_identity": ("gzip, identity", gzip.compress),
    "identity_then_gzip": ("identity, gzip", gzip.compress),
    "unknown": ("x-custom", lambda b: b),
}


@pytest.mark.parametrize("encoding, compress", ENCODED.values(), ids=ENCODED.keys())
def test_content_encoding_other_than_identity_is_415(stack, reader, before, encoding, compress):
    """The filter can only authorize what it can read; Envoy has no decompressor in front of it, so a
    compressed body is refused, never forwarded for the upstream to decompress."""
    resp, tid = post(stack, reader, compress(json.dumps(call("createTask")).encode()), {"content-encoding": encoding})
    assert_refused(stack, resp, tid, 415, INVALID, before)


def test_repeated_content_encoding_header_is_415(stack, reader, before):
    body = gzip.compress(json.dumps(call("createTask")).encode())
    r = rawhttp.send(stack.envoy.listener_port, "POST", "/mcp", [
        ("Authorization", f"Bearer {reader}"), ("x-test-id", "ce-repeat"), ("Content-Type", "application/json"),
        ("Content-Encoding", "identity"), ("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))], [body])
    assert (r.status, json.loads(r.body)["error"]["code"]) == (415, INVALID)
    assert stack.upstream_saw("ce-repeat") == []


def test_identity_content_encoding_passes(stack, reader):
    body = json.dumps(call("getTasks"))
    resp, tid = post(stack, reader, body, {"content-encoding": "identity"})
    assert_allowed(stack, resp, tid, body)


# ---- framing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, status", [("createTask", 403), ("getTasks", 200)])
def test_chunked_body_in_one_byte_frames(stack, reader, name, status):
    body = json.dumps(call(name, 11)).encode()
    test_id = f"one-byte-{name}"
    r = rawhttp.send(stack.envoy.listener_port, "POST", "/mcp", [
        ("Authorization", f"Bearer {reader}"), ("x-test-id", test_id), ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked")], rawhttp.chunked(body, 1))
    assert r.status == status, r.body
    seen = stack.upstream_saw(test_id)
    if status == 200:
        assert [s["body"] for s in seen] == [body.decode()]
    else:
        assert json.loads(r.body)["id"] == 11 and seen == []


def test_content_length_with_chunked_is_refused_by_envoy(stack, reader):
    """Request smuggling shape: Envoy's codec refuses it before the filter; nothing reaches the upstream."""
    body = json.dumps(call("createTask")).encode()
    r = rawhttp.send(stack.envoy.listener_port, "POST", "/mcp", [
        ("Authorization", f"Bearer {reader}"), ("x-test-id", "cl-te"), ("Content-Type", "application/json"),
        ("Content-Length", "4"), ("Transfer-Encoding", "chunked")], rawhttp.chunked(body, 16))
    assert r.status == 400
    assert stack.upstream_saw("cl-te") == []


@pytest.mark.parametrize("method, pieces, headers", [
    ("GET", [b"x"], [("Content-Length", "1")]),
    ("DELETE", [b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"createTask"}}'], [("Content-Length", "77")]),
    ("GET", rawhttp.chunked(b'{"a":1}', 1), [("Transfer-Encoding", "chunked")]),
    ("DELETE", rawhttp.chunked(b"x", 1), [("Transfer-Encoding", "chunked")]),
], ids=["get_content_length", "delete_json_body", "get_chunked", "delete_chunked"])
def test_bodies_on_get_and_delete_are_400(stack, reader, before, method, pieces, headers):
    test_id = f"{method}-{len(pieces)}-{headers[0][0]}"
    r = rawhttp.send(stack.envoy.listener_port, method, "/mcp",
                     [("Authorization", f"Bearer {reader}"), ("x-test-id", test_id)] + headers, pieces)
    assert (r.status, json.loads(r.body)["error"]["code"]) == (400, INVALID)
    assert stack.upstream_saw(test_id) == []
    assert stack.envoy.metric("mcp_authz.denied.bad_request") == before["bad_request"] + 1


def test_get_and_delete_without_body_pass(stack, reader):
    for method in ["GET", "DELETE"]:
        resp, tid = stack.request(method, "/mcp", token=reader, headers={"content-length": "0"} if method == "DELETE" else None)
        assert resp.status_code == 200, (method, resp.text)
        assert [s["method"] for s in stack.upstream_saw(tid)] == [method]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "TRACE"])
def test_other_http_methods_are_405(stack, reader, method):
    resp, tid = stack.request(method, "/mcp", token=reader)
    assert resp.status_code == 405
    assert stack.upstream_saw(tid) == []


# ---- params of the wrong type ---------------------------------------------------------------------------


@pytest.mark.parametrize("params, code", [
    ('{"name":7}', PARAMS), ('{"name":{"name":"getTasks"}}', PARAMS), ('{"name":["getTasks"]}', PARAMS),
    ('{"name":null}', PARAMS), ('{"name":true}', PARAMS), ('{"arguments":{}}', PARAMS), ('{}', PARAMS),
    ('["getTasks"]', INVALID), ('"getTasks"', INVALID), ("7", INVALID),
], ids=["number", "object", "array", "null", "bool", "missing", "empty", "params_array", "params_string",
        "params_number"])
def test_params_name_of_the_wrong_type(stack, reader, before, params, code):
    resp, tid = post(stack, reader, '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":%s}' % params)
    doc = assert_refused(stack, resp, tid, 400, code, before)
    assert doc["id"] == 4


def test_meta_user_id_is_not_identity(stack, key, before):
    """Outside the connector mode `_meta.userId` means nothing to the filter: a reader claiming to be an
    admin is still a reader, and the upstream's identity header says who really called."""
    body = json.dumps(call("delete_all") | {"params": {"name": "delete_all", "_meta": {"userId": "admin"}}})
    resp, tid = post(stack, mint(key, sub="mallory", scope="read:tasks"), body)
    assert_refused(stack, resp, tid, 403, FORBIDDEN, before)
    body = json.dumps(call("getTasks") | {"params": {"name": "getTasks", "_meta": {"userId": "admin"}}})
    resp, tid = post(stack, mint(key, sub="mallory", scope="read:tasks"), body, {"x-user-sub": "admin"})
    seen = assert_allowed(stack, resp, tid, body)
    assert seen["headers"]["x-user-sub"] == "mallory"
