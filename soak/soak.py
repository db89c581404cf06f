#!/usr/bin/env python3
"""`make soak`: a bounded loopback load through one real Envoy with the filter, then checks that nothing
crashed, nothing leaked and the counters add up; writes the report (docs/soak.md by default).

What runs, all on 127.0.0.1 (system_under_test.py): Envoy from .venv with build/mcp_authz.wasm, the
harness's JWKS server and the project's RFC 8693 token exchange server; Envoy itself plays the MCP server.
wrk (soak/soak.lua) cycles a fixed, pre-built list of requests (traffic.py), one connection per wrk
thread, so every response is matched to its request's category. A warm-up pass comes first; the
measured pass follows; then checks.py checks and report.py reports.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from harness import machine, wrk
from harness.envoy import REPO, envoy_version, wasm_path
from harness.keys import make_key
from harness.processes import RssSampler

from checks import RSS_SAMPLE_SECONDS, Checks, check_pass, check_run, snapshot
from report import print_summary, render_report
from system_under_test import SoakEnvoy, servers
from traffic import FRESH_POOL, make_tokens, run_pass, write_lua_data

KEPT_LOG = REPO / "build" / "soak-envoy.log"  # kept when the soak fails


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




if __name__ == "__main__":
    sys.exit(main())
