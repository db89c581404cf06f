"""The soak's traffic: the request mix (categories, what each must be answered), the tokens, the fixed
request cycle written as the Lua data file soak.lua reads, and one wrk pass over it (run, bounded, and
its result file read)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from harness import wrk
from harness.keys import b64url, mint, tamper_signature
from harness.wrk import lua_string, lua_value

LUA = Path(__file__).with_name("soak.lua")
TOKEN_LIFETIME = 4 * 3600  # valid tokens outlive any bounded run
FRESH_POOL = 4000  # > 2 x the default token cache (1000 per worker), so these keep missing it (FIFO)
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

