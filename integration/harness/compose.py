"""integration/docker-compose.yml run for real: one Compose project per test session.

`ComposeStack` brings the stack up under a project name of its own (several runs on one machine do not
meet), with every published port on 127.0.0.1 and chosen by Docker (an empty MCP_AUTHZ_*_PORT), waits
for health, and answers where things are (`url(service, port)`, `container(service)`, `network`). It
takes containers down and up for the fault tests, and `down()` removes containers, network and volumes.
Every wait is bounded.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import httpx

from . import docker

PYTHON_SERVICES = ("idp", "sts", "connector", "backend-api", "mcp-server")
SERVICES = ("envoy", *PYTHON_SERVICES)
# The compose file's host-port variables; empty: Docker picks a free port (the defaults are for users).
PORT_VARIABLES = ("MCP_AUTHZ_ENVOY_PORT", "MCP_AUTHZ_ENVOY_ADMIN_PORT", "MCP_AUTHZ_IDP_PORT", "MCP_AUTHZ_STS_PORT",
                  "MCP_AUTHZ_CONNECTOR_PORT", "MCP_AUTHZ_BACKEND_PORT")
HEALTH_TIMEOUT = 120.0  # a cold 2-core machine starts six Python/Envoy containers at once
PROJECT_LABEL = "com.docker.compose.project"


class ComposeStack:
    def __init__(self, images_env: dict[str, str]) -> None:
        self.project = f"mcp-authz-test-{os.getpid()}-{secrets.token_hex(3)}"
        self.env = {**os.environ, **images_env, "MCP_AUTHZ_BIND": "127.0.0.1", **{v: "" for v in PORT_VARIABLES}}

    # -- compose and docker -----------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        argv = [*docker.compose_command(), "-f", str(docker.COMPOSE_FILE), "-p", self.project, *args]
        return docker.run(argv, timeout=timeout, check=check, env=self.env)

    def up(self) -> None:
        # Compose starts Envoy only once the services it depends on are healthy (their healthchecks).
        self.compose("up", "-d", "--no-build", timeout=HEALTH_TIMEOUT + 120)
        for service in PYTHON_SERVICES:
            self.wait_healthy(service)
        self.wait_envoy_ready()

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=180)

    def container(self, service: str) -> str:
        """The service's container id (running or stopped)."""
        out = docker.run(["docker", "ps", "-a", "-q", "--filter", f"label={PROJECT_LABEL}={self.project}",
                          "--filter", f"label=com.docker.compose.service={service}"], timeout=30).stdout.split()
        if len(out) != 1:
            raise RuntimeError(f"{service}: expected one container, found {out}")
        return out[0]

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return docker.run(["docker", *args], timeout=timeout)

    def inspect(self, service: str, template: str) -> str:
        return self.docker("inspect", "--format", template, self.container(service)).stdout.strip()

    @property
    def network(self) -> str:
        names = self.inspect("envoy", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}").split()
        if len(names) != 1:
            raise RuntimeError(f"Envoy is on networks {names}, expected the project's one")
        return names[0]

    def port(self, service: str, private: int) -> int:
        """The host port (on 127.0.0.1) published for the service's `private` port; it changes when the
        container restarts."""
        out = self.docker("port", self.container(service), f"{private}/tcp").stdout.split()
        for mapping in out:
            host, _, port = mapping.rpartition(":")
            if host == "127.0.0.1":
                return int(port)
        raise RuntimeError(f"{service}:{private} is not published on 127.0.0.1 ({out})")

    def url(self, service: str, private: int) -> str:
        return f"http://127.0.0.1:{self.port(service, private)}"

    def logs(self, *services: str, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False, timeout=60)
        return result.stdout[-8000:] + result.stderr[-2000:]

    # -- readiness --------------------------------------------------------------------------------
    def health(self, service: str) -> str:
        return self.inspect(service, "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}")

    def wait_healthy(self, service: str, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health(service)) != "healthy":
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} not healthy within {timeout:.0f} s ({status}):\n{self.logs(service)}")
            time.sleep(0.5)

    def wait_envoy_ready(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Envoy's admin /ready answers LIVE (it has loaded the filter and opened its listener)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url('envoy', 9901)}/ready", timeout=2).status_code == 200:
                    return
            except (httpx.HTTPError, RuntimeError):  # not listening yet, or not yet published
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Envoy not ready within {timeout:.0f} s:\n{self.logs('envoy')}")
            time.sleep(0.3)

    def envoy_counter(self, name: str) -> int:
        """An Envoy counter or gauge by exact name (0 when not yet defined), from the admin endpoint."""
        text = httpx.get(f"{self.url('envoy', 9901)}/stats", params={"filter": f"^{name}$"}, timeout=5).text
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    # -- what is left -----------------------------------------------------------------------------
    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that still carry this project's label."""
        label = f"label={PROJECT_LABEL}={self.project}"
        found = {
            "containers": docker.run(["docker", "ps", "-a", "-q", "--filter", label], timeout=30).stdout.split(),
            "networks": docker.run(["docker", "network", "ls", "-q", "--filter", label], timeout=30).stdout.split(),
            "volumes": docker.run(["docker", "volume", "ls", "-q", "--filter", label], timeout=30).stdout.split(),
        }
        return {kind: ids for kind, ids in found.items() if ids}


def poll(what: str, attempt, until, timeout: float = 60.0, interval: float = 0.5) -> object:
    """Calls `attempt()` until `until(result)` holds (bounded); returns that result, or fails with the last."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = attempt()
        if until(last):
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {last!r}")

