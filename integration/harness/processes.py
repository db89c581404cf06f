"""A process as bench/ and soak/ measure it: figures from /proc (memory, CPU time), a sampler of its
resident memory, and the `taskset` prefix that pins a command to CPUs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinned(cpus: str | None) -> list[str]:
    """The prefix that runs a command on `cpus` only (taskset execs it, so the pid stays the command's)."""
    return ["taskset", "-c", cpus] if cpus else []


def proc_status_kib(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/<pid>/status, in KiB: `VmRSS` (resident now), `VmHWM` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5), counted after "(comm)"


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds while the `with` block runs (and once at its
    start): `samples` holds (seconds since the start, KiB). A sample the process cannot give is skipped."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rss-{pid}")
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.monotonic() - self._t0, rss_kib(self.pid)))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
