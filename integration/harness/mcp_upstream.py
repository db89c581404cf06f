"""The sample MCP server (integration/stack/mcp_server.py, official Python SDK, stateful) as a subprocess
on a free loopback port, for tests that need a real MCP upstream behind Envoy."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from .envoy import die_with_parent
from .ports import free_port

SERVER = Path(__file__).parent.parent / "stack" / "mcp_server.py"
START_TIMEOUT = 30.0


class McpServer:
    """The sample MCP server as a subprocess on a free loopback port."""

    def __init__(self, json_response: bool) -> None:
        self.port = free_port()
        self.json_response = json_response
        # SSE streams are resumable (event ids, replay after Last-Event-ID), as a production server's are.
        mode = ["--json-response"] if json_response else ["--resumable"]
        argv = [sys.executable, str(SERVER), "--port", str(self.port)] + mode
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MCP server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/_received", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("MCP server did not start")

    def received(self) -> list[dict]:
        return httpx.get(f"http://127.0.0.1:{self.port}/_received", timeout=5).json()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_reset", timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
