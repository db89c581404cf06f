"""`make bench`: mcp-authz against Envoy alone and against the native composition users would otherwise
build (jwt_authn + mcp + rbac), all in real Envoy 1.40 on 127.0.0.1, and docs/benchmarks.md from the run.

    .venv/bin/python bench/run.py [--quick] [--out docs/benchmarks.md] [--workdir build/bench]

Envoy (one worker) runs pinned to CPU 0 and the load generators to CPU 1. Configs are interleaved within
every round (A B C D, A B C D, ...) and figures are medians over rounds with their min–max spread."""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import datetime
import http.client
import json
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import machine, wrk
from harness.envoy import REPO, Envoy, envoy_version, validate_config, wasm_path
from harness.keys import make_key, mint, tamper_signature
from harness.processes import cpu_seconds, rss_kib
from harness.servers import JwksServer
from stack.sts import TokenExchangeServer

import configs
import load
import report
from configs import ALLOWED_TOOL, CALL_PATH, LIST_PATH, WORKLOAD_SCOPE, call_body, list_body
from probe import ProbeFailed, probe

TOKEN_LIFETIME = 4 * 3600  # outlives the longest run; the filter and jwt_authn check exp as usual
STS_TTL = 3600  # exchanged tokens stay cached for the whole run: callouts = distinct tokens used


@dataclass
class Plan:
    mode: str
    rounds: int
    seconds: float            # per closed-loop throughput run
    latency_rounds: int
    latency_seconds: float    # per open-loop run
    flood_seconds: float
    leak_requests: int
    pool: int                 # distinct pre-minted tokens per algorithm for the fresh-token workloads
    jwks_window: float        # seconds of traffic while counting JWKS fetches
    jwks_refresh: int
    users: int = 50_000       # distinct valid tokens of the many-users workload
    users_rounds: int = 3
    users_seconds: float = 10
    connections: int = 16     # wrk, closed loop
    latency_clients: int = 10  # h2load, open loop
    flood_connections: int = 4

    @staticmethod
    def make(quick: bool) -> "Plan":
        if quick:
            return Plan("quick", rounds=2, seconds=2, latency_rounds=1, latency_seconds=3, flood_seconds=3,
                        leak_requests=50_000, pool=1500, jwks_window=6, jwks_refresh=2, users=5_000, users_rounds=2,
                        users_seconds=5)
        # Five shorter rounds rather than three longer ones: on a shared VM one disturbed round moves a
        # median of three; the time per config and workload stays ~25 s.
        return Plan("full", rounds=5, seconds=5, latency_rounds=3, latency_seconds=8, flood_seconds=10,
                    leak_requests=1_000_000, pool=3000, jwks_window=12, jwks_refresh=2)


@dataclass
class Workload:
    name: str
    title: str
    path: str
    body: bytes
    alg: str
    fresh: bool
    configs: list[str]


WORKLOADS = [
    Workload("call_rs256", "tools/call, one RS256 token (cached path)", CALL_PATH, call_body(ALLOWED_TOOL), "RS256",
             False, ["passthrough", "native", "native_nc", "filter_authn", "filter", "exchange"]),
    Workload("call_rs256_fresh", "tools/call, a fresh RS256 token per request", CALL_PATH, call_body(ALLOWED_TOOL),
             "RS256", True, ["passthrough", "native", "native_nc", "filter"]),
    Workload("list_rs256", "tools/list (20 tools; mcp-authz trims to 1), one RS256 token", LIST_PATH, list_body(),
             "RS256", False, ["passthrough", "native", "filter"]),
    Workload("call_es256", "tools/call, one ES256 token", CALL_PATH, call_body(ALLOWED_TOOL), "ES256", False,
             ["native", "filter"]),
    Workload("call_es256_fresh", "tools/call, a fresh ES256 token per request", CALL_PATH, call_body(ALLOWED_TOOL),
             "ES256", True, ["native_nc", "filter"]),
    Workload("call_eddsa", "tools/call, one EdDSA token", CALL_PATH, call_body(ALLOWED_TOOL), "EdDSA", False,
             ["native", "filter"]),
    Workload("call_eddsa_fresh", "tools/call, a fresh EdDSA token per request", CALL_PATH, call_body(ALLOWED_TOOL),
             "EdDSA", True, ["native_nc", "filter"]),
]

