"""An Envoy without `allow_on_headers_stop_iteration` never hands the filter an MCP POST's body while the
headers are held. The filter must fail safe: answer 408 after `mcp.body_timeout_ms`, never forward the
uninspected call, never hang."""

from __future__ import annotations

import contextlib
import json

import httpx

from harness.envoy import Envoy, filter_config
from harness.keys import make_key, mint
from harness.servers import EchoServer, JwksServer


def test_without_the_flag_mcp_posts_fail_closed_and_get_requests_still_work(tmp_path) -> None:
    key = make_key("ES256", kid="flagless")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        echo = es.enter_context(EchoServer())

        def configure(listener_port: int) -> dict:
            cfg = filter_config(jwks.port, listener_port)
            cfg["mcp"] = {"body_timeout_ms": 500, "rules": [{"method": "tools/call", "name": "getTasks"}]}
            return cfg

        envoy = Envoy(tmp_path, upstream_port=echo.port, jwks_port=jwks.port, filter_cfg=configure,
                      name="envoy-noflag", stop_iteration_flag=False)
        es.callback(envoy.stop)
        envoy.start()
        token = mint(key)
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "getTasks"}}
        r = httpx.post(f"{envoy.url}/mcp", json=body, headers={"authorization": f"Bearer {token}", "x-test-id": "noflag"},
                       timeout=20)
        assert r.status_code == 408, r.text
        assert r.json()["error"]["message"] == "Request body not received in time"
        assert echo.seen("noflag") == [], "the uninspected call never reached the upstream"
        assert "allow_on_headers_stop_iteration" in envoy.log_text()
        # Requests without a body are unaffected.
        r = httpx.get(f"{envoy.url}/mcp", headers={"authorization": f"Bearer {token}", "x-test-id": "noflag-get"}, timeout=20)
        assert r.status_code == 200
        assert json.loads(json.dumps(echo.seen("noflag-get")))[0]["method"] == "GET"
