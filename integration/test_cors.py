"""CORS preflight with an Origin the deployment allows (`mcp.allowed_origins`): passes without a token,
while an Origin that is not allowed gets nothing from the MCP endpoint."""

from __future__ import annotations

import pytest

from harness.keys import mint

APP = "http://app.test"


@pytest.fixture
def stack(stack_factory):
    def configure(cfg):
        cfg["mcp"] = {"allowed_origins": [APP]}

    return stack_factory(configure=configure)


def test_preflight_from_allowed_origin_passes_without_token(stack):
    resp, tid = stack.request(
        "OPTIONS", "/mcp", headers={"origin": APP, "access-control-request-method": "POST"}
    )
    assert resp.status_code == 200, resp.text
    assert [r["method"] for r in stack.upstream_saw(tid)] == ["OPTIONS"]
    assert (stack.envoy.metric("mcp_authz.cors_preflight_bypassed") or 0) >= 1


def test_request_from_allowed_origin_still_needs_token(stack, keys):
    resp, tid = stack.get("/mcp", headers={"origin": APP})
    assert resp.status_code == 401
    resp, tid = stack.get("/mcp", token=mint(keys["RS256"]), headers={"origin": APP})
    assert resp.status_code == 200, resp.text


def test_preflight_from_other_origin_is_refused(stack):
    resp, tid = stack.request(
        "OPTIONS", "/mcp", headers={"origin": "http://evil.test", "access-control-request-method": "POST"}
    )
    assert resp.status_code == 403, resp.text
    assert stack.upstream_saw(tid) == []
