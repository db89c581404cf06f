"""The stack's Envoy configuration: one template (stack/envoy.yaml), rendered for two places.

- local (make demo, the tests): every service on 127.0.0.1 with ports picked at run time;
- compose (integration/docker-compose.yml): service names and the fixed ports below. The rendered file
  is checked in as integration/docker/envoy.yaml; regenerate it with
      cd integration && ../.venv/bin/python -m stack.config compose > docker/envoy.yaml
  (test_compose.py fails when it differs from the template's rendering).
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("envoy.yaml")
INTEGRATION = Path(__file__).resolve().parents[1]
COMPOSE_ENVOY_CONFIG = INTEGRATION / "docker" / "envoy.yaml"

STS_CLIENT_ID = "mcp-gateway"
STS_CLIENT_SECRET = "demo-secret"  # demo only: put a real secret in a Secret/SDS, never in a checked-in file
DEMO_USER = "alice"

# docker-compose: service name and port of each service (also what the compose file's commands use).
COMPOSE_SERVICES: dict[str, tuple[str, int]] = {
    "envoy": ("envoy", 10000),
    "envoy-admin": ("envoy", 9901),
    "idp": ("idp", 9000),
    "sts": ("sts", 9100),
    "connector": ("connector", 9200),
    "crm-as": ("crm-as", 9300),
    "backend-api": ("backend-api", 4000),
    "mcp-server": ("mcp-server", 8000),
}
COMPOSE_ISSUER = "http://idp:9000"
COMPOSE_RESOURCE = "http://localhost:10000/mcp"
COMPOSE_AS_ISSUER = "http://crm-as:9300"  # the CRM's authorization server (ID-JAG audience)  # the MCP endpoint as a user on the docker host calls it
COMPOSE_WASM = "/etc/envoy/mcp_authz.wasm"

PLACEHOLDERS = (
    "ADMIN_ADDRESS", "ADMIN_PORT", "LISTEN_ADDRESS", "LISTENER_PORT", "WASM", "MCP_HOST", "MCP_PORT", "IDP_HOST",
    "IDP_PORT", "STS_HOST", "STS_PORT", "CONNECTOR_HOST", "CONNECTOR_PORT", "ISSUER", "AUDIENCE", "RESOURCE",
    "STS_CLIENT_SECRET", "AS_HOST", "AS_PORT", "AS_ISSUER",
)


def render(values: dict[str, Any]) -> str:
    """The template with every placeholder filled (a missing or unknown value is an error)."""
    missing = set(PLACEHOLDERS) - set(values)
    unknown = set(values) - set(PLACEHOLDERS)
    if missing or unknown:
        raise KeyError(f"placeholders missing: {sorted(missing)}, unknown: {sorted(unknown)}")
    return string.Template(TEMPLATE.read_text()).substitute({k: str(v) for k, v in values.items()})


def compose_values() -> dict[str, Any]:
    s = COMPOSE_SERVICES
    return {
        "ADMIN_ADDRESS": "0.0.0.0", "ADMIN_PORT": s["envoy-admin"][1],
        "LISTEN_ADDRESS": "0.0.0.0", "LISTENER_PORT": s["envoy"][1],
        "WASM": COMPOSE_WASM,
        "MCP_HOST": s["mcp-server"][0], "MCP_PORT": s["mcp-server"][1],
        "IDP_HOST": s["idp"][0], "IDP_PORT": s["idp"][1],
        "STS_HOST": s["sts"][0], "STS_PORT": s["sts"][1],
        "CONNECTOR_HOST": s["connector"][0], "CONNECTOR_PORT": s["connector"][1],
        "ISSUER": COMPOSE_ISSUER, "AUDIENCE": COMPOSE_RESOURCE, "RESOURCE": COMPOSE_RESOURCE,
        "STS_CLIENT_SECRET": STS_CLIENT_SECRET,
        "AS_HOST": s["crm-as"][0], "AS_PORT": s["crm-as"][1], "AS_ISSUER": COMPOSE_AS_ISSUER,
    }


def local_values(*, listener_port: int, wasm: Path | str, mcp_port: int, idp_port: int, sts_port: int,
                 connector_port: int, issuer: str, as_port: int, as_issuer: str) -> dict[str, Any]:
    resource = f"http://127.0.0.1:{listener_port}/mcp"
    return {
        "ADMIN_ADDRESS": "127.0.0.1", "ADMIN_PORT": 0,  # the real port is read from --admin-address-path
        "LISTEN_ADDRESS": "127.0.0.1", "LISTENER_PORT": listener_port,
        "WASM": str(wasm),
        "MCP_HOST": "127.0.0.1", "MCP_PORT": mcp_port,
        "IDP_HOST": "127.0.0.1", "IDP_PORT": idp_port,
        "STS_HOST": "127.0.0.1", "STS_PORT": sts_port,
        "CONNECTOR_HOST": "127.0.0.1", "CONNECTOR_PORT": connector_port,
        "ISSUER": issuer, "AUDIENCE": resource, "RESOURCE": resource,
        "STS_CLIENT_SECRET": STS_CLIENT_SECRET,
        "AS_HOST": "127.0.0.1", "AS_PORT": as_port, "AS_ISSUER": as_issuer,
    }


def _wasm_config(bootstrap: dict) -> dict:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [wasm] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]


def filter_config(rendered: str) -> dict:
    """The filter's JSON configuration inside a rendered bootstrap."""
    import yaml

    return json.loads(_wasm_config(yaml.safe_load(rendered))["configuration"]["value"])


def without_credentials(rendered: str) -> str:
    """The same bootstrap (as JSON) with the filter's `upstream_credentials` and every rule's `credential`
    removed: for a filter build that predates upstream credentials."""
    import yaml

    bootstrap = yaml.safe_load(rendered)
    wasm = _wasm_config(bootstrap)
    cfg = json.loads(wasm["configuration"]["value"])
    cfg.pop("upstream_credentials", None)
    for rule in cfg.get("mcp", {}).get("rules", []):
        rule.pop("credential", None)
    wasm["configuration"]["value"] = json.dumps(cfg, indent=2)
    return json.dumps(bootstrap, indent=2)


def compose_envoy_config() -> str:
    """What integration/docker/envoy.yaml must contain."""
    header = ("# GENERATED from integration/stack/envoy.yaml by `python -m stack.config compose` (run in integration/).\n"
              "# Do not edit: change the template, then regenerate. test_stack_static.py checks that they agree.\n")
    return header + render(compose_values())


def main(argv: list[str]) -> int:
    if argv != ["compose"]:
        print("usage: python -m stack.config compose > docker/envoy.yaml", file=sys.stderr)
        return 2
    sys.stdout.write(compose_envoy_config())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
