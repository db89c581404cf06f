"""The Docker engine and the Compose tool, as the compose tests and the image build use them.

Compose comes in two shapes: the `docker compose` plugin (v2) and the older `docker-compose` program
(v1, what Debian packages); both read integration/docker-compose.yml the same way. `compose_command()`
picks whichever is installed, the plugin first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "integration" / "docker-compose.yml"
# Written by integration/docker/images.py: the locally built images, as the compose file's variables.
IMAGES_ENV = REPO / "build" / "docker" / "images.env"


class DockerUnavailable(Exception):
    """No Docker engine answers, or no Compose tool is installed; the message says which."""


def run(argv: list[str], timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """A docker / compose command, its output captured; a failure raises with the command's stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


@lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 stdin=subprocess.DEVNULL).returncode == 0:
        return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise DockerUnavailable("neither `docker compose` nor `docker-compose` is installed")


def engine_problem() -> str | None:
    """None when a Docker engine answers and a Compose tool is installed; else why not, in one line."""
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 30 s"
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine answers ({(info.stderr.strip().splitlines() or ['docker info failed'])[-1]})"
    try:
        compose_command()
    except DockerUnavailable as e:
        return str(e)
    return None


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False, timeout=30).returncode == 0


def image_label(ref: str, label: str) -> str | None:
    result = run(["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', ref],
                 check=False, timeout=30)
    value = result.stdout.strip()
    return value if result.returncode == 0 and value not in ("", "<no value>") else None


def image_id(ref: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], timeout=30).stdout.strip()


def read_env_file(path: Path = IMAGES_ENV) -> dict[str, str]:
    """KEY=VALUE lines (the format Compose's --env-file reads); # comments and blank lines skipped."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