COUNTERS = (r"^http\.ingress\.downstream_(cx|rq)_total$|jwt_(cache_(hit|miss)|refused_cache_hit)$|jwt_authn\.jwks_fetch_success$"
            r"|mcp_authz\.(jwks_fetch_success|exchange\.ok|allowed|denied)$")


def start_validated(envoy: Envoy) -> Envoy:
    """`envoy --mode validate` on the rendered config, then start it."""
    res = validate_config(envoy.config_path)
    if res.returncode != 0:
        raise SystemExit(f"envoy --mode validate refused {envoy.config_path}:\n{(res.stdout + res.stderr)[-3000:]}")
    return envoy.start()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def counters(envoy: Envoy) -> dict[str, int]:
    return envoy.stats(COUNTERS)


def delta(before: dict[str, int], after: dict[str, int], suffix: str) -> int:
    return sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(suffix))


@dataclass
class Sample:
    workload: str
    config: str
    round: int
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_per_10k: float
    rss_mib: float
    connections: int
    req_per_conn: float
    cache_hits: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    command: str = ""


class Bench:
    def __init__(self, plan: Plan, workdir: Path, cpus: tuple[str | None, str | None]) -> None:
        self.plan = plan
        self.workdir = workdir
        self.envoy_cpus, self.load_cpus = cpus
        self.exit = contextlib.ExitStack()
        self.envoys: dict[str, Envoy] = {}
        self.samples: list[Sample] = []
        self.results: dict = {"plan": asdict(plan), "probes": {}, "commands": {}}
        self.cursor: dict[tuple[str, str], int] = {}  # (config, alg) -> next token index of the pool

    # ---- set-up -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.secrets = self.workdir / "secrets"  # token files for wrk; removed at the end of the run
        self.secrets.mkdir(mode=0o700, exist_ok=True)
        self.exit.callback(shutil.rmtree, self.secrets, True)
        self.keys = {alg: make_key(alg, kid=f"{alg.lower()}-bench") for alg in configs.ALGORITHMS}
        exp = int(time.time()) + TOKEN_LIFETIME
        log(f"minting tokens: {self.plan.pool} fresh per algorithm, forged, probes")
        self.token = {alg: mint(k, scope=WORKLOAD_SCOPE, exp=exp) for alg, k in self.keys.items()}
        self.probe_tokens = {alg: mint(k, scope=WORKLOAD_SCOPE, exp=exp, sub="probe") for alg, k in self.keys.items()}
        self.pool_files: dict[str, Path] = {}
        for alg, key in self.keys.items():
            path = self.secrets / f"fresh-{alg}.txt"
            path.write_text("\n".join(mint(key, scope=WORKLOAD_SCOPE, exp=exp) for _ in range(self.plan.pool)) + "\n")
            self.pool_files[alg] = path
        self.forged = tamper_signature(mint(self.keys["RS256"], scope=WORKLOAD_SCOPE, exp=exp))
        self.bodies = {}
        for w in WORKLOADS:
            p = self.workdir / f"body-{w.name}.json"
            p.write_bytes(w.body)
            self.bodies[w.name] = p

        self.jwks = self.exit.enter_context(JwksServer(list(self.keys.values())))
        self.sts = self.exit.enter_context(TokenExchangeServer(
            subject_issuer=configs.ISSUER, subject_jwks_url=f"http://127.0.0.1:{self.jwks.port}/jwks.json",
            subject_audiences=[configs.AUDIENCE], token_ttl=STS_TTL))
        self.wasm = wasm_path()
        for name in configs.CONFIG_NAMES:
            envoy = Envoy(self.workdir / "envoy", 0, 0, name=name, concurrency=1, cpus=self.envoy_cpus,
                          bootstrap_fn=configs.builder(name, self.jwks.port, self.wasm, sts_port=self.sts.port))
            self.exit.callback(envoy.stop)
            log(f"validating and starting Envoy {name}")
            start_validated(envoy)
            self.envoys[name] = envoy
            self.results["commands"][name] = " ".join(envoy.argv()).replace(str(REPO) + "/", "")

    def probe_all(self) -> None:
        for name, envoy in self.envoys.items():
            rep = probe(name, envoy, self.probe_tokens, self.forged)
            self.results["probes"][name] = rep.checks
            log(f"probe {name}: {len(rep.checks)} checks passed")
        self.sts_after_probe = self.sts.hits_for("/token")

    # ---- closed-loop throughput ----------------------------------------------------------------------------
    def _script(self, w: Workload) -> Path:
        if w.fresh:
            return load.wrk_script(self.secrets / f"wrk-{w.name}.lua", w.path, w.body, tokens_file=self.pool_files[w.alg])
        return load.wrk_script(self.secrets / f"wrk-{w.name}.lua", w.path, w.body, token=self.token[w.alg])

    def throughput_run(self, w: Workload, config: str, rnd: int, seconds: float | None = None) -> Sample:
        envoy = self.envoys[config]
        script = self._script(w)
        start = self.cursor.get((config, w.alg), 0) if w.fresh else 0
        before, cpu0 = counters(envoy), cpu_seconds(envoy.pid)
        res = load.run_wrk(f"{envoy.url}{w.path}", script, seconds or self.plan.seconds, self.plan.connections,
                           self.load_cpus, start=start)
        cpu1, after = cpu_seconds(envoy.pid), counters(envoy)
        if w.fresh:
            self.cursor[(config, w.alg)] = (start + res.requests + self.plan.connections) % self.plan.pool
        cx = delta(before, after, "downstream_cx_total")
        rq = delta(before, after, "downstream_rq_total")
        s = Sample(w.name, config, rnd, res.rps, res.requests, res.non_2xx, res.socket_errors,
                   (cpu1 - cpu0) / max(rq, 1) * 10_000, rss_kib(envoy.pid) / 1024, cx, rq / max(cx, 1),
                   delta(before, after, "jwt_cache_hit"), res.latency_ms,
                   res.command.replace(str(self.workdir) + "/", "$WORKDIR/").replace(str(envoy.listener_port), "$PORT"))
        return s

    def throughput_rounds(self) -> None:
        warm = WORKLOADS[0]
        for config in configs.CONFIG_NAMES:  # JIT, caches and the exchange's one callout before timing
            self.throughput_run(warm, config, -1, seconds=1)
        for rnd in range(self.plan.rounds):
            for w in WORKLOADS:
                for config in w.configs:
                    s = self.throughput_run(w, config, rnd)
                    self.samples.append(s)
                    # wrk opens its connections once; more means a config closed connections (then the
                    # run timed connection set-up), and any error means the config did not answer as probed.
                    ok = s.non_2xx == 0 and s.socket_errors == 0 and s.connections <= self.plan.connections + 2
                    log(f"round {rnd + 1}/{self.plan.rounds} {w.name:17} {config:11} {s.rps:9.0f} req/s  "
                        f"cpu {s.cpu_per_10k:5.2f}s/10k  rss {s.rss_mib:5.0f} MiB  {s.connections} conns  "
                        f"cache hits {s.cache_hits}{'' if ok else '  <-- CHECK: errors or new connections'}")

    # ---- open-loop latency -----------------------------------------------------------------------------
    def latency_rate(self) -> int:
        meds = [load.median([s.rps for s in self.samples if s.workload == "call_rs256" and s.config == c])
                for c in WORKLOADS[0].configs]
        clients = self.plan.latency_clients
        rate = int(min(meds) * 0.5) // (clients * 10) * clients * 10
        return max(rate, clients * 10)

    def latency_rounds(self) -> None:
        rate = self.latency_rate()
        self.results["latency_rate"] = rate
        w = WORKLOADS[0]
        lat = []
        for rnd in range(self.plan.latency_rounds):
            for config in w.configs:
                envoy = self.envoys[config]
                logf = self.workdir / f"h2load-{config}-{rnd}.log"
                before, cpu0 = counters(envoy), cpu_seconds(envoy.pid)
                res = load.run_h2load(f"{envoy.url}{w.path}", self.bodies[w.name], self.token[w.alg], self.load_cpus,
                                      self.plan.latency_clients, rate=rate, seconds=self.plan.latency_seconds,
                                      log_file=logf, timeout=self.plan.latency_seconds + 60)
                cpu1, after = cpu_seconds(envoy.pid), counters(envoy)
                rq = delta(before, after, "downstream_rq_total")
                entry = {"config": config, "round": rnd, "rate": rate, "achieved": res.rps, "done": res.done,
                         "failed": res.failed, "non_2xx": res.done - res.status_2xx, "p50": res.pct(50),
                         "p90": res.pct(90), "p99": res.pct(99), "cpu_per_10k": (cpu1 - cpu0) / max(rq, 1) * 10_000,
                         "rss_mib": rss_kib(envoy.pid) / 1024, "connections": delta(before, after, "downstream_cx_total"),
                         "command": res.command.replace(str(self.workdir) + "/", "$WORKDIR/")
                         .replace(str(envoy.listener_port), "$PORT")}
                lat.append(entry)
                log(f"latency round {rnd + 1} {config:11} at {rate} req/s: achieved {res.rps:.0f}, "
                    f"p50 {entry['p50']:.2f} ms, p99 {entry['p99']:.2f} ms, cpu {entry['cpu_per_10k']:.2f}s/10k")
                logf.unlink(missing_ok=True)
        self.results["latency"] = lat

    # ---- forged-token flood --------------------------------------------------------------------------------
    def flood(self) -> None:
        """Valid traffic at a fixed rate, alone and beside a flood of forged tokens of two kinds: `random`
        (every request a forged token never seen before: one verification each) and `repeated` (the same
        forged token again and again: the filter's refused-token cache answers all but the first)."""
        w = WORKLOADS[0]
        out = []
        scripts = {
            "random": load.wrk_random_forged_script(self.secrets / "wrk-forged-random.lua", CALL_PATH,
                                                    call_body(ALLOWED_TOOL), self.forged),
            "repeated": load.wrk_script(self.secrets / "wrk-forged-repeated.lua", CALL_PATH, call_body(ALLOWED_TOOL),
                                        token=self.forged),
        }
        for config in ("filter", "native"):
            envoy = self.envoys[config]
            fresh = load.median([s.rps for s in self.samples if s.workload == "call_rs256_fresh" and s.config == config])
            cached = load.median([s.rps for s in self.samples if s.workload == "call_rs256" and s.config == config])
            valid_rate = max(self.plan.latency_clients, int(min(cached, fresh) * 0.2) // self.plan.latency_clients
                             * self.plan.latency_clients)
            for kind in ("none", "random", "repeated"):
                logf = self.workdir / f"h2load-flood-{config}-{kind}.log"
                before, cpu0, t0 = counters(envoy), cpu_seconds(envoy.pid), time.monotonic()
                flood = None
                if kind != "none":
                    flood = wrk.Wrk(wrk.argv(f"{envoy.url}{CALL_PATH}", scripts[kind], self.plan.flood_seconds + 2,
                                             self.plan.flood_connections, cpus=self.load_cpus))
                    time.sleep(1)  # the flood is under way before the measured window opens
                res = load.run_h2load(f"{envoy.url}{CALL_PATH}", self.bodies[w.name], self.token[w.alg], self.load_cpus,
                                      self.plan.latency_clients, rate=valid_rate, seconds=self.plan.flood_seconds,
                                      log_file=logf, timeout=self.plan.flood_seconds + 60)
                flood_res = wrk.parse(flood.finish(self.plan.flood_seconds + 60)) if flood else None
                cpu1, elapsed = cpu_seconds(envoy.pid), time.monotonic() - t0
                after = counters(envoy)
                entry = {"config": config, "flood": kind, "flooded": kind != "none", "valid_rate": valid_rate,
                         "achieved": res.rps, "succeeded": res.status_2xx, "done": res.done, "p50": res.pct(50),
                         "p99": res.pct(99),
                         "flood_rps": flood_res.rps if flood_res else 0.0,
                         "flood_non_2xx": flood_res.non_2xx if flood_res else 0,
                         "flood_requests": flood_res.requests if flood_res else 0,
                         "denied": delta(before, after, "mcp_authz.denied"),
                         "verifications": delta(before, after, "mcp_authz.jwt_cache_miss"),
                         "refused_cache_hits": delta(before, after, "jwt_refused_cache_hit"),
                         "cpu_seconds": cpu1 - cpu0, "elapsed": elapsed, "fresh_rps": fresh, "cached_rps": cached}
                out.append(entry)
                log(f"flood {config:7} {kind:8}: valid {res.rps:.0f}/{valid_rate} req/s p50 {entry['p50']:.2f} "
                    f"p99 {entry['p99']:.2f} ms; flood {entry['flood_rps']:.0f} req/s, "
                    f"{entry['verifications']} verifications, {entry['refused_cache_hits']} refused-cache hits")
                logf.unlink(missing_ok=True)
        self.results["flood"] = out

    # ---- many users ----------------------------------------------------------------------------------------
    ZIPF_EXPONENT = 1.1

    def many_users(self) -> None:
        """`plan.users` distinct valid RS256 tokens drawn with a Zipf distribution, both workers busy
        (`--concurrency 2`, not pinned), each config's token cache sized for every user: cache hit rate,
        throughput, CPU, and memory per cached token, the two configs alternating round by round."""
        users = self.plan.users
        log(f"many users: minting {users} RS256 tokens")
        exp = int(time.time()) + TOKEN_LIFETIME
        tokens_file = self.secrets / "users.txt"
        with tokens_file.open("w") as f:
            for i in range(users):
                f.write(mint(self.keys["RS256"], scope=WORKLOAD_SCOPE, exp=exp, sub=f"user-{i}") + "\n")
        script = load.wrk_zipf_script(self.secrets / "wrk-zipf.lua", CALL_PATH, call_body(ALLOWED_TOOL), tokens_file,
                                      self.ZIPF_EXPONENT)
        connections = 32
        envoys = {}
        for config in ("filter", "native"):
            envoy = Envoy(self.workdir / "envoy", 0, 0, name=f"{config}-users", concurrency=2,
                          bootstrap_fn=configs.builder(config, self.jwks.port, self.wasm, token_cache=users))
            self.exit.callback(envoy.stop)
            start_validated(envoy)
            envoys[config] = envoy
        out = {"users": users, "exponent": self.ZIPF_EXPONENT, "workers": 2, "connections": connections, "rounds": []}
        rss0 = {c: rss_kib(e.pid) for c, e in envoys.items()}
        for rnd in range(self.plan.users_rounds):
            for config, envoy in envoys.items():
                before, cpu0 = counters(envoy), cpu_seconds(envoy.pid)
                res = wrk.run(wrk.argv(f"{envoy.url}{CALL_PATH}", script, self.plan.users_seconds, connections,
                                       threads=2, args=(rnd,)), self.plan.users_seconds)
                cpu1, after = cpu_seconds(envoy.pid), counters(envoy)
                hits, misses = delta(before, after, "jwt_cache_hit"), delta(before, after, "jwt_cache_miss")
                entry = {"config": config, "round": rnd, "rps": res.rps, "requests": res.requests,
                         "non_2xx": res.non_2xx, "hits": hits, "misses": misses,
                         "hit_rate": hits / max(hits + misses, 1),
                         "cpu_per_10k": (cpu1 - cpu0) / max(res.requests, 1) * 10_000,
                         "rss_kib": rss_kib(envoy.pid), "verifications_total": delta({}, after, "jwt_cache_miss")}
                out["rounds"].append(entry)
                log(f"many users round {rnd + 1} {config:7}: {res.rps:8.0f} req/s, hit rate {entry['hit_rate']:.3f}, "
                    f"cpu {entry['cpu_per_10k']:.2f}s/10k, rss {entry['rss_kib'] / 1024:.0f} MiB, non-2xx {res.non_2xx}")
        out["shared_cache"] = self.shared_cache_estimate(
            users, sum(e["requests"] for e in out["rounds"] if e["config"] == "filter"))
        for config, envoy in envoys.items():
            last = [e for e in out["rounds"] if e["config"] == config][-1]
            # Every verification made an entry (the caches hold every user): memory per cached token.
            out[f"{config}_kib_per_token"] = (last["rss_kib"] - rss0[config]) / max(last["verifications_total"], 1)
            envoy.stop()
        tokens_file.unlink()
        self.results["many_users"] = out

    def shared_cache_estimate(self, users: int, requests: int, workers: int = 2) -> dict:
        """What a verified-token cache shared by the workers would have saved on this workload: the same
        Zipf draws, each request to a random worker, counting first sightings per worker (what per-worker
        caches verify) against first sightings overall (what a shared cache would verify)."""
        rng = random.Random(1)
        cum, total = [], 0.0
        for k in range(1, users + 1):
            total += 1 / k ** self.ZIPF_EXPONENT
            cum.append(total)
        draws = rng.choices(range(users), cum_weights=cum, k=requests)
        per_worker = [set() for _ in range(workers)]
        for user in draws:
            per_worker[rng.randrange(workers)].add(user)
        separate = sum(len(seen) for seen in per_worker)
        shared = len(set(draws))
        return {"requests": requests, "verifications_per_worker_caches": separate,
                "verifications_shared_cache": shared, "saved": separate - shared}

    # ---- RSS over many requests ------------------------------------------------------------------------
    def leak_check(self) -> None:
        envoy = self.envoys["filter"]
        w = WORKLOADS[0]
        load.run_h2load(f"{envoy.url}{w.path}", self.bodies[w.name], self.token[w.alg], self.load_cpus,
                        self.plan.connections, count=20_000, timeout=300)
        rss0 = rss_kib(envoy.pid) / 1024
        t0 = time.monotonic()
        res = load.run_h2load(f"{envoy.url}{w.path}", self.bodies[w.name], self.token[w.alg], self.load_cpus,
                              self.plan.connections, count=self.plan.leak_requests, timeout=1800)
        rss1 = rss_kib(envoy.pid) / 1024
        self.results["leak"] = {"config": "filter", "requests": self.plan.leak_requests, "succeeded": res.status_2xx,
                                "rss_before": rss0, "rss_after": rss1, "growth_pct": (rss1 - rss0) / rss0 * 100,
                                "seconds": time.monotonic() - t0,
                                "command": res.command.replace(str(self.workdir) + "/", "$WORKDIR/")
                                .replace(str(envoy.listener_port), "$PORT")}
        log(f"leak check: RSS {rss0:.1f} -> {rss1:.1f} MiB over {res.status_2xx} requests")

    # ---- callout counts at --concurrency 4 ---------------------------------------------------------------
    def jwks_fetches(self) -> None:
        """JWKS fetches per refresh with 4 workers: this filter and, for reference, native jwt_authn."""
        plan = self.plan
        out = {}
        with contextlib.ExitStack() as es:
            servers, envoys = {}, {}
            for name in ("filter", "native"):
                servers[name] = es.enter_context(JwksServer(list(self.keys.values())))
                port = servers[name].port
                if name == "filter":
                    fn = lambda lp, port=port: configs.mcp_authz(lp, port, self.wasm, refresh_seconds=plan.jwks_refresh)  # noqa: E731
                else:
                    def fn(lp, port=port):
                        b = configs.native(lp, port, cache=True)
                        prov = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
                            "http_filters"][0]["typed_config"]["providers"]["idp"]
                        prov["remote_jwks"]["cache_duration"] = f"{plan.jwks_refresh}s"
                        return b
                envoys[name] = Envoy(self.workdir / "envoy", 0, 0, name=f"jwks-{name}-c4", concurrency=4, bootstrap_fn=fn)
                es.callback(envoys[name].stop)
                start_validated(envoys[name])
            # Traffic on every worker for the whole window: many connections at a low rate.
            t0 = {n: (time.monotonic(), servers[n].hits) for n in envoys}
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                futs = {n: pool.submit(load.run_h2load, f"{envoys[n].url}{CALL_PATH}", self.bodies["call_rs256"],
                                       self.token["RS256"], None, 16, rate=160, seconds=plan.jwks_window,
                                       timeout=plan.jwks_window + 60) for n in envoys}
                done = {n: f.result() for n, f in futs.items()}
            for n, envoy in envoys.items():
                elapsed = time.monotonic() - t0[n][0]
                hits = servers[n].hits
                out[n] = {"fetches_total": hits, "fetches_in_window": hits - t0[n][1], "window_s": elapsed,
                          "refresh_s": plan.jwks_refresh, "refreshes": elapsed / plan.jwks_refresh,
                          "requests_ok": done[n].status_2xx, "requests": done[n].done,
                          "metric": envoy.metric("mcp_authz.jwks_fetch_success") if n == "filter" else
                          envoy.stats(r"jwt_authn\.jwks_fetch_success$").get("http.ingress.jwt_authn.jwks_fetch_success")}
                log(f"JWKS {n} --concurrency 4: {out[n]['fetches_in_window']} fetches in {elapsed:.1f}s "
                    f"(refresh every {plan.jwks_refresh}s), {done[n].status_2xx}/{done[n].done} requests ok")
        self.results["jwks"] = out

    def exchange_burst(self) -> None:
        """Concurrent burst through 4 workers: STS callouts per (token, target)."""
        tokens = [mint(self.keys["ES256"], scope=WORKLOAD_SCOPE, sub=f"burst-{i}", exp=int(time.time()) + 3600)
                  for i in range(4)]
        per_token = 16
        sts = self.sts
        envoy = Envoy(self.workdir / "envoy", 0, 0, name="exchange-c4", concurrency=4,
                      bootstrap_fn=configs.builder("exchange", self.jwks.port, self.wasm, sts_port=sts.port))
        bursts = []
        try:
            start_validated(envoy)
            sts.set_default(("delay", 0.3))  # callouts overlap the whole burst
            for burst in range(2):
                before = sts.hits_for("/token")

                def one(tok):
                    conn = http.client.HTTPConnection("127.0.0.1", envoy.listener_port, timeout=20)
                    try:
                        conn.request("POST", CALL_PATH, body=call_body(ALLOWED_TOOL), headers={
                            "content-type": "application/json", "accept": load.ACCEPT, "authorization": f"Bearer {tok}"})
                        return conn.getresponse().status
                    finally:
                        conn.close()

                with concurrent.futures.ThreadPoolExecutor(len(tokens) * per_token) as pool:
                    statuses = list(pool.map(one, [t for t in tokens for _ in range(per_token)]))
                bursts.append({"requests": len(statuses), "ok": statuses.count(200),
                               "callouts": sts.hits_for("/token") - before})
                log(f"exchange burst {burst + 1} at --concurrency 4: {len(tokens)} tokens x {per_token} concurrent, "
                    f"{statuses.count(200)}/{len(statuses)} ok, {bursts[-1]['callouts']} STS callouts")
        finally:
            sts.set_default("ok")
            envoy.stop()
        self.results["burst"] = {"tokens": len(tokens), "per_token": per_token, "workers": 4, "bursts": bursts}

    def run(self) -> None:
        self.setup()
        self.probe_all()
        self.throughput_rounds()
        self.latency_rounds()
        self.flood()
        self.many_users()
        exchange_tokens = 3 + 1  # probe tokens (3 algorithms) + the workload's RS256 token
        self.results["exchange_main"] = {"callouts": self.sts.hits_for("/token"), "distinct_tokens": exchange_tokens}
        self.leak_check()
        self.jwks_fetches()
        self.exchange_burst()
        self.results["samples"] = [asdict(s) for s in self.samples]

    def close(self) -> None:
        self.exit.close()


