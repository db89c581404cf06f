"""wrk, the closed-loop load generator of bench/ and soak/: its command line, string quoting for the Lua
scripts it runs, running it (to the end, or in the background until it is interrupted) with a timeout,
and reading its summary."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .machine import version_line
from .processes import pinned


def version() -> str:
    """e.g. "wrk debian/4.1.0-3+b2 [epoll]"."""
    return version_line(["wrk", "--version"])


# ---- Lua -------------------------------------------------------------------------------------------


def lua_string(s: str) -> str:
    """A Lua string literal of `s` (UTF-8): printable ASCII as is, every other byte as a decimal escape."""
    out = ['"']
    for byte in s.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def lua_value(v: Any) -> str:
    """A Lua literal of a bool, int, str, list/tuple (a sequence) or dict with name keys (a record)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return lua_string(v)
    if isinstance(v, (list, tuple)):
        return "{" + ",".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={lua_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


# ---- running it ------------------------------------------------------------------------------------


def argv(url: str, script: Path, seconds: float, connections: int, *, threads: int = 1, latency: bool = False,
         timeout: str | None = None, cpus: str | None = None, args: tuple = ()) -> list[str]:
    """wrk's command line; `args` go to the script's init(); `cpus` pins wrk with taskset."""
    out = pinned(cpus) + ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"]
    out += ["--latency"] if latency else []
    out += ["--timeout", timeout] if timeout else []
    out += ["-s", str(script), url]
    return out + (["--", *map(str, args)] if args else [])


class Wrk:
    """wrk running in the background; `finish` collects what it printed."""

    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                     stdin=subprocess.DEVNULL)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def interrupt(self) -> None:
        """SIGINT: wrk stops its threads, runs the script's done() and prints its summary."""
        if self.running:
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float) -> str:
        """wrk's output once it exits; killed, and an error, if it is still running after `timeout` s."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=30)
            raise RuntimeError(f"wrk did not finish within {timeout:g} s") from None
        return out


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


def parse(out: str) -> WrkResult:
    """wrk's summary (with `--latency`, its percentiles too)."""
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


def run(argv: list[str], seconds: float) -> WrkResult:
    """wrk to the end (a `-d seconds` run, allowed a minute more), its summary read."""
    wrk = Wrk(argv)
    out = wrk.finish(seconds + 60)
    if wrk.proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.proc.returncode}): {out[-2000:]}")
    result = parse(out)
    result.command = shlex.join(argv)
    return result
