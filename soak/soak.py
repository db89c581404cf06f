#!/usr/bin/env python3
"""`make soak`: a bounded loopback load through one real Envoy with the filter, then checks that nothing
crashed, nothing leaked and the counters add up; writes the report (docs/soak.md by default).

What runs, all on 127.0.0.1: Envoy from .venv (integration/harness/envoy.py) with build/mcp_authz.wasm;
the JWKS server (harness/servers.py); the project's RFC 8693 token exchange server (stack/sts.py) with a
JWKS server of its own, so the filter's JWKS server counts only the filter's fetches. The MCP server is
played by Envoy: direct_response routes (the filter runs before the router, so it sees those requests and
their responses like any other), and for the exchange route a second listener in the same Envoy that
answers 200 only when the request carries a token issued by the exchange server (500 otherwise).

wrk (soak/soak.lua) cycles a fixed, pre-built list of requests, one connection per wrk thread, so every
response is matched to its request's category. A warm-up pass comes first; the measured pass follows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from harness import machine, wrk
from harness.envoy import REPO, Envoy, envoy_version, filter_config, remote_jwks, wasm_path
from harness.keys import AUDIENCE, ISSUER, b64url, make_key, mint, tamper_signature
from harness.ports import free_port
from harness.processes import RssSampler, rss_kib
from harness.servers import JwksServer
from harness.wrk import lua_string, lua_value
from stack.sts import TokenExchangeServer

LUA = Path(__file__).with_name("soak.lua")
CONCURRENCY = 2  # Envoy workers: also exercises what the filter shares across workers (JWKS, stats)
TOKEN_LIFETIME = 4 * 3600  # valid tokens outlive any bounded run
STS_TOKEN_TTL = 3600  # exchanged tokens too: one exchange per token and worker for the whole run
CACHE_MARGIN = 30  # upstream_credentials.cache.margin_seconds
JWKS_REFRESH = 300  # refresh_interval_seconds: a long run refreshes its keys under load
FRESH_POOL = 4000  # > 2 x the default token cache (1000 per worker), so these keep missing it (FIFO)
RSS_GROWTH_LIMIT = 0.05
RSS_SAMPLE_SECONDS = 2.0
KEPT_LOG = REPO / "build" / "soak-envoy.log"  # kept when the soak fails

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
READER_SCOPE = "read:tasks"


@dataclasses.dataclass(frozen=True)
class Category:
    """One kind of request in the mix, what the client must see, and what the filter must count."""

    name: str
    weight: int  # entries per 100 of the request cycle
    description: str
    status: int
    where: str  # "body" or the response header the markers are looked for in
    contains: tuple[str, ...]
    absent: tuple[str, ...] = ()
    allowed: bool = False  # counted in mcp_authz.allowed (else mcp_authz.denied)
    reason: str | None = None  # mcp_authz.denied.<reason>
    mcp: str | None = None  # mcp_authz.mcp.<mcp>
    has_token: bool = True  # carries a token, so the filter looks it up in its token cache
    never_cached: bool = False  # an invalid token: always a cache miss (verification or parse)


CATEGORIES = [
    Category("allowed", 30, "tools/call getTasks, reader token (4 tokens, cached)", 200, "body", ("soak-ok",),
             allowed=True, mcp="allowed.tools_call.getTasks"),
    Category("denied_scope", 8, "tools/call createTask, reader token lacks write:tasks", 403, "www-authenticate",
             ('error="insufficient_scope"', 'scope="write:tasks"'), reason="insufficient_scope",
             mcp="denied.tools_call.createTask"),
    Category("list", 10, "tools/list, reader token; the upstream lists 5 tools", 200, "body",
             ('"getTasks"', '"syncTasks"', '"whoami"'), ('"createTask"', '"admin_reset"'),
             allowed=True, mcp="allowed.tools_list"),
    Category("no_token", 6, "tools/call without Authorization", 401, "www-authenticate",
             ("resource_metadata=",), ("error=",), reason="missing_token", has_token=False),
    Category("forged", 3, "signature tampered (ES256, RS256, EdDSA)", 401, "www-authenticate",
             ('error_description="invalid signature"',), reason="bad_signature", never_cached=True),
    Category("expired", 3, "expired an hour ago, validly signed (ES256, RS256, EdDSA)", 401, "www-authenticate",
             ('error_description="token expired"',), reason="expired", never_cached=True),
    Category("malformed", 6, "not a JWS (4 spellings)", 401, "www-authenticate",
             ('error_description="malformed token"',), reason="malformed", never_cached=True),
    Category("exchange", 30, "tools/call syncTasks: RFC 8693 exchange (4 tokens), upstream checks the new token",
             200, "body", ("soak-exchanged-ok",), allowed=True, mcp="allowed.tools_call.syncTasks"),
    Category("fresh", 4, f"tools/call getTasks, a pool of {FRESH_POOL} valid tokens (RS256, ES256, EdDSA) "
             "that keep missing the token cache", 200, "body", ("soak-ok",), allowed=True,
             mcp="allowed.tools_call.getTasks"),
]
CATEGORY_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}
PATHS = {c.name: f"/mcp/{c.name}" for c in CATEGORIES}


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


def call_body(tool: str, request_id: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": {}}}, separators=(",", ":"))


def list_body(request_id: int = 1) -> str:
    """The id is the one in TOOLS_LIST: the filter trims only the answer to the list request it saw."""
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}, separators=(",", ":"))


def http_request(port: int, path: str, body: str, token: str | None) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             "Accept: application/json, text/event-stream", f"Content-Length: {len(body.encode())}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


@dataclasses.dataclass
class Tokens:
    readers: list[str]
    exchangers: list[str]
    forged: list[str]
    expired: list[str]
    malformed: list[str]
    fresh: list[str]


def make_tokens(keys: dict[str, Any]) -> Tokens:
    now = int(time.time())
    valid = {"exp": now + TOKEN_LIFETIME, "scope": READER_SCOPE}
    algs = ["ES256", "RS256", "EdDSA"]
    return Tokens(
        readers=[mint(keys["ES256"], sub=f"reader-{i}", **valid) for i in range(4)],
        exchangers=[mint(keys["ES256"], sub=f"exchanger-{i}", **valid) for i in range(4)],
        forged=[tamper_signature(mint(keys[a], sub="forger", **valid)) for a in algs],
        expired=[mint(keys[a], sub="late", scope=READER_SCOPE, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
                 for a in algs],
        malformed=["not-a-jwt", "abc.def", "@@@.@@@.@@@", f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'sig')}"],
        fresh=[mint(keys[algs[i % 3]], sub=f"fresh-{i}", **valid) for i in range(FRESH_POOL)],
    )


def build_cycle(port: int, tokens: Tokens, seed: int = 7) -> list[dict]:
    """The fixed request cycle: 10 x weight entries per category, shuffled with a fixed seed."""
    variants = {
        "allowed": [(call_body("getTasks", 1), t) for t in tokens.readers],
        "denied_scope": [(call_body("createTask", 2), t) for t in tokens.readers],
        "list": [(list_body(), t) for t in tokens.readers],
        "no_token": [(call_body("getTasks", 4), None)],
        "forged": [(call_body("getTasks", 5), t) for t in tokens.forged],
        "expired": [(call_body("getTasks", 6), t) for t in tokens.expired],
        "malformed": [(call_body("getTasks", 7), t) for t in tokens.malformed],
        "exchange": [(call_body("syncTasks", 8), t) for t in tokens.exchangers],
    }
    cycle = []
    for cat in CATEGORIES:
        for i in range(cat.weight * 10):
            entry: dict[str, Any] = {"cat": CATEGORY_INDEX[cat.name] + 1}  # Lua indexes from 1
            if cat.name == "fresh":
                entry["fresh"] = True
            else:
                body, token = variants[cat.name][i % len(variants[cat.name])]
                entry["raw"] = http_request(port, PATHS[cat.name], body, token)
            cycle.append(entry)
    random.Random(seed).shuffle(cycle)
    return cycle


def write_lua_data(path: Path, port: int, tokens: Tokens) -> None:
    categories = [{"name": c.name, "status": c.status, "where": c.where, "contains": list(c.contains),
                   "absent": list(c.absent)} for c in CATEGORIES]
    fresh = [http_request(port, PATHS["fresh"], call_body("getTasks", 9), t) for t in tokens.fresh]
    with open(path, "w") as f:
        f.write("return {\ncategories=" + lua_value(categories) + ",\n")
        f.write("requests={\n" + ",\n".join(lua_value(e) for e in build_cycle(port, tokens)) + "},\n")
        f.write("fresh={\n" + ",\n".join(lua_string(r) for r in fresh) + "}\n}\n")
    os.chmod(path, 0o600)  # holds tokens (short-lived, test keys; deleted with the run directory)


# ---------------------------------------------------------------------------------------------------
# Envoy
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# One wrk pass
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pass:
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, int]
    issued: int  # request() calls, including wrk's one check call that sends nothing
    received: int
    counts: dict[tuple[str, int, str], int]  # (category, status, ok|bad) -> responses

    @property
    def throughput(self) -> float:
        return self.received / self.duration_s if self.duration_s else 0.0

    @property
    def by_cat(self) -> dict[str, int]:
        out = {c.name: 0 for c in CATEGORIES}
        for (cat, _, _), n in self.counts.items():
            out[cat] = out.get(cat, 0) + n
        return out

    def bad(self) -> dict[tuple[str, int], int]:
        return {(c, s): n for (c, s, v), n in self.counts.items() if v == "bad"}


def run_pass(url: str, data: Path, workdir: Path, requests: int, connections: int, max_seconds: int,
             name: str, fresh_offset: int = 0) -> Pass:
    """One pass: `requests` requests over `connections` connections, bounded by `max_seconds`.
    `fresh_offset`: fresh-pool entries each thread skips (those the previous pass used are cached)."""
    result = workdir / f"{name}.result"
    markers = workdir / f"{name}.done"
    markers.mkdir()
    argv = wrk.argv(url, LUA, max_seconds, connections, threads=connections, timeout="10s",
                    args=(data, requests, connections, result, markers, fresh_offset))
    started = time.time()
    load = wrk.Wrk(argv, cwd=workdir)
    deadline = time.monotonic() + max_seconds
    # Every thread leaves a marker when it has its last response; wrk itself would sleep out -d.
    while len(list(markers.iterdir())) < connections and load.running and time.monotonic() < deadline:
        time.sleep(0.1)
    finished = [m.stat().st_mtime for m in markers.iterdir()]
    load.interrupt()
    output = load.finish(60)
    if not result.exists():
        raise RuntimeError(f"wrk wrote no result (exit {load.proc.returncode}):\n{output}")
    if len(finished) < connections:
        print(f"soak: {name}: only {len(finished)} of {connections} wrk threads finished within {max_seconds} s",
              file=sys.stderr)
    duration = (max(finished) - started) if finished else float(max_seconds)
    return parse_result(requests, duration, result.read_text())


def parse_result(requests: int, duration_s: float, text: str) -> Pass:
    issued = received = 0
    errors: dict[str, int] = {}
    latency: dict[str, int] = {}
    counts: dict[tuple[str, int, str], int] = {}
    for line in text.splitlines():
        f = line.split()
        if f[0] == "errors":
            errors = dict(zip(("connect", "read", "write", "timeout"), map(int, f[1:5])))
        elif f[0] == "latency":
            latency = dict(zip(("p50", "p90", "p99", "p99.9", "max", "mean"), map(int, f[1:7])))
        elif f[0] == "thread":
            issued += int(f[2])
            received += int(f[3])
        elif f[0] == "count":
            key = (f[1], int(f[2]), f[3])
            counts[key] = counts.get(key, 0) + int(f[4])
    return Pass(requests, duration_s, errors, latency, issued, received, counts)


# ---------------------------------------------------------------------------------------------------
# Observations and checks
# ---------------------------------------------------------------------------------------------------

FILTER_PREFIX = "wasmcustom.mcp_authz."
ENVOY_STATS = [
    "http.ingress.downstream_rq_total", "http.ingress.downstream_rq_2xx", "http.ingress.downstream_rq_4xx",
    "http.ingress.downstream_rq_5xx", "http.ingress.downstream_cx_total", "http.ingress.downstream_rq_active",
    "http.soak_upstream.downstream_rq_total", "cluster.sts.upstream_rq_total", "cluster.idp_jwks.upstream_rq_total",
    "server.memory_allocated", "server.memory_heap_size", "server.total_connections",
    "wasm.envoy.wasm.runtime.v8.created", "wasm.envoy.wasm.runtime.v8.active",
]


@dataclasses.dataclass
class Snapshot:
    label: str
    pid: int
    rss_kib: int
    stats: dict[str, int]
    sts_exchanges: int
    jwks_hits: int
    at: float  # time.monotonic()

    def filter(self, name: str) -> int:
        return self.stats.get(FILTER_PREFIX + name, 0)


def snapshot(label: str, envoy: Envoy, sts: TokenExchangeServer, jwks: JwksServer) -> Snapshot:
    pid = envoy.proc.pid
    return Snapshot(label, pid, rss_kib(pid), envoy.stats(), sts.hits_for("/token"), jwks.hits, time.monotonic())


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.results.append((name, bool(ok), detail))

    def equal(self, name: str, got: int, want: int) -> None:
        self.check(name, got == want, f"{got} (expected {want})")

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def check_pass(checks: Checks, label: str, p: Pass, before: Snapshot, after: Snapshot) -> None:
    """What the client saw and what Envoy and the filter counted must agree, category by category."""
    checks.equal(f"{label}: responses received = requests", p.received, p.requests)
    checks.check(f"{label}: request() calls without a response <= 1 (wrk's check call)", p.issued - p.received <= 1,
                 f"{p.issued - p.received}")
    checks.equal(f"{label}: wrk socket errors and timeouts", sum(p.errors.values()), 0)
    bad = p.bad()
    checks.check(f"{label}: every response as expected for its category", not bad,
                 "none unexpected" if not bad else ", ".join(f"{c}:{s} x{n}" for (c, s), n in sorted(bad.items())))

    def delta(name: str) -> int:
        return after.stats.get(name, 0) - before.stats.get(name, 0)

    def fdelta(name: str) -> int:
        return after.filter(name) - before.filter(name)

    by = p.by_cat
    checks.equal(f"{label}: Envoy downstream_rq_total delta = responses", delta("http.ingress.downstream_rq_total"),
                 p.received)
    for klass in (2, 4, 5):
        want = sum(n for c, n in by.items() if CATEGORIES[CATEGORY_INDEX[c]].status // 100 == klass)
        checks.equal(f"{label}: Envoy downstream_rq_{klass}xx delta", delta(f"http.ingress.downstream_rq_{klass}xx"), want)
    checks.equal(f"{label}: stand-in upstream requests = exchange requests",
                 delta("http.soak_upstream.downstream_rq_total"), by["exchange"])
    checks.equal(f"{label}: mcp_authz.allowed delta", fdelta("allowed"),
                 sum(by[c.name] for c in CATEGORIES if c.allowed))
    checks.equal(f"{label}: mcp_authz.denied delta", fdelta("denied"),
                 sum(by[c.name] for c in CATEGORIES if not c.allowed))
    reasons: dict[str, int] = {}
    mcp: dict[str, int] = {}
    for c in CATEGORIES:
        if c.reason:
            reasons[c.reason] = reasons.get(c.reason, 0) + by[c.name]
        if c.mcp:
            mcp[c.mcp] = mcp.get(c.mcp, 0) + by[c.name]
    check_family(checks, label, "denied.", reasons, before, after)
    check_family(checks, label, "mcp.", mcp, before, after)
    with_token = sum(by[c.name] for c in CATEGORIES if c.has_token)
    checks.equal(f"{label}: jwt_cache_hit + jwt_cache_miss = requests with a token",
                 fdelta("jwt_cache_hit") + fdelta("jwt_cache_miss"), with_token)
    invalid = sum(by[c.name] for c in CATEGORIES if c.never_cached)
    checks.check(f"{label}: jwt_cache_miss >= invalid-token requests", fdelta("jwt_cache_miss") >= invalid,
                 f"{fdelta('jwt_cache_miss')} >= {invalid}")
    checks.equal(f"{label}: held_for_keys delta", fdelta("held_for_keys"), 0)
    checks.equal(f"{label}: exchange.cache_hit + exchange.cache_miss = exchange requests",
                 fdelta("exchange.cache_hit") + fdelta("exchange.cache_miss"), by["exchange"])
    checks.equal(f"{label}: exchange.ok delta = exchange server's token requests", fdelta("exchange.ok"),
                 after.sts_exchanges - before.sts_exchanges)
    failed = sum(after.stats[n] - before.stats.get(n, 0) for n in after.stats if n.startswith(FILTER_PREFIX + "exchange.failed"))
    checks.equal(f"{label}: exchange.failed.* delta", failed, 0)


def check_family(checks: Checks, label: str, family: str, expected: dict[str, int], before: Snapshot,
                 after: Snapshot) -> None:
    """Each expected counter of `mcp_authz.<family>*` moved by exactly its amount, and no other one moved."""
    for key, want in sorted(expected.items()):
        checks.equal(f"{label}: mcp_authz.{family}{key} delta", after.filter(family + key) - before.filter(family + key), want)
    prefix = FILTER_PREFIX + family
    others = {n[len(prefix):]: after.stats[n] - before.stats.get(n, 0) for n in after.stats
              if n.startswith(prefix) and n[len(prefix):] not in expected}
    moved = {k: v for k, v in others.items() if v}
    checks.check(f"{label}: no other mcp_authz.{family}* counter moved ({len(others)} defined)", not moved,
                 "none moved" if not moved else ", ".join(f"{k} +{v}" for k, v in sorted(moved.items())))


def check_run(checks: Checks, envoy: Envoy, start: Snapshot, before: Snapshot, after: Snapshot, exchange_tokens: int) -> None:
    checks.equal("Envoy PID unchanged (no restart)", after.pid, start.pid)
    checks.check("Envoy still running", envoy.running, "running" if envoy.running else "exited")
    ready = admin_ready(envoy)
    checks.check("admin /ready", ready == "LIVE", repr(ready))
    checks.equal("Wasm VMs created after start-up", after.stats.get("wasm.envoy.wasm.runtime.v8.created", 0),
                 start.stats.get("wasm.envoy.wasm.runtime.v8.created", 0))
    growth = (after.rss_kib - before.rss_kib) / before.rss_kib
    checks.check(f"RSS growth after warm-up < {RSS_GROWTH_LIMIT:.0%}", growth < RSS_GROWTH_LIMIT,
                 f"{before.rss_kib} KiB -> {after.rss_kib} KiB ({growth:+.2%})")
    elapsed = after.at - start.at
    ttls = 1 + int(elapsed // (STS_TOKEN_TTL - CACHE_MARGIN))
    bound = CONCURRENCY * exchange_tokens * ttls
    checks.check("token exchanges <= workers x tokens x TTLs elapsed (single flight, cached)",
                 0 < after.sts_exchanges <= bound, f"{after.sts_exchanges} <= {CONCURRENCY} x {exchange_tokens} x {ttls}")
    fetches = after.filter("jwks_fetch_success") + after.filter("jwks_fetch_failed")
    checks.equal("JWKS server requests = filter's JWKS fetches", after.jwks_hits, fetches)
    refreshes = 1 + int(elapsed // JWKS_REFRESH)
    checks.check("JWKS fetches <= 1 + one per refresh interval (one per process, not per worker)",
                 0 < after.jwks_hits <= refreshes, f"{after.jwks_hits} <= {refreshes} ({elapsed:.0f} s, refresh {JWKS_REFRESH} s)")
    checks.equal("jwks_fetch_failed", after.filter("jwks_fetch_failed"), 0)
    log = envoy.log_text()
    bad_lines = [ln for ln in log.splitlines() if re.search(r"\[(critical|error)\]|panicked|Caught signal", ln)]
    checks.check("Envoy log: no error, critical or crash lines", not bad_lines,
                 "none" if not bad_lines else f"{len(bad_lines)}, first: {bad_lines[0][:200]}")


def admin_ready(envoy: Envoy) -> str:
    try:
        return envoy.admin_get("/ready").strip()
    except OSError as e:
        return f"error: {e}"


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def fmt(n: int | float) -> str:
    return f"{n:,}".replace(",", " ") if isinstance(n, int) else f"{n:,.1f}".replace(",", " ")


def render_report(ctx: dict) -> str:
    warm: Pass = ctx["warm"]
    main: Pass = ctx["main"]
    start: Snapshot = ctx["start"]
    before: Snapshot = ctx["before"]
    after: Snapshot = ctx["after"]
    checks: Checks = ctx["checks"]
    m = ctx["machine"]
    verdict = "PASS" if checks.passed else "FAIL"
    failed = [r for r in checks.results if not r[1]]
    out = [
        "# Soak test",
        "",
        "<!-- Generated by soak/soak.py (`make soak`); edit the script, not this file. -->",
        "",
        f"**Verdict: {verdict}** — {fmt(main.requests)} requests after a warm-up of {fmt(warm.requests)}, "
        f"{len(checks.results) - len(failed)}/{len(checks.results)} checks passed.",
        "",
        "A bounded load over loopback through one real Envoy with the filter: mixed valid, refused and "
        "token-exchange requests, then checks that Envoy did not crash or restart, its memory did not grow "
        "once warm, and every counter — the client's per-category statuses, Envoy's own request stats, the "
        "filter's `mcp_authz.*` counters, the exchange server's and JWKS server's request counts — adds up. "
        "It is not a benchmark (see `make bench`): throughput here is that of a shared 2-core machine "
        "running the load generator, Envoy and the test servers at once, with the filter logging every "
        "refusal at `info`.",
        "",
        "## Run",
        "",
        "```",
        ctx["command"],
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| date | {ctx['date']} |",
        f"| machine | {m['os']}, {m['cpu']}, {m['cores']} cores, {m['memory']} |",
        f"| Envoy | {ctx['envoy_version']}, `--concurrency {CONCURRENCY}`, log level `{ctx['log_level']}` |",
        f"| filter | `build/mcp_authz.wasm` sha256 {ctx['wasm_sha']} from commit {ctx['commit']} |",
        f"| load | {ctx['wrk_version']}, {ctx['connections']} connections (one per thread), closed loop |",
        f"| duration | {main.duration_s:.1f} s measured (+ {warm.duration_s:.1f} s warm-up) |",
        f"| Envoy log | {fmt(ctx['log_lines'])} lines, {ctx['log_bytes'] / 1e6:.1f} MB over the run (refusals are logged) |",
        f"| throughput | {fmt(round(main.throughput))} requests/s |",
        f"| latency (measured pass) | p50 {main.latency_us['p50'] / 1000:.2f} ms, p99 {main.latency_us['p99'] / 1000:.2f} ms, "
        f"p99.9 {main.latency_us['p99.9'] / 1000:.2f} ms, max {main.latency_us['max'] / 1000:.1f} ms |",
        "",
        "## Request mix",
        "",
        "A fixed cycle of 1 000 requests (10 × weight per category, shuffled with a fixed seed); each wrk "
        "thread walks it from its own offset. All requests are MCP `POST`s to `/mcp/<category>`: the "
        "category is in the path, and with one connection per thread each response is matched to its "
        "request, so statuses and answers are checked per category.",
        "",
        "| category | share | request | expected answer | measured: sent | as expected |",
        "|---|---|---|---|---|---|",
    ]
    for c in CATEGORIES:
        expect = f"{c.status}, {c.where} has " + ", ".join(f"`{s}`" for s in c.contains)
        if c.absent:
            expect += ", lacks " + ", ".join(f"`{s}`" for s in c.absent)
        ok = sum(n for (cat, _, v), n in main.counts.items() if cat == c.name and v == "ok")
        out.append(f"| {c.name} | {c.weight} % | {c.description} | {expect} | {fmt(main.by_cat[c.name])} "
                   f"| {fmt(ok)} |")
    unexpected = main.bad()
    out += ["", "Unexpected responses in the measured pass: " +
            ("none." if not unexpected else ", ".join(f"{c} → {s} × {n}" for (c, s), n in sorted(unexpected.items())))]
    out += [
        "",
        "## Memory",
        "",
        "| point | Envoy VmRSS | `server.memory_allocated` |",
        "|---|---|---|",
    ]
    for snap, label in ((start, "after start-up"), (before, "after warm-up (baseline)"), (after, "after the measured pass")):
        out.append(f"| {label} | {fmt(snap.rss_kib)} KiB | {fmt(snap.stats.get('server.memory_allocated', 0))} B |")
    growth = (after.rss_kib - before.rss_kib) / before.rss_kib
    samples = ctx["rss_samples"]
    if samples:
        lo, hi = min(s for _, s in samples), max(s for _, s in samples)
        out += ["", f"RSS growth over the measured pass: {growth:+.2%} (limit {RSS_GROWTH_LIMIT:.0%}). "
                f"Sampled every {RSS_SAMPLE_SECONDS:.0f} s during it ({len(samples)} samples): min {fmt(lo)} KiB, "
                f"max {fmt(hi)} KiB; by tenths of the pass:", "",
                " → ".join(f"{fmt(s)}" for s in decimate(samples, 11)) + " KiB"]
    out += [
        "",
        "## Counters",
        "",
        "Deltas are over the measured pass (baseline taken after the warm-up); `wasmcustom.` prefix omitted.",
        "",
        "| counter | after warm-up | after | delta |",
        "|---|---|---|---|",
    ]
    names = sorted(n for n in set(before.stats) | set(after.stats) if n.startswith(FILTER_PREFIX))
    for n in names + [s for s in ENVOY_STATS if s in after.stats]:
        b, a = before.stats.get(n, 0), after.stats.get(n, 0)
        if a == 0 and b == 0:
            continue
        label = n[len("wasmcustom."):] if n.startswith("wasmcustom.") else n
        out.append(f"| `{label}` | {fmt(b)} | {fmt(a)} | {fmt(a - b)} |")
    for label, b, a in (("exchange server: `POST /token` requests", before.sts_exchanges, after.sts_exchanges),
                        ("JWKS server: requests", before.jwks_hits, after.jwks_hits)):
        out.append(f"| {label} | {fmt(b)} | {fmt(a)} | {fmt(a - b)} |")
    invalid = sum(main.by_cat[c.name] for c in CATEGORIES if c.never_cached)
    misses = after.filter("jwt_cache_miss") - before.filter("jwt_cache_miss")
    out += [
        "",
        f"Token exchanges over the whole run: {after.sts_exchanges} (exchange server `/token` requests; at most "
        f"one per exchange token and worker: {ctx['exchange_tokens']} tokens × {CONCURRENCY} workers). "
        f"JWKS fetches over the whole run: {after.jwks_hits}.",
        f"Signature verifications of valid tokens in the measured pass (cache misses minus invalid tokens): "
        f"{fmt(misses - invalid)}, for {fmt(main.by_cat['fresh'])} `fresh` requests.",
        "",
        "## Checks",
        "",
        "| check | result | |",
        "|---|---|---|",
    ]
    for name, ok, detail in checks.results:
        out.append(f"| {name} | {'ok' if ok else '**FAILED**'} | {detail} |")
    out += ["", f"**Verdict: {verdict}**", ""]
    return "\n".join(out)


def decimate(samples: list[tuple[float, int]], points: int) -> list[int]:
    if len(samples) <= points:
        return [s for _, s in samples]
    return [samples[round(i * (len(samples) - 1) / (points - 1))][1] for i in range(points)]


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(keys: list) -> Iterator[tuple[JwksServer, TokenExchangeServer]]:
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer(keys))
        sts_jwks = es.enter_context(JwksServer(keys))  # the exchange server's own, so `jwks` counts the filter's
        sts = es.enter_context(TokenExchangeServer(subject_issuer=ISSUER,
                                                   subject_jwks_url=f"http://127.0.0.1:{sts_jwks.port}/jwks.json",
                                                   subject_audiences=[AUDIENCE], token_ttl=STS_TOKEN_TTL))
        yield jwks, sts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests in the measured pass")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests (default: 10%%, at least 10 000)")
    parser.add_argument("--connections", type=int, default=8, help="wrk threads, one connection each")
    parser.add_argument("--log-level", default="info", help="Envoy log level (the filter logs refusals at info)")
    parser.add_argument("--report", default="", help="write the Markdown report here (e.g. docs/soak.md)")
    parser.add_argument("--min-rate", type=int, default=300,
                        help="each pass is bounded in time: 60 s + requests / this rate")
    args = parser.parse_args()
    if args.requests < 10 * args.connections:
        parser.error("--requests must be at least 10 x --connections")
    warmup = args.warmup if args.warmup is not None else max(args.requests // 10, 10_000)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (make soak installs it with apt-get)")
    command = "make soak" + ("" if args.requests == 1_000_000 else f" SOAK_REQUESTS={args.requests}")

    ctx = run(args, warmup)
    ctx["command"] = command
    print_summary(ctx)
    if args.report:
        Path(args.report).write_text(render_report(ctx))
        print(f"soak: report written to {args.report}")
    return 0 if ctx["checks"].passed else 1


def machine_info() -> dict[str, str]:
    return {"os": machine.system(), "cpu": machine.cpu_model(), "cores": str(machine.cores()),
            "memory": machine.memory()}


def commit() -> str:
    changed = machine.git_changed("src", "Cargo.toml", "Cargo.lock")
    return machine.git_commit() + (" (with uncommitted changes to src/)" if changed else "")


def run(args: argparse.Namespace, warmup: int) -> dict:
    """Starts everything, runs both passes, checks; returns what the summary and the report need."""
    keys = {alg: make_key(alg, kid=f"soak-{alg.lower()}") for alg in ("ES256", "RS256", "EdDSA")}
    print(f"soak: minting tokens ({FRESH_POOL} fresh)...", flush=True)
    tokens = make_tokens(keys)
    bound = lambda n: 60 + n // args.min_rate  # noqa: E731  (seconds a pass of n requests may take)
    with tempfile.TemporaryDirectory(prefix="mcp-authz-soak-") as tmp, servers(list(keys.values())) as (jwks, sts):
        workdir = Path(tmp)
        exchanged_prefix = sts.key.sign({}).split(".")[0]  # the JWS header of every token the server issues
        envoy = SoakEnvoy(workdir, jwks.port, sts.port, exchanged_prefix, args.log_level)
        data = workdir / "requests.lua"
        write_lua_data(data, envoy.listener_port, tokens)
        passed = False
        try:
            envoy.start()
            if not jwks.wait_for_hits(1, timeout=30) or not envoy.wait_for(
                    lambda: (envoy.metric("mcp_authz.jwks_fetch_success") or 0) >= 1, timeout=30):
                raise RuntimeError("the filter did not load its JWKS within 30 s")
            start = snapshot("start", envoy, sts, jwks)
            print(f"soak: Envoy pid {start.pid} ready, RSS {start.rss_kib} KiB; warm-up: {warmup} requests", flush=True)
            warm = run_pass(envoy.url, data, workdir, warmup, args.connections, bound(warmup), "warmup")
            before = snapshot("before", envoy, sts, jwks)
            print(f"soak: warm-up done in {warm.duration_s:.1f} s, RSS {before.rss_kib} KiB; "
                  f"measured pass: {args.requests} requests", flush=True)
            with RssSampler(start.pid, RSS_SAMPLE_SECONDS) as sampler:
                main_pass = run_pass(envoy.url, data, workdir, args.requests, args.connections, bound(args.requests),
                                     "main", fresh_offset=-(-warm.by_cat["fresh"] // args.connections))
            envoy.wait_for(lambda: envoy.active_requests() == 0, timeout=10)
            after = snapshot("after", envoy, sts, jwks)
            checks = Checks()
            check_pass(checks, "warm-up", warm, start, before)
            check_pass(checks, "measured", main_pass, before, after)
            check_run(checks, envoy, start, before, after, len(tokens.exchangers))
            passed = checks.passed
            return {
                "warm": warm, "main": main_pass, "start": start, "before": before, "after": after, "checks": checks,
                "machine": machine_info(), "date": datetime.date.today().isoformat(),
                "envoy_version": envoy_version(), "log_level": args.log_level,
                "wasm_sha": hashlib.sha256(wasm_path().read_bytes()).hexdigest()[:16], "commit": commit(),
                "wrk_version": wrk.version(), "connections": args.connections, "rss_samples": sampler.samples,
                "exchange_tokens": len(tokens.exchangers),
                "log_bytes": envoy.log_path.stat().st_size, "log_lines": envoy.log_text().count("\n"),
            }
        finally:
            envoy.stop()
            if not passed and envoy.log_path.exists():
                # Refusals are logged with token fingerprints only, never tokens.
                KEPT_LOG.parent.mkdir(exist_ok=True)
                shutil.copyfile(envoy.log_path, KEPT_LOG)
                print(f"soak: Envoy's log is in {KEPT_LOG.relative_to(REPO)}", file=sys.stderr)


def print_summary(ctx: dict) -> None:
    main_pass: Pass = ctx["main"]
    before: Snapshot = ctx["before"]
    after: Snapshot = ctx["after"]
    checks: Checks = ctx["checks"]
    print(f"\nmeasured pass: {main_pass.received} responses in {main_pass.duration_s:.1f} s "
          f"({main_pass.throughput:.0f}/s), p99 {main_pass.latency_us['p99'] / 1000:.2f} ms")
    print(f"Envoy RSS: {ctx['start'].rss_kib} KiB at start, {before.rss_kib} KiB after warm-up, "
          f"{after.rss_kib} KiB after ({(after.rss_kib - before.rss_kib) / before.rss_kib:+.2%})")
    for name, ok, detail in checks.results:
        if not ok or os.environ.get("SOAK_VERBOSE"):
            print(f"  [{'ok' if ok else 'FAILED'}] {name}: {detail}")
    failed = sum(1 for r in checks.results if not r[1])
    print(f"{len(checks.results) - failed} passed, {failed} failed")
    print("soak: PASS" if checks.passed else "soak: FAIL")


if __name__ == "__main__":
    sys.exit(main())
