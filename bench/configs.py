"""The Envoy bootstraps the benchmark compares. Every one ends in the same direct-response route behind
Envoy's buffer filter (so every config reads the whole request body before answering and keeps the
connection), on 127.0.0.1:

  (a)  passthrough  buffer -> router: Envoy alone, the floor
  (b)  native       jwt_authn with jwt_cache_config -> mcp -> rbac -> buffer -> router, local_reply mappers:
                    what users would otherwise build from Envoy's own filters
  (b') native_nc    the same without jwt_cache_config
  (c)  filter       mcp-authz (passthrough credentials) -> buffer -> router
  (d)  exchange     mcp-authz with an RFC 8693 exchange for the tool (cache-hit path) -> buffer -> router

All enforce one rule: `tools/call getTasks` needs scope read:tasks, `createTask` needs write:tasks, other
tools are refused, other methods are allowed to an authenticated caller.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from harness.keys import AUDIENCE, ISSUER

ALGORITHMS = ["RS256", "ES256", "EdDSA"]
CALL_PATH = "/mcp"
LIST_PATH = "/mcp/list"  # same MCP endpoint semantics; its direct response is a tools/list result
TOOL_SCOPES = {"getTasks": "read:tasks", "createTask": "write:tasks"}
ALLOWED_TOOL, DENIED_TOOL = "getTasks", "createTask"
WORKLOAD_SCOPE = "read:tasks"  # the workload's tokens: getTasks allowed, createTask refused
MAX_BODY = 1048576  # the filter's default mcp.max_body_bytes; the native mcp filter gets the same limit
STS_CLIENT = ("mcp-gateway", "demo-secret")

CONFIG_NAMES = ["passthrough", "native", "native_nc", "filter_authn", "filter", "exchange"]
DESCRIPTIONS = {
    "passthrough": "(a) passthrough: buffer + direct response, no auth",
    "native": "(b) native: jwt_authn with jwt_cache_config + mcp + rbac",
    "native_nc": "(b') native without jwt_cache_config",
    "filter_authn": "(c0) mcp-authz, token only: the same filter with MCP inspection off (mcp.paths elsewhere), "
                    "to split (c)'s cost between authentication and the MCP body decision",
    "filter": "(c) mcp-authz, passthrough credentials",
    "exchange": "(d) mcp-authz, RFC 8693 exchange (cache hit)",
}

TYPE = "type.googleapis.com/envoy.extensions."


def call_body(tool: str, id_: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call",
                       "params": {"name": tool, "arguments": {"status": "open"}}}, separators=(",", ":")).encode()


def list_body(id_: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/list", "params": {}}, separators=(",", ":")).encode()


CALL_RESULT = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
    "content": [{"type": "text", "text": "Found 2 tasks: write the benchmark; read the numbers"}], "isError": False}})


def _tool(name: str) -> dict:
    return {"name": name, "description": f"{name}: a tool of the benchmark's MCP server, with a typical schema",
            "inputSchema": {"type": "object", "properties": {"status": {"type": "string", "enum": ["open", "done"]},
                                                             "limit": {"type": "integer", "minimum": 1}},
                            "required": ["status"]}}


LIST_TOOLS = ["getTasks", "createTask"] + [f"tool_{i:02d}" for i in range(18)]
LIST_RESULT = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [_tool(n) for n in LIST_TOOLS]}})
VISIBLE_TOOLS = ["getTasks"]  # what a read:tasks caller may call, so what a filtered list keeps


def resource_url(listener_port: int) -> str:
    return f"http://127.0.0.1:{listener_port}/mcp"


def metadata_url(listener_port: int) -> str:
    return f"http://127.0.0.1:{listener_port}/.well-known/oauth-protected-resource/mcp"


# ---- shared pieces ------------------------------------------------------------------------------------

def _cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def _json_response_route(match: dict, body: str) -> dict:
    return {"match": match, "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


BUFFER = {"name": "envoy.filters.http.buffer", "typed_config": {
    "@type": TYPE + "filters.http.buffer.v3.Buffer", "max_request_bytes": MAX_BODY}}
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": TYPE + "filters.http.router.v3.Router"}}


def _bootstrap(listener_port: int, auth_filters: list[dict], clusters: dict[str, int],
               local_reply: dict | None = None) -> dict:
    hcm: dict[str, Any] = {
        "@type": TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {"name": "bench", "max_direct_response_body_size_bytes": 65536, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            _json_response_route({"path": LIST_PATH}, LIST_RESULT),
            _json_response_route({"prefix": "/"}, CALL_RESULT),
        ]}]},
        # The buffer filter sits last in every config: the auth filters see the request as in production,
        # and no config answers before the whole body was read (an early answer closes the HTTP/1.1
        # connection, and the benchmark would then time connection set-up instead).
        "http_filters": auth_filters + [BUFFER, ROUTER],
    }
    if local_reply:
        hcm["local_reply_config"] = local_reply
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{"name": "mcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [_cluster(name, port) for name, port in clusters.items()],
        },
    }


# ---- (a) passthrough ----------------------------------------------------------------------------------

def passthrough(listener_port: int, jwks_port: int, **_: Any) -> dict:
    return _bootstrap(listener_port, [], {})


# ---- (b) the native composition -----------------------------------------------------------------------

JWT_NS = "envoy.filters.http.jwt_authn"
MCP_NS = "envoy.filters.http.mcp"


def _md(namespace: str, path: list[str], value: dict) -> dict:
    return {"filter": namespace, "path": [{"key": k} for k in path], "value": value}


def _exact(s: str) -> dict:
    return {"string_match": {"exact": s}}


def _scope_holds(scope: str) -> dict:
    # normalize_payload_in_metadata turns the space-delimited `scope` claim into a list.
    return {"metadata": _md(JWT_NS, ["jwt_payload", "scope"], {"list_match": {"one_of": _exact(scope)}})}


def _is_method(method: str) -> dict:
    return {"metadata": _md(MCP_NS, ["method"], _exact(method))}


def _status_is(code: int) -> dict:
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": "bench.unused"}}}}


def _reply_mapper(status: int, conditions: list[dict], www_authenticate: str, message: str, error: str) -> dict:
    body = {"jsonrpc": "2.0", "id": "%DYNAMIC_METADATA(envoy.filters.http.mcp:id)%",
            "error": {"code": -32003, "message": message, "data": {"error": error}}}
    filt = _status_is(status) if not conditions else {"and_filter": {"filters": [_status_is(status)] + conditions}}
    return {
        "filter": filt,
        "headers_to_add": [{"header": {"key": "www-authenticate", "value": www_authenticate},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "body_format_override": {"json_format": body},
    }


def native(listener_port: int, jwks_port: int, cache: bool = True, cache_size: int = 100, **_: Any) -> dict:
    provider: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "remote_jwks": {"http_uri": {"uri": f"http://127.0.0.1:{jwks_port}/jwks.json", "cluster": "idp_jwks",
                                     "timeout": "2s"},
                        "cache_duration": "600s", "async_fetch": {}},
        "forward": True,
        "clock_skew_seconds": 60,
        "payload_in_metadata": "jwt_payload",
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": cache_size}
    jwt_authn = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": TYPE + "filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/mcp"}, "requires": {"provider_name": "idp"}}],
    }}
    mcp = {"name": "envoy.filters.http.mcp", "typed_config": {
        "@type": TYPE + "filters.http.mcp.v3.Mcp",
        "traffic_mode": "REJECT_NO_MCP",
        "max_request_body_size": MAX_BODY,
        "reject_duplicate_keys": True,
    }}
    policies = {
        f"call-{tool}": {
            "permissions": [{"and_rules": {"rules": [
                _is_method("tools/call"),
                {"metadata": _md(MCP_NS, ["params", "name"], _exact(tool))},
                _scope_holds(scope),
            ]}}],
            "principals": [{"any": True}],
        }
        for tool, scope in TOOL_SCOPES.items()
    }
    policies["other-methods"] = {"permissions": [{"not_rule": _is_method("tools/call")}], "principals": [{"any": True}]}
    rbac = {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": TYPE + "filters.http.rbac.v3.RBAC", "rules": {"action": "ALLOW", "policies": policies}}}
    meta = metadata_url(listener_port)
    mappers = [
        _reply_mapper(403, [{"metadata_filter": {"matcher": _md(MCP_NS, ["params", "name"], _exact(tool)),
                                                 "match_if_key_not_found": False}}],
                      f'Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{meta}"',
                      f"Insufficient scope: requires {scope}", "insufficient_scope")
        for tool, scope in TOOL_SCOPES.items()
    ]
    mappers.append(_reply_mapper(403, [], f'Bearer error="insufficient_scope", resource_metadata="{meta}"',
                                 "Forbidden", "access_denied"))
    mappers.append(_reply_mapper(401, [], f'Bearer resource_metadata="{meta}"', "Unauthorized", "invalid_token"))
    return _bootstrap(listener_port, [jwt_authn, mcp, rbac], {"idp_jwks": jwks_port}, {"mappers": mappers})


# ---- (c), (d) this filter -----------------------------------------------------------------------------

def filter_json(listener_port: int, jwks_port: int, sts_port: int | None = None, refresh_seconds: int = 600,
                token_cache: int | None = None, inspect_mcp: bool = True) -> dict:
    rules: list[dict[str, Any]] = [{"method": "tools/call", "name": t, "scopes": [s]} for t, s in TOOL_SCOPES.items()]
    cfg: dict[str, Any] = {
        "providers": [{
            "name": "idp", "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ALGORITHMS,
            "jwks": {"remote": {"cluster": "idp_jwks", "authority": f"127.0.0.1:{jwks_port}", "path": "/jwks.json",
                                "timeout_ms": 2000, "refresh_interval_seconds": refresh_seconds,
                                "min_refresh_interval_seconds": min(refresh_seconds, 30)}},
            "clock_skew_seconds": 60,
        }],
        "paths": [{"prefix": "/mcp"}],
        "resource_metadata": {"resource": resource_url(listener_port), "authorization_servers": [ISSUER],
                              "scopes_supported": sorted(set(TOOL_SCOPES.values()))},
        "mcp": {"max_body_bytes": MAX_BODY, "unlisted_tools": "deny", "unlisted_methods": "allow", "rules": rules},
    }
    if not inspect_mcp:
        # Still a guarded path (the token is verified), but no MCP endpoint: the body is not read.
        cfg["mcp"]["paths"] = [{"exact": "/mcp-none"}]
    if token_cache is not None:
        cfg["token_cache"] = {"max_entries": token_cache}
    if sts_port is not None:
        rules[0]["credential"] = "tasks-api"
        cfg["upstream_credentials"] = {"default": "passthrough", "cache": {"max_entries": 10000, "margin_seconds": 30},
                                       "targets": {"tasks-api": {
                                           "mode": "rfc8693", "cluster": "sts", "authority": f"127.0.0.1:{sts_port}",
                                           "path": "/token", "audience": "tasks-api", "client_id": STS_CLIENT[0],
                                           "client_secret": STS_CLIENT[1], "client_auth": "basic", "timeout_ms": 2000}}}
    return cfg


def _wasm_filter(wasm: Path, cfg: dict) -> dict:
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": TYPE + "filters.http.wasm.v3.Wasm",
        "config": {
            "name": "mcp_authz", "root_id": "mcp_authz", "allow_on_headers_stop_iteration": True,
            "vm_config": {"vm_id": "mcp_authz", "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(cfg)},
        },
    }}


def mcp_authz(listener_port: int, jwks_port: int, wasm: Path, sts_port: int | None = None, **kw: Any) -> dict:
    cfg = filter_json(listener_port, jwks_port, sts_port=sts_port, **kw)
    clusters = {"idp_jwks": jwks_port}
    if sts_port is not None:
        clusters["sts"] = sts_port
    return _bootstrap(listener_port, [_wasm_filter(wasm, cfg)], clusters)


def builder(name: str, jwks_port: int, wasm: Path, sts_port: int | None = None, **kw: Any) -> Callable[[int], dict]:
    """`name` -> a function of the listener port that returns the bootstrap."""
    if name == "passthrough":
        return lambda port: passthrough(port, jwks_port)
    if name == "native":
        return lambda port: native(port, jwks_port, cache=True, cache_size=kw.get("token_cache") or 100)
    if name == "native_nc":
        return lambda port: native(port, jwks_port, cache=False)
    if name == "filter":
        return lambda port: mcp_authz(port, jwks_port, wasm, **kw)
    if name == "filter_authn":
        return lambda port: mcp_authz(port, jwks_port, wasm, inspect_mcp=False, **kw)
    if name == "exchange":
        if sts_port is None:
            raise ValueError("the exchange config needs the STS port")
        return lambda port: mcp_authz(port, jwks_port, wasm, sts_port=sts_port, **kw)
    raise ValueError(f"unknown config {name!r}")
