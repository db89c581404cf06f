"""Launching real Envoy processes with the mcp-authz filter, and reading their admin endpoint."""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .keys import ALGORITHMS, AUDIENCE, ISSUER
from .ports import free_port
from .processes import pinned

REPO = Path(__file__).resolve().parents[2]
DEFAULT_WASM = REPO / "build" / "mcp_authz.wasm"
READY_TIMEOUT = 60.0  # V8 compiles the module once per worker; generous for a loaded 2-core CI box
EXIT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

# Every Envoy this process started, so that even an interrupted run leaves none behind.
_LIVE: set["Envoy"] = set()


def die_with_parent() -> None:
    """In the child before exec: ask the kernel to SIGKILL it if the test process dies (even by SIGKILL),
    so an interrupted run cannot leave an Envoy behind. Survives the wrapper script's execv."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def envoy_binary() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    venv = REPO / ".venv" / "bin" / "envoy"
    if venv.exists():
        return str(venv)
    raise RuntimeError("no Envoy: run `make venv` (or set ENVOY_BIN)")


def envoy_version() -> str:
    """The build Envoy reports, e.g. "9e55…/1.40.0/Clean/RELEASE/BoringSSL"."""
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"version:\s*(\S+)", out)
    return m.group(1) if m else out.strip()


def wasm_path() -> Path:
    p = Path(os.environ.get("MCP_AUTHZ_WASM", DEFAULT_WASM))
    if not p.exists():
        raise RuntimeError(f"{p} does not exist: run `make build` (or set MCP_AUTHZ_WASM)")
    return p


def filter_config(jwks_port: int, listener_port: int, **overrides: Any) -> dict:
    """The filter JSON of the test contract; top-level keys can be overridden."""
    cfg: dict[str, Any] = {
        "providers": [
            {
                "name": "local",
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": list(ALGORITHMS),
                "jwks": {
                    "remote": {
                        "cluster": "idp_jwks",
                        "authority": f"127.0.0.1:{jwks_port}",
                        "path": "/jwks.json",
                        "timeout_ms": 2000,
                        "refresh_interval_seconds": 600,
                        "unknown_kid_refetch_interval_seconds": 30,
                    }
                },
                "clock_skew_seconds": 60,
                "require_exp": True,
                "max_token_bytes": 8192,
            }
        ],
        "paths": [{"prefix": "/mcp"}],
        "claim_headers": [
            {"claim": "sub", "header": "x-user-sub"},
            {"claim": "scope", "header": "x-user-scopes"},
        ],
        "resource_metadata": {
            "resource": f"http://127.0.0.1:{listener_port}/mcp",
            "authorization_servers": [ISSUER],
            "scopes_supported": ["read:tasks", "write:tasks"],
        },
        "jwks_wait_timeout_ms": 3000,
    }
    cfg.update(overrides)
    return cfg


def remote_jwks(cfg: dict, provider: int = 0) -> dict:
    """The provider's `jwks.remote` object, for tests that tweak it."""
    return cfg["providers"][provider]["jwks"]["remote"]


def _static_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


WASM_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def wasm_filter_config(filter_json: str, wasm: Path, stop_iteration_flag: bool = True) -> dict:
    """The Wasm filter's typed config (`envoy.extensions.filters.http.wasm.v3.Wasm`) carrying `filter_json`."""
    return {
        "@type": WASM_TYPE_URL,
        "config": {
            "name": "mcp_authz",
            "root_id": "mcp_authz",
            "allow_on_headers_stop_iteration": stop_iteration_flag,
            "vm_config": {
                "vm_id": "mcp_authz",
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": str(wasm)}},
            },
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter_json},
        },
    }


