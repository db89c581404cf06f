"""Load generators (wrk: closed loop, h2load: open loop at a fixed rate) and Envoy's process figures.

Every subprocess has a timeout. Tokens reach wrk through a script file in the run's private work
directory and h2load through `-H`; the commands recorded for the report show `$TOKEN` instead."""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness.envoy import proc_status_kib  # bench/run.py puts integration/ on sys.path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ACCEPT = "application/json, text/event-stream"


def pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def lua_string(s: str) -> str:
    # A Lua long bracket cannot be closed by JSON or a JWT (neither contains "]==]").
    return "[==[" + s + "]==]"


# ---- Envoy's process ----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5), counted after "(comm)"


def rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmRSS") / 1024


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


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50", "90", "99"
    command: str = ""


def _to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"unparseable wrk latency {value!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    seconds = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {p: _to_ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    return WrkResult(int(m.group(1)), seconds, float(rps.group(1)), int(non2xx.group(1)) if non2xx else 0,
                     sum(int(x) for x in sock.groups()) if sock else 0, lat)


def run_wrk(url: str, script: Path, seconds: float, connections: int, cpus: str | None, start: int = 0,
            shown: str | None = None) -> WrkResult:
    argv = pin(cpus) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url,
                        "--", str(start)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = parse_wrk(proc.stdout)
    result.command = shown or shlex.join(argv)
    return result


def start_wrk(url: str, script: Path, seconds: float, connections: int, cpus: str | None, out: Path) -> subprocess.Popen:
    """wrk in the background (the forged-token flood); `finish_wrk` collects it."""
    argv = pin(cpus) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    return subprocess.Popen(argv, stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def finish_wrk(proc: subprocess.Popen, out: Path, timeout: float) -> WrkResult:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError("wrk did not finish in time")
    return parse_wrk(out.read_text())


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
    argv = pin(cpus) + ["h2load", "--h1", "-t1", f"-c{clients}", "-d", str(body_file),
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
