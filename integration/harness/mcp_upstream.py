"""The sample MCP server (integration/stack/mcp_server.py, official Python SDK, stateful) as a child process
on a free loopback port: the real MCP upstream behind Envoy for the tests and for the local stack."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

from .envoy import Envoy, die_with_parent, filter_config
from .keys import SigningKey, make_key
from .jsonrpc import received_messages
from .ports import free_port
from .servers import JwksServer

SERVER = Path(__file__).parent.parent / "stack" / "mcp_server.py"
START_TIMEOUT = 60.0


class McpServer:
    """stack/mcp_server.py as a child process on a free loopback port; the constructor returns once it
    answers (or stops it and raises). SSE streams are resumable (event ids, replay after Last-Event-ID)
    unless `resumable=False`, as a production server's are. Its output goes to `log_path` (default: a
    temporary file, removed by `stop()`); the child dies with this process (PR_SET_PDEATHSIG)."""

    def __init__(self, json_response: bool = False, resumable: bool | None = None, backend_url: str | None = None,
                 provider_api_url: str | None = None, header_tool: bool = False, log_path: Path | None = None,
                 timeout: float = START_TIMEOUT) -> None:
        self.port = free_port()
        self.json_response = json_response
        argv = [sys.executable, str(SERVER), "--port", str(self.port)]
        argv += ["--json-response"] if json_response else []
        argv += ["--resumable"] if (not json_response if resumable is None else resumable) else []
        argv += ["--backend-url", backend_url] if backend_url else []
        argv += ["--provider-api-url", provider_api_url] if provider_api_url else []
        argv += ["--header-tool"] if header_tool else []
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="mcp-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        with open(self.log_path, "ab") as log:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                returncode, log = self.proc.returncode, self.log_text()
                self.stop()
                raise RuntimeError(f"MCP server exited ({returncode}):\n{log[-3000:]}")
            try:
                httpx.get(f"{self.url}/_received", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        log = self.log_text()
        self.stop()
        raise RuntimeError(f"MCP server not answering within {timeout}s:\n{log[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received(self) -> list[dict]:
        """Every HTTP request to /mcp as it arrived: method, headers, body (as text)."""
        return httpx.get(f"{self.url}/_received", timeout=5).json()

    def messages(self) -> list[dict]:
        """Every JSON-RPC message that reached the server (batches flattened; unparseable bodies skipped)."""
        return received_messages(self.received())

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset", timeout=5)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._own_log:
            self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def envoy_before_mcp_server(tmp_dir: Path, name: str, **top_level) -> Iterator[tuple[Envoy, McpServer, SigningKey]]:
    """Envoy with the filter (the test contract's configuration, with `top_level` keys set) in front of a
    JSON-answering McpServer, and the key its tokens are signed with; all stopped on exit."""
    key = make_key("ES256", kid=f"{name}-es256")
    with contextlib.ExitStack() as stack:
        jwks = stack.enter_context(JwksServer([key]))
        server = McpServer(json_response=True)
        stack.callback(server.stop)
        envoy = Envoy(tmp_dir, upstream_port=server.port, jwks_port=jwks.port, name=name,
                      filter_cfg=lambda listener_port: filter_config(jwks.port, listener_port) | top_level)
        stack.callback(envoy.stop)
        envoy.start()
        yield envoy, server, key


async def sdk_session(url: str, token: str, work):
    """Runs `work(client)` in an official MCP SDK client session at `url` with `token` as the bearer."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await work(client)


def run_bounded(coro):
    """Runs `coro` to completion, failing after 60 s rather than hanging the suite."""
    import asyncio

    return asyncio.run(asyncio.wait_for(coro, timeout=60))