def ecds_document(filter_json: str, wasm: Path) -> dict:
    """A filesystem ECDS answer (a DiscoveryResponse) with the filter config named `mcp_authz`."""
    return {"resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                           "name": "mcp_authz", "typed_config": wasm_filter_config(filter_json, wasm)}]}


def bootstrap(listener_port: int, upstream_port: int, jwks_port: int, filter_json: str, wasm: Path,
              extra_clusters: dict[str, int] | None = None, stop_iteration_flag: bool = True,
              ecds_file: Path | None = None, normalize: bool = True) -> dict:
    """A complete Envoy bootstrap: listener -> wasm filter -> router -> mcp_upstream; idp_jwks cluster.
    With `ecds_file`, the Wasm filter's config is not inline but discovered from that file (ECDS, as
    Istio delivers it), which Envoy watches: replacing the file reconfigures the filter without restart.
    `normalize=False` leaves `normalize_path` and `merge_slashes` at Envoy's defaults (off), as most
    Envoy configurations in the wild have them: the filter must be safe there too."""
    wasm_filter: dict = {"name": "envoy.filters.http.wasm",
                         "typed_config": wasm_filter_config(filter_json, wasm, stop_iteration_flag)}
    if ecds_file is not None:
        wasm_filter = {"name": "mcp_authz", "config_discovery": {
            "config_source": {"path_config_source": {"path": str(ecds_file),
                                                     "watched_directory": {"path": str(ecds_file.parent)}},
                              "initial_fetch_timeout": "0s"},
            "type_urls": [WASM_TYPE_URL]}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "normalize_path": normalize,
        "merge_slashes": normalize,
        # HTTP/1 trailers reach filters only when enabled; the trailers tests need them.
        "http_protocol_options": {"enable_trailers": True},
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "mcp_upstream", "timeout": "20s"}}]}
            ],
        },
        "http_filters": [
            wasm_filter,
            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "mcp",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
                }
            ],
            "clusters": [_static_cluster("mcp_upstream", upstream_port), _static_cluster("idp_jwks", jwks_port)]
            + [_static_cluster(name, port) for name, port in (extra_clusters or {}).items()],
        },
    }
    if ecds_file is not None:
        config["node"] = {"id": "mcp-authz-test", "cluster": "mcp-authz-test"}  # xDS needs a node identity
    return config


class EnvoyExited(RuntimeError):
    def __init__(self, message: str, returncode: int | None, log: str) -> None:
        super().__init__(f"{message} (exit code {returncode})\n--- envoy log (tail) ---\n{log[-6000:]}")
        self.returncode = returncode
        self.log = log