def machine_info(envoy_cpus, load_cpus) -> dict:
    return {
        "cpu": machine.cpu_model(), "cores": machine.cores(), "kernel": machine.kernel(),
        "virt": machine.hypervisor(), "envoy": envoy_version(),
        "rustc": machine.version_line(["rustc", "--version"]), "wrk": wrk.version(),
        "h2load": machine.version_line(["h2load", "--version"]), "python": sys.version.split()[0],
        "load_avg_start": os.getloadavg(), "envoy_cpus": envoy_cpus, "load_cpus": load_cpus,
        "commit": machine.git_commit(), "dirty": machine.git_changed(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (~3 min) to check the harness; figures are rough")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--workdir", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--render-only", action="store_true", help="rewrite --out from the last run's results.json")
    args = ap.parse_args()
    if args.render_only:
        args.out.write_text(report.render(json.loads((args.workdir / "results.json").read_text()), WORKLOADS))
        return 0
    for tool in ("wrk", "h2load", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: `make bench` installs wrk and nghttp2-client (h2load)")
    plan = Plan.make(args.quick)
    cpus = ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)
    # SIGTERM stops every process this run started (Envoys have PDEATHSIG, servers are threads).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    info = machine_info(*cpus)
    bench = Bench(plan, args.workdir.resolve(), cpus)
    atexit.register(bench.close)
    try:
        bench.run()
    except ProbeFailed as e:
        print(f"ABORTED: a config does not enforce the rule, so nothing is timed: {e}", file=sys.stderr)
        return 2
    finally:
        bench.close()
    info["load_avg_end"] = os.getloadavg()
    info["duration_s"] = time.monotonic() - started
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["wasm_bytes"] = wasm_path().stat().st_size
    bench.results["machine"] = info
    (args.workdir / "results.json").write_text(json.dumps(bench.results, indent=1, default=str))
    args.out.write_text(report.render(bench.results, WORKLOADS))
    log(f"wrote {args.out} and {args.workdir / 'results.json'} in {info['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
