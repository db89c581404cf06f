"""The whole stack as local processes on 127.0.0.1 (what docker-compose.yml runs in containers).

    with LocalStack(workdir) as stack:
        stack.mcp_url            # Envoy's MCP endpoint
        stack.idp.mint(sub="alice", scope="read:tasks")

The identity provider, token exchange server, connector and tasks API run in this process (threads, ports
picked by the kernel); the MCP server (official SDK) and Envoy are child processes on free ports, started
with PR_SET_PDEATHSIG so they die with this process even if it is killed. Envoy gets stack/envoy.yaml
rendered with those addresses. `stop()` (or leaving the `with`) stops everything, also after a failure.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from harness.envoy import Envoy, EnvoyExited, wasm_path
from harness.mcp_upstream import McpServer

from . import config
from .authz_server import AuthorizationServer
from .backend_api import TasksApi
from .common import TrustedIssuer
from .connector import ConnectorBackend
from .idp import IdentityProvider
from .sts import TokenExchangeServer

# Every tool of the sample MCP server (what a caller would see without the filter).
ALL_TOOLS = ("admin_reset", "createTask", "crm_whoami", "getTasks", "get_reddit_user", "whoami")


class StackEnvoy(Envoy):
    """harness.envoy.Envoy (start/stop/readiness/stats) running a config rendered from stack/envoy.yaml."""

    def __init__(self, workdir: Path, name: str = "envoy-stack", concurrency: int = 1, log_level: str = "info") -> None:
        super().__init__(workdir, upstream_port=0, jwks_port=0, filter_json="{}", concurrency=concurrency,
                         log_level=log_level, name=name)
        self.config_path.unlink(missing_ok=True)  # the harness bootstrap, not used

    def use_config(self, text: str, suffix: str = ".yaml") -> None:
        self.config_path = self.workdir / f"{self.name}{suffix}"
        self.config_path.write_text(text)
        self.admin = None  # a previous (refused) start's admin address is stale


class LocalStack:
    """Identity provider, token exchange, connector, tasks API, MCP server and Envoy on 127.0.0.1.

    `credentials`: True uses stack/envoy.yaml as it is; "auto" falls back to the same configuration without
    `upstream_credentials` when the filter build refuses that field (then `credentials_supported` is False
    and `refusal` holds Envoy's log line)."""

    def __init__(self, workdir: Path, credentials: bool | str = True, json_response: bool = False,
                 concurrency: int = 1, log_level: str = "info") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials = credentials
        self.json_response = json_response
        self.concurrency = concurrency
        self.log_level = log_level
        self.credentials_supported: bool | None = None
        self.refusal: str | None = None
        self.idp: IdentityProvider | None = None
        self.sts: TokenExchangeServer | None = None
        self.connector: ConnectorBackend | None = None
        self.crm_as: AuthorizationServer | None = None
        self.backend: TasksApi | None = None
        self.mcp: McpServer | None = None
        self.envoy: StackEnvoy | None = None
        self.rendered: str | None = None
        self._exit = contextlib.ExitStack()

    # -- addresses --------------------------------------------------------------------------------
    @property
    def mcp_url(self) -> str:
        return f"{self.envoy.url}/mcp"

    @property
    def resource(self) -> str:
        return f"http://127.0.0.1:{self.envoy.listener_port}/mcp"

    def urls(self) -> dict[str, str]:
        return {
            "mcp": self.mcp_url,
            "idp": self.idp.url,
            "sts": self.sts.url,
            "connector": self.connector.url,
            "crm_as": self.crm_as.url,
            "backend": self.backend.url,
            "mcp_direct": self.mcp.url,
            "envoy_admin": f"http://{self.envoy.admin}",
        }

    def token(self, scope: str = "read:tasks", sub: str = config.DEMO_USER, **kw) -> str:
        return self.idp.mint(sub=sub, scope=scope, **kw)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "LocalStack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        wasm = wasm_path()
        # Envoy first: its listener port is the resource URL, i.e. the audience every other service checks.
        self.envoy = StackEnvoy(self.workdir, concurrency=self.concurrency, log_level=self.log_level)
        self._exit.callback(self.envoy.stop)
        resource = self.resource
        self.idp = self._exit.enter_context(IdentityProvider(audience=resource))
        jwks_url = f"{self.idp.url}{self.idp.jwks_path}"
        self.sts = self._exit.enter_context(TokenExchangeServer(
            subject_issuer=self.idp.issuer, subject_jwks_url=jwks_url, subject_audiences=[resource],
            clients={config.STS_CLIENT_ID: config.STS_CLIENT_SECRET}))
        # Enterprise-managed authorization: the STS stands in for the enterprise IdP and issues ID-JAGs for
        # the CRM's authorization server, which trades them (JWT bearer grant) for its own access tokens.
        self.crm_as = self._exit.enter_context(AuthorizationServer(
            idp_issuer=self.sts.issuer, idp_jwks_url=self.sts.jwks_url, resources=[resource],
            clients={config.STS_CLIENT_ID: config.STS_CLIENT_SECRET}))
        self.sts.id_jag_audiences.append(self.crm_as.issuer)
        self.connector = self._exit.enter_context(ConnectorBackend())
        self.backend = self._exit.enter_context(TasksApi(trusted=[
            TrustedIssuer(self.idp.issuer, jwks_url, [resource]),
            TrustedIssuer(self.sts.issuer, self.sts.jwks_url, ["tasks-api"]),
        ]))
        self.mcp = McpServer(json_response=self.json_response, resumable=False, backend_url=self.backend.url,
                             provider_api_url=f"{self.connector.url}/provider/reddit",
                             log_path=self.workdir / "mcp_server.log")
        self._exit.callback(self.mcp.stop)
        self.rendered = config.render(config.local_values(
            listener_port=self.envoy.listener_port, wasm=wasm, mcp_port=self.mcp.port, idp_port=self.idp.port,
            sts_port=self.sts.port, connector_port=self.connector.port, issuer=self.idp.issuer,
            as_port=self.crm_as.port, as_issuer=self.crm_as.issuer))
        self.envoy.use_config(self.rendered)
        try:
            self.envoy.start()
            self.credentials_supported = True
        except EnvoyExited as e:
            refused = [line for line in e.log.splitlines() if "configuration refused" in line]
            if self.credentials != "auto" or not refused or "credential" not in refused[0]:
                raise
            # A filter build without upstream credentials: run the rest of the stack all the same.
            self.refusal = refused[0].split("configuration refused:", 1)[1].strip()
            self.credentials_supported = False
            self.envoy.use_config(config.without_credentials(self.rendered), suffix=".json")
            self.envoy.start()
        # The filter fetched the IdP's keys at start-up (bounded wait; requests would be held until then anyway).
        self.idp.wait_for_hits(1, timeout=10, path=self.idp.jwks_path)

    def stop(self) -> None:
        self._exit.close()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
