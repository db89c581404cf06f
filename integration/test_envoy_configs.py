"""`envoy --mode validate` on every Envoy config shipped under envoy/ (this is `make validate`).

Configs may carry `${NAME}` placeholders; they are rendered with the values below first. Validation
loads the Wasm module and runs the filter's on_configure, so the filter JSON is checked too.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from harness.envoy import REPO, validate_config, wasm_path

ENVOY_DIR = REPO / "envoy"


def _is_kubernetes_manifest(path: Path) -> bool:
    """envoy/k8s and envoy/istio hold Kubernetes objects, not bootstraps: test_manifests.py checks them and
    validates the Envoy configuration they carry."""
    return re.search(r"(?m)^apiVersion:", path.read_text()) is not None


CONFIGS = sorted(p for p in ENVOY_DIR.rglob("*")
                 if p.suffix in {".yaml", ".yml", ".json"} and p.is_file() and not _is_kubernetes_manifest(p))

PLACEHOLDERS = {
    "WASM": str(REPO / "build" / "mcp_authz.wasm"),
    "WASM_PATH": str(REPO / "build" / "mcp_authz.wasm"),
    "LISTENER_PORT": "10000",
    "ADMIN_PORT": "9901",
    "UPSTREAM_HOST": "127.0.0.1",
    "UPSTREAM_PORT": "8000",
    "JWKS_HOST": "127.0.0.1",
    "JWKS_PORT": "9000",
    "ISSUER": "https://idp.test",
    "AUDIENCE": "mcp-test",
    "ACCESS_LOG": "/dev/stdout",
}


def test_there_are_configs_to_validate():
    assert CONFIGS, f"no Envoy configs under {ENVOY_DIR}"


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_envoy_config_validates(config: Path, tmp_path):
    wasm_path()  # fail clearly if the filter was not built
    text = config.read_text()
    if "${" in text:
        text = string.Template(text).safe_substitute(PLACEHOLDERS)
        assert "${" not in text, f"{config}: placeholder without a value in PLACEHOLDERS"
        rendered = tmp_path / config.name
        rendered.write_text(text)
        config = rendered
    # Relative paths in the configs (build/mcp_authz.wasm) are relative to the repository root.
    result = validate_config(config, cwd=REPO)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "OK" in out


def test_allow_on_headers_stop_iteration_is_a_plugin_config_field(tmp_path):
    """Guards the field name the example relies on: a misspelling must be refused by Envoy's proto check."""
    src = (ENVOY_DIR / "envoy.yaml").read_text()
    assert "allow_on_headers_stop_iteration: true" in src
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.replace("allow_on_headers_stop_iteration:", "allow_on_header_stop_iteration:"))
    result = validate_config(bad, cwd=REPO)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "envoy.extensions.wasm.v3.PluginConfig" in out and "allow_on_header_stop_iteration" in out