class Envoy:
    """One Envoy process. `start()` returns once admin /ready says LIVE and the listener accepts."""

    def __init__(
        self,
        workdir: Path,
        upstream_port: int,
        jwks_port: int,
        filter_cfg: dict | Callable[[int], dict] | None = None,
        filter_json: str | Callable[[int], str] | None = None,
        concurrency: int = 1,
        log_level: str = "info",
        name: str = "envoy",
        extra_clusters: dict[str, int] | None = None,
        stop_iteration_flag: bool = True,
        ecds: bool = False,
        bootstrap_fn: Callable[[int], dict] | None = None,
        cpus: str | None = None,
        normalize: bool = True,
    ) -> None:
        """`bootstrap_fn(listener_port)` replaces the whole bootstrap (the benchmark's own configs; the filter
        arguments are then unused); `cpus` runs Envoy under `taskset -c <cpus>`."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.listener_port = free_port()
        self.upstream_port = upstream_port
        self.jwks_port = jwks_port
        self.concurrency = concurrency
        self.log_level = log_level
        self.cpus = cpus
        if bootstrap_fn is not None:
            filter_json = ""
        elif callable(filter_json):
            filter_json = filter_json(self.listener_port)
        if filter_json is None:
            if filter_cfg is None:
                filter_cfg = filter_config(jwks_port, self.listener_port)
            elif callable(filter_cfg):
                filter_cfg = filter_cfg(self.listener_port)
            filter_json = json.dumps(filter_cfg, indent=2)
        self.filter_json = filter_json
        self.config_path = self.workdir / f"{name}.json"
        # Envoy logs to stderr, which goes straight to this file (--log-path buffers and may lag).
        self.log_path = self.workdir / f"{name}.log"
        self.admin_path = self.workdir / f"{name}.admin"
        self.admin: str | None = None  # "127.0.0.1:port"
        self.proc: subprocess.Popen | None = None
        if bootstrap_fn is not None:
            self.ecds_path = None
            config = bootstrap_fn(self.listener_port)
        else:
            # ECDS: the filter config lives in its own watched directory, replaced by `replace_filter_json`.
            self.ecds_path = self.workdir / f"{name}-ecds" / "filter.json" if ecds else None
            if self.ecds_path is not None:
                self.ecds_path.parent.mkdir(exist_ok=True)
                self.replace_filter_json(filter_json)
            config = bootstrap(self.listener_port, upstream_port, jwks_port, filter_json, wasm_path(), extra_clusters,
                               stop_iteration_flag, self.ecds_path, normalize)
        if concurrency > 1:
            # Spread connections evenly over the workers, so multi-worker tests really use them all (the
            # kernel's default may put every test connection on one worker).
            for listener in config["static_resources"]["listeners"]:
                listener["connection_balance_config"] = {"exact_balance": {}}
        self.config_path.write_text(json.dumps(config, indent=2))

    def replace_filter_json(self, filter_json: str) -> None:
        """ECDS only: swaps the filter's config file by an atomic rename, which Envoy picks up at once."""
        assert self.ecds_path is not None, "Envoy(ecds=True) is needed to replace the filter config"
        tmp = self.ecds_path.with_name(f".{self.ecds_path.name}.tmp")
        tmp.write_text(json.dumps(ecds_document(filter_json, wasm_path()), indent=2))
        os.rename(tmp, self.ecds_path)

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}"

    def argv(self) -> list[str]:
        # taskset execs Envoy (and the venv's `envoy` script execs the binary), so the pid stays Envoy's.
        return pinned(self.cpus) + [
            envoy_binary(),
            "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            # A distinct shared-memory/domain-socket namespace per instance, picked by Envoy itself, so
            # parallel Envoys (several tests, several runs, a developer's own Envoy) never clash.
            "--use-dynamic-base-id",
            "--admin-address-path", str(self.admin_path),
            "--log-level", self.log_level,
        ]

    def _launch(self) -> None:
        self.admin_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True, preexec_fn=die_with_parent,
            )
        _LIVE.add(self)

    def start(self, timeout: float = READY_TIMEOUT) -> "Envoy":
        self._launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyExited("Envoy exited during start-up", self.proc.returncode, self.log_text())
            if self._ready():
                return self
            time.sleep(0.05)
        log = self.log_text()
        self.stop()
        raise EnvoyExited(f"Envoy not ready within {timeout}s", None, log)

    def start_expect_failure(self, timeout: float = EXIT_TIMEOUT) -> tuple[int, str]:
        """Start Envoy on a config it must refuse: returns (exit code, log). Fails if it becomes ready."""
        self._launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                _LIVE.discard(self)
                return rc, self.log_text()
            if self._ready():
                log = self.log_text()
                self.stop()
                raise AssertionError(f"Envoy accepted a config it should have refused\n{log[-4000:]}")
            time.sleep(0.05)
        log = self.log_text()
        self.stop()
        raise AssertionError(f"Envoy neither exited nor became ready within {timeout}s\n{log[-4000:]}")

    def _ready(self) -> bool:
        if self.admin is None:
            try:
                text = self.admin_path.read_text().strip()
            except FileNotFoundError:
                return False
            if not text:
                return False
            self.admin = text
        try:
            with urllib.request.urlopen(f"http://{self.admin}/ready", timeout=2) as r:
                if r.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.listener_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- observation --------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def admin_get(self, path: str, timeout: float = 5) -> str:
        assert self.admin, "Envoy admin address unknown (not started?)"
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=timeout) as r:
            return r.read().decode()

    def stats(self, regex: str | None = None) -> dict[str, int]:
        """Counters and gauges (name -> value) from admin /stats, optionally filtered by a regex."""
        q = "?format=json"
        if regex:
            q += "&filter=" + urllib.parse.quote(regex)
        data = json.loads(self.admin_get("/stats" + q))
        return {s["name"]: s["value"] for s in data.get("stats", []) if "value" in s}

    def metric(self, suffix: str) -> int | None:
        """The filter's metric whose name ends with `suffix` (e.g. "mcp_authz.allowed"); Envoy prefixes
        Wasm metrics (`wasmcustom.`), so match by suffix. None when not defined."""
        found = {n: v for n, v in self.stats(re.escape(suffix) + "$").items() if n.endswith(suffix)}
        if not found:
            return None
        return sum(found.values())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.05) -> bool:
        """Poll `predicate` (bounded); True once it holds."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def active_requests(self) -> int:
        """Requests Envoy holds open on the listener right now (gauge http.ingress.downstream_rq_active)."""
        return self.stats(r"^http\.ingress\.downstream_rq_active$").get("http.ingress.downstream_rq_active", 0)


def validate_config(path: Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`envoy --mode validate -c path` (runs the filter's on_configure too)."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id", "--log-level", "info"],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


@atexit.register
def _stop_all() -> None:
    for envoy in list(_LIVE):
        envoy.stop()
