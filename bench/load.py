"""bench's load: wrk (closed loop; harness/wrk.py runs it) with the benchmark's Lua scripts, and h2load
(open loop at a fixed rate).

Every subprocess has a timeout. Tokens reach wrk through a script file in the run's private work
directory and h2load through `-H`; the commands recorded for the report show `$TOKEN` instead."""

from __future__ import annotations

import re
import shlex
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import wrk
from harness.processes import pinned
from harness.wrk import lua_string

ACCEPT = "application/json, text/event-stream"


# ---- wrk (closed loop) --------------------------------------------------------------------------------

def wrk_script(path: Path, url_path: str, body: bytes, tokens_file: Path | None = None, token: str | None = None) -> Path:
    """A wrk Lua script posting `body` to `url_path` with MCP headers and one bearer token, or a token per
    request taken in order from `tokens_file` (one per line), starting at the index given as the script's
    first argument, so consecutive runs continue the cycle instead of repeating recently seen tokens."""
    headers = f'["Content-Type"] = "application/json", ["Accept"] = "{ACCEPT}"'
    if tokens_file is None:
        auth = f'wrk.headers["Authorization"] = "Bearer " .. {lua_string(token or "")}\n' if token else ""
        text = (f'wrk.method = "POST"\nwrk.path = {lua_string(url_path)}\nwrk.body = {lua_string(body.decode())}\n'
                f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Accept"] = "{ACCEPT}"\n{auth}')
    else:
        text = f"""
local tokens = {{}}
for line in io.lines({lua_string(str(tokens_file))}) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local reqs = {{}}
local i = 0
function init(args)
  for k = 1, #tokens do
    reqs[k] = wrk.format("POST", {lua_string(url_path)},
      {{{headers}, ["Authorization"] = "Bearer " .. tokens[k]}}, {lua_string(body.decode())})
  end
  i = (tonumber(args[1]) or 0) % #reqs
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
"""
    path.write_text(text)
    path.chmod(0o600)
    return path


def wrk_random_forged_script(path: Path, url_path: str, body: bytes, token: str) -> Path:
    """A wrk Lua script posting `body` with `token` whose signature has 40 characters in its middle
    replaced by random base64url characters on every request: each request carries a forged token never
    seen before, so no cache (positive or negative) can answer it without a verification."""
    header_payload, _, signature = token.rpartition(".")
    cut = max(0, len(signature) // 2 - 20)
    text = f"""
local prefix = {lua_string(header_payload + "." + signature[:cut])}
local suffix = {lua_string(signature[cut + 40:])}
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local body = {lua_string(body.decode())}
function init(args)
  math.randomseed(os.time() + (tonumber(args[1]) or 0))
end
function request()
  local middle = {{}}
  for k = 1, 40 do
    local n = math.random(1, 64)
    middle[k] = alphabet:sub(n, n)
  end
  return wrk.format("POST", {lua_string(url_path)},
    {{["Content-Type"] = "application/json", ["Accept"] = "{ACCEPT}",
      ["Authorization"] = "Bearer " .. prefix .. table.concat(middle) .. suffix}}, body)
end
"""
    path.write_text(text)
    path.chmod(0o600)
    return path


def wrk_zipf_script(path: Path, url_path: str, body: bytes, tokens_file: Path, exponent: float) -> Path:
    """A wrk Lua script posting `body` with one of the tokens of `tokens_file` per request, user k (1-based
    rank) drawn with probability proportional to 1 / k^exponent (Zipf): a few users send most requests,
    a long tail sends few. Requests are formatted in init(), where wrk has set the Host header."""
    text = f"""
local tokens = {{}}
for line in io.lines({lua_string(str(tokens_file))}) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local reqs, cdf = {{}}, {{}}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)  -- each thread its own random sequence
end
function init(args)
  math.randomseed(os.time() * 100 + (tonumber(args[1]) or 0) * 10 + (tid or 0))
  local total = 0
  for k = 1, #tokens do
    total = total + 1 / (k ^ {exponent})
    cdf[k] = total
    reqs[k] = wrk.format("POST", {lua_string(url_path)},
      {{["Content-Type"] = "application/json", ["Accept"] = "{ACCEPT}", ["Authorization"] = "Bearer " .. tokens[k]}},
      {lua_string(body.decode())})
  end
  for k = 1, #cdf do cdf[k] = cdf[k] / total end
end
function request()
  local u, lo, hi = math.random(), 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return reqs[lo]
end
"""
    path.write_text(text)
    path.chmod(0o600)
    return path


def run_wrk(url: str, script: Path, seconds: float, connections: int, cpus: str | None, start: int = 0) -> wrk.WrkResult:
    """One closed-loop run: one wrk thread, `connections` connections, latency percentiles; `start` goes to
    the script (where a token pool starts)."""
    return wrk.run(wrk.argv(url, script, seconds, connections, latency=True, cpus=cpus, args=(start,)), seconds)


# ---- h2load (open loop at a fixed rate, or a fixed count) ---------------------------------------------

@dataclass
class H2Result:
    done: int
    succeeded: int
    failed: int
    seconds: float
    rps: float
    status_2xx: int
    latencies_ms: list[float] = field(default_factory=list)
    command: str = ""

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(round(p / 100 * (len(data) - 1))))]


def parse_h2load(out: str) -> H2Result:
    fin = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not fin or not req:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    seconds = float(fin.group(1)) * (0.001 if fin.group(2) == "ms" else 1.0)
    return H2Result(int(req.group(3)), int(req.group(4)), int(req.group(5)), seconds, float(fin.group(3)),
                    int(st.group(1)) if st else 0)


def run_h2load(url: str, body_file: Path, token: str | None, cpus: str | None, clients: int,
               rate: int | None = None, seconds: float | None = None, count: int | None = None,
               log_file: Path | None = None, timeout: float = 600) -> H2Result:
    """`rate` total requests/s spread over `clients` connections (h2load's --rps is per client) for
    `seconds`, or `count` requests as fast as they go (closed loop)."""
    argv = pinned(cpus) + ["h2load", "--h1", "-t1", f"-c{clients}", "-d", str(body_file),
                        "-H", "content-type: application/json", "-H", f"accept: {ACCEPT}"]
    if token:
        argv += ["-H", f"authorization: Bearer {token}"]
    if rate is not None:
        argv += [f"--rps={max(1, rate // clients)}"]
    if seconds is not None:
        argv += ["-D", f"{seconds:g}"]
    if count is not None:
        argv += ["-n", str(count)]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    argv.append(url)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
    result = parse_h2load(proc.stdout)
    if log_file is not None and log_file.exists():
        lat = []
        for line in log_file.read_text().splitlines():
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1].startswith("2"):
                lat.append(int(cols[2]) / 1000)
        result.latencies_ms = lat
    shown = [a if not a.startswith("authorization: Bearer ") else "authorization: Bearer $TOKEN" for a in argv]
    result.command = shlex.join(shown)
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
