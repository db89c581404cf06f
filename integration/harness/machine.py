"""What bench/ and soak/ report about where they ran: the machine (system, CPU, cores, memory,
hypervisor), a tool's version line, and the checkout (commit, local changes)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

from .envoy import REPO


def command_output(argv: list[str], timeout: float = 30) -> str:
    """A command's stdout and stderr, stripped; "unavailable (...)" when it cannot run."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable ({e})"


def version_line(argv: list[str]) -> str:
    """The first line a `--version` command prints, without a trailing copyright notice."""
    lines = command_output(argv).splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "unknown"


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or "unknown"


def memory() -> str:
    """Total memory, e.g. "24 GiB"."""
    total = _proc_field("/proc/meminfo", "MemTotal")
    return f"{int(total.split()[0]) / 1024 / 1024:.0f} GiB" if total else "unknown"


def hypervisor() -> str:
    """The hypervisor's vendor as lscpu names it (e.g. "KVM"); "" on bare metal."""
    lscpu = command_output(["lscpu"])
    return next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Hypervisor vendor")),
                "")


def system() -> str:
    """e.g. "Linux 6.18.44 x86_64"."""
    return f"{platform.system()} {platform.release()} {platform.machine()}"


def kernel() -> str:
    return platform.release()


def cores() -> int:
    return os.cpu_count() or 1


def git_commit() -> str:
    out = command_output(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    return out if out and " " not in out else "unknown"


def git_changed(*paths: str) -> bool:
    """Whether tracked files (under `paths`, if given) differ from the commit."""
    return bool(command_output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", *paths]))
