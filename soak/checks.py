"""The soak's checks: snapshots of what Envoy, the filter and the servers counted, and the checks that
they add up with what the client saw, that nothing crashed or restarted and that memory did not grow."""

from __future__ import annotations

import dataclasses
import re
import time

from harness.envoy import Envoy
from harness.processes import rss_kib
from harness.servers import JwksServer
from stack.sts import TokenExchangeServer

from system_under_test import CACHE_MARGIN, CONCURRENCY, JWKS_REFRESH, STS_TOKEN_TTL
from traffic import CATEGORIES, CATEGORY_INDEX, Pass

RSS_GROWTH_LIMIT = 0.05
RSS_SAMPLE_SECONDS = 2.0

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
    # A token refused before for a lasting reason is refused again from the refused-token cache.
    refused_again = fdelta("jwt_refused_cache_hit")
    checks.equal(f"{label}: jwt_cache_hit + jwt_cache_miss + jwt_refused_cache_hit = requests with a token",
                 fdelta("jwt_cache_hit") + fdelta("jwt_cache_miss") + refused_again, with_token)
    invalid = sum(by[c.name] for c in CATEGORIES if c.never_cached)
    checks.check(f"{label}: jwt_cache_miss + jwt_refused_cache_hit >= invalid-token requests",
                 fdelta("jwt_cache_miss") + refused_again >= invalid,
                 f"{fdelta('jwt_cache_miss')} + {refused_again} >= {invalid}")
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

