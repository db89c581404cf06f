"""Paired A/B of filter builds (or any bench configs): Envoy CPU per request on the cached-token tools/call.

    .venv/bin/python bench/compare.py [--rounds 12] [--seconds 2] NAME=CONFIG[:WASM] ...

CONFIG is a `bench/configs.py` name (passthrough, native, filter_authn, filter, ...); WASM defaults to
build/mcp_authz.wasm. Example, a change against the last commit's build:

    .venv/bin/python bench/compare.py old=filter:/tmp/old.wasm new=filter native=native

Why paired, and not `make bench`: on a shared VM the CPU one request costs drifts by ±20 % over minutes,
more than most changes move it. Here every variant's Envoy stays up (one worker, pinned to CPU 1; wrk on
CPU 0), and each round times all of them back to back in short runs, alternating the order, so a drift
hits all variants of a round alike. Reported: the minimum and median of each variant's Envoy CPU per
request, and the median of its per-round ratio to the first variant. Start two copies of the same build
(`a=filter b=filter`) to see the noise floor of the day: a difference smaller than theirs is not one.
Nothing here is a test; see docs/performance-notes.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.envoy import DEFAULT_WASM, Envoy
from harness.keys import AUDIENCE, ISSUER, make_key, mint
from harness.processes import cpu_seconds
from harness.servers import JwksServer

import configs
import load


def parse_variant(spec: str) -> tuple[str, str, Path]:
    name, sep, rest = spec.partition("=")
    config, _, wasm = rest.partition(":")
    if not sep or not name or config not in configs.CONFIG_NAMES:
        raise SystemExit(f"bad variant {spec!r}: NAME=CONFIG[:WASM], CONFIG one of {', '.join(configs.CONFIG_NAMES)}")
    path = Path(wasm) if wasm else DEFAULT_WASM
    if not path.is_file():
        raise SystemExit(f"variant {name}: no such .wasm: {path}")
    return name, config, path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    if len({n for n, _, _ in variants}) != len(variants):
        raise SystemExit("variant names must differ")

    key = make_key("RS256", kid="compare")
    token = mint(key, scope="read:tasks write:tasks", iss=ISSUER, aud=AUDIENCE, exp=int(time.time()) + 7200)
    work = Path(tempfile.mkdtemp(prefix="mcp-authz-compare-"))
    script = load.wrk_script(work / "call.lua", "/mcp", configs.call_body("getTasks"), token=token)
    envoys: dict[str, Envoy] = {}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    with JwksServer([key]) as jwks:
        try:
            for name, config, wasm in variants:
                envoy = Envoy(work / name, upstream_port=1, jwks_port=jwks.port, name=name, cpus="1",
                              bootstrap_fn=configs.builder(config, jwks.port, wasm))
                envoy.start()
                envoys[name] = envoy
                load.run_wrk(envoy.url + "/mcp", script, 1, 16, "0")  # JIT, caches, connections
            for rnd in range(args.rounds):
                order = list(envoys) if rnd % 2 == 0 else list(envoys)[::-1]
                row = {}
                for name in order:
                    envoy = envoys[name]
                    before = cpu_seconds(envoy.pid)
                    res = load.run_wrk(envoy.url + "/mcp", script, args.seconds, 16, "0")
                    spent = cpu_seconds(envoy.pid) - before
                    if res.non_2xx or res.socket_errors or not res.requests:
                        raise SystemExit(f"{name}: {res.non_2xx} non-2xx, {res.socket_errors} socket errors")
                    row[name] = spent / res.requests * 1e6
                first = row[variants[0][0]]
                for name, us in row.items():
                    samples[name].append((us, us / first))
                print(f"round {rnd + 1}: " + "  ".join(f"{n} {us:.1f}" for n, us in row.items()), flush=True)
        finally:
            for envoy in envoys.values():
                envoy.stop()
    print(f"\n{'variant':12} {'min µs':>8} {'median µs':>10} {'median ratio to ' + variants[0][0]:>22}")
    for name, rows in samples.items():
        us = [u for u, _ in rows]
        print(f"{name:12} {min(us):8.1f} {statistics.median(us):10.1f} {statistics.median(r for _, r in rows):22.3f}")


if __name__ == "__main__":
    main()
