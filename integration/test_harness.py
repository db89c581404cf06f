"""Self-checks of the harness (no filter behaviour here): the JWKS server's scripted behaviours, the
echo upstream, and several Envoys running side by side."""

from __future__ import annotations

import httpx

from harness.envoy import Envoy, wasm_path
from harness.keys import make_key
from harness.servers import EchoServer, JwksServer


def test_jwks_server_behaviours():
    k1, k2 = make_key("ES256", kid="k1"), make_key("EdDSA", kid="k2")
    with JwksServer([k1]) as jwks:
        url = f"http://127.0.0.1:{jwks.port}/jwks.json"
        assert [k["kid"] for k in httpx.get(url).json()["keys"]] == ["k1"]
        jwks.set_keys([k2])
        jwks.max_age = 7
        r = httpx.get(url)
        assert [k["kid"] for k in r.json()["keys"]] == ["k2"] and r.headers["cache-control"] == "max-age=7"
        jwks.script("500", "html", "empty")
        assert httpx.get(url).status_code == 500
        assert httpx.get(url).headers["content-type"] == "text/html"
        assert httpx.get(url).json() == {"keys": []}
        assert httpx.get(url).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{jwks.port}/other").status_code == 404
        assert jwks.hits == 6  # the 404 is not a JWKS hit
        jwks.script("hang")
        try:
            httpx.get(url, timeout=0.2)
            raise AssertionError("a hanging JWKS answered")
        except httpx.TimeoutException:
            pass
        jwks.release()
        assert httpx.get(url).status_code == 200


def test_echo_server_records_requests():
    with EchoServer() as echo:
        r = httpx.post(f"http://127.0.0.1:{echo.port}/p?q=1", content=b"hello", headers={"X-Test-Id": "t1", "X-A": "b"})
        doc = r.json()
        assert doc == echo.seen("t1")[0]
        assert doc["method"] == "POST" and doc["path"] == "/p?q=1" and doc["body"] == "hello"
        assert doc["headers"]["x-a"] == "b"


def test_envoys_run_side_by_side(tmp_path):
    with EchoServer() as echo, JwksServer([make_key("ES256")]) as jwks:
        a = Envoy(tmp_path / "a", echo.port, jwks.port, concurrency=1, name="a")
        b = Envoy(tmp_path / "b", echo.port, jwks.port, concurrency=2, name="b")
        with a, b:
            assert a.listener_port != b.listener_port and a.admin != b.admin
            for e in (a, b):
                assert httpx.get(f"{e.url}/health", timeout=10).status_code == 200
                assert "starting main dispatch loop" in e.log_text()
        assert not a.running and not b.running


def test_envoy_with_own_bootstrap_pinned_to_a_cpu(tmp_path):
    """The benchmark's options: a whole bootstrap of its own (here a direct response) and `taskset`."""

    def bootstrap(listener_port: int) -> dict:
        route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "pinned"}}}
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        listener = {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                    "typed_config": hcm}]}]}
        return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                "static_resources": {"listeners": [listener]}}

    with Envoy(tmp_path, 0, 0, bootstrap_fn=bootstrap, cpus="0", name="pinned") as envoy:
        assert httpx.get(f"{envoy.url}/anything", timeout=10).text == "pinned"
        status = open(f"/proc/{envoy.pid}/status").read()
        assert "Cpus_allowed_list:\t0\n" in status
        assert open(f"/proc/{envoy.pid}/comm").read().strip() == "envoy"


def test_filter_module_stays_under_one_mib() -> None:
    """Envoy and Istio load the module into every worker; issue 6 caps it at 1 MiB (see Cargo.toml's
    release profile for what keeps it there)."""
    size = wasm_path().stat().st_size
    assert size <= 1024 * 1024, f"{wasm_path()} is {size:,} bytes, over 1 MiB"
