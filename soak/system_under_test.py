"""What the soak loads: one Envoy with the filter (two workers), the JWKS server and the RFC 8693 token
exchange server (with a JWKS server of its own, so the filter's JWKS server counts only the filter's
fetches). The MCP server is played by Envoy: direct_response routes (the filter runs before the router,
so it sees those requests and their responses like any other), and for the exchange route a second
listener in the same Envoy that answers 200 only when the request carries a token issued by the
exchange server (500 otherwise)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from harness.envoy import Envoy, filter_config, remote_jwks
from harness.keys import AUDIENCE, ISSUER
from harness.ports import free_port
from harness.servers import JwksServer
from stack.sts import TokenExchangeServer

from traffic import PATHS

CONCURRENCY = 2  # Envoy workers: also exercises what the filter shares across workers (JWKS, stats)
STS_TOKEN_TTL = 3600  # exchanged tokens outlive a bounded run: one exchange per token and worker
CACHE_MARGIN = 30  # upstream_credentials.cache.margin_seconds
JWKS_REFRESH = 300  # refresh_interval_seconds: a long run refreshes its keys under load

# The upstream's answers (Envoy direct_response). The list is what an MCP server would return; the filter
# must trim it to the tools the caller may call.
CALL_RESULT = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"soak-ok"}]}}'
EXCHANGED_RESULT = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"soak-exchanged-ok"}]}}'
TOOLS = ["getTasks", "createTask", "syncTasks", "whoami", "admin_reset"]
TOOLS_LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
    {"name": t, "description": f"{t} tool", "inputSchema": {"type": "object"}} for t in TOOLS]}},
    separators=(",", ":"))

RULES = [
    {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"]},
    {"method": "tools/call", "name": "createTask", "scopes": ["write:tasks"]},
    {"method": "tools/call", "name": "syncTasks", "scopes": ["read:tasks"], "credential": "tasks-api"},
    {"method": "tools/call", "name": "whoami"},
    {"method": "tools/call", "name": "admin_reset", "action": "deny"},
]


def json_header(name: str, value: str) -> dict:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def direct(status: int, body: str) -> dict:
    return {"status": status, "body": {"inline_string": body}}


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def upstream_listener(port: int, exchanged_prefix: str) -> dict:
    """Stands in for the MCP server behind the exchange route: 200 only for a token the exchange server
    issued (its JWS header is fixed by its key), 500 for anything else, such as the client's own token."""
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": "authorization",
                                                "string_match": {"prefix": f"Bearer {exchanged_prefix}."}}]},
         "direct_response": direct(200, EXCHANGED_RESULT),
         "response_headers_to_add": [json_header("content-type", "application/json")]},
        {"match": {"prefix": "/"},
         "direct_response": direct(500, "the upstream received a credential other than an exchanged token")},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "soak_upstream",
        "route_config": {"name": "upstream", "virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": routes}]},
        "http_filters": [ROUTER],
    }
    return {"name": "soak_upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def soak_routes() -> list[dict]:
    content_type = [json_header("content-type", "application/json")]
    return [
        {"match": {"prefix": PATHS["exchange"]}, "route": {"cluster": "mcp_upstream", "timeout": "20s"}},
        {"match": {"prefix": PATHS["list"]}, "direct_response": direct(200, TOOLS_LIST),
         "response_headers_to_add": content_type},
        {"match": {"prefix": "/"}, "direct_response": direct(200, CALL_RESULT), "response_headers_to_add": content_type},
    ]


class SoakEnvoy(Envoy):
    """The harness's Envoy (listener -> filter -> router), with the soak's routes and the stand-in upstream
    as a second listener (the harness's `mcp_upstream` cluster points at it)."""

    def __init__(self, workdir: Path, jwks_port: int, sts_port: int, exchanged_prefix: str, log_level: str) -> None:
        upstream_port = free_port()
        super().__init__(workdir, upstream_port=upstream_port, jwks_port=jwks_port, filter_cfg=soak_filter_config(jwks_port, sts_port),
                         concurrency=CONCURRENCY, log_level=log_level, name="envoy-soak", extra_clusters={"sts": sts_port})
        cfg = json.loads(self.config_path.read_text())
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"][0]["routes"] = soak_routes()
        cfg["static_resources"]["listeners"].append(upstream_listener(upstream_port, exchanged_prefix))
        self.config_path.write_text(json.dumps(cfg, indent=2))


def soak_filter_config(jwks_port: int, sts_port: int):
    def configure(listener_port: int) -> dict:
        cfg = filter_config(jwks_port, listener_port)
        remote_jwks(cfg)["refresh_interval_seconds"] = JWKS_REFRESH
        cfg["upstream_credentials"] = {"cache": {"margin_seconds": CACHE_MARGIN}, "targets": {"tasks-api": {
            "mode": "rfc8693", "cluster": "sts", "authority": f"127.0.0.1:{sts_port}", "path": "/token",
            "audience": "tasks-api", "client_id": "mcp-gateway", "client_secret": "demo-secret",
            "client_auth": "basic", "timeout_ms": 2000}}}
        cfg["mcp"] = {"rules": RULES}
        return cfg
    return configure


@contextlib.contextmanager
def servers(keys: list) -> Iterator[tuple[JwksServer, TokenExchangeServer]]:
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer(keys))
        sts_jwks = es.enter_context(JwksServer(keys))  # the exchange server's own, so `jwks` counts the filter's
        sts = es.enter_context(TokenExchangeServer(subject_issuer=ISSUER,
                                                   subject_jwks_url=f"http://127.0.0.1:{sts_jwks.port}/jwks.json",
                                                   subject_audiences=[AUDIENCE], token_ttl=STS_TOKEN_TTL))
        yield jwks, sts

