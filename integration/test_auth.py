"""What a client and the upstream observe for unauthenticated, badly authenticated and authenticated
requests. One shared Envoy (2 workers) for the module: every test tags its requests with a unique
x-test-id and looks only at those, so the tests do not interfere."""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import shared_stack
from harness.keys import (
    ALGORITHMS,
    AUDIENCE,
    ISSUER,
    OMIT,
    b64url,
    claims,
    hs256_with_public_key,
    make_key,
    mint,
    raw_token,
    tamper_signature,
)

WELL_KNOWN = "/.well-known/oauth-protected-resource"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keys):
    with shared_stack(tmp_path_factory, list(keys.values()), concurrency=2) as s:
        yield s


@pytest.fixture(scope="module")
def rs(keys):
    return keys["RS256"]


def challenge_params(value: str) -> dict[str, str]:
    """`Bearer a="x", b="y"` -> {"a": "x", "b": "y"} (asserts the scheme is Bearer)."""
    scheme, _, rest = value.partition(" ")
    assert scheme == "Bearer", value
    return dict(re.findall(r'([A-Za-z_]+)="([^"]*)"', rest))


def metadata_url(stack) -> str:
    return f"http://127.0.0.1:{stack.envoy.listener_port}{WELL_KNOWN}/mcp"


# ---- paths that are not guarded -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/health", "/api/mcp", "/other/path?x=1"])
def test_unguarded_paths_pass_untouched(stack, path):
    resp, tid = stack.get(path, headers={"x-custom": "kept"})
    assert resp.status_code == 200
    seen = stack.upstream_saw(tid)
    assert len(seen) == 1
    assert seen[0]["path"] == path
    assert seen[0]["headers"]["x-custom"] == "kept"
    assert "authorization" not in seen[0]["headers"]


def test_unguarded_path_with_garbage_token_is_not_checked(stack):
    resp, tid = stack.get("/health", token="garbage")
    assert resp.status_code == 200
    assert stack.upstream_saw(tid)[0]["headers"]["authorization"] == "Bearer garbage"


# ---- no token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/mcp", "/mcp/", "/mcp?session=1", "/mcp/sub/path"])
def test_missing_token_is_401_with_resource_metadata(stack, method, path):
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}' if method == "POST" else None
    resp, tid = stack.request(method, path, content=body, headers={"content-type": "application/json"} if body else None)
    assert resp.status_code == 401
    params = challenge_params(resp.headers["www-authenticate"])
    assert params.get("resource_metadata") == metadata_url(stack)
    assert "error" not in params  # RFC 6750 3.1: no error code when no credentials were sent
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["error"] == "unauthorized"
    assert isinstance(doc.get("message"), str) and doc["message"]
    assert stack.upstream_saw(tid) == []


def test_missing_token_exact_challenge(stack):
    resp, _ = stack.get("/mcp")
    assert resp.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url(stack)}"'


@pytest.mark.parametrize("value", ["", "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
def test_non_bearer_authorization_is_treated_as_missing_token(stack, value):
    resp, tid = stack.get("/mcp", headers={"authorization": value})
    assert resp.status_code == 401
    assert challenge_params(resp.headers["www-authenticate"]).get("resource_metadata") == metadata_url(stack)
    assert stack.upstream_saw(tid) == []


# ---- bad tokens ---------------------------------------------------------------------------------


def _bad_tokens(keys) -> dict[str, str]:
    rs = keys["RS256"]
    now = int(time.time())
    other = make_key("RS256", kid=rs.kid)  # same kid, different key: signature cannot verify
    return {
        "bad_signature_tampered": tamper_signature(mint(rs)),
        "bad_signature_other_key_same_kid": mint(other),
        "bad_signature_es256": tamper_signature(mint(keys["ES256"])),
        "bad_signature_eddsa": tamper_signature(mint(keys["EdDSA"])),
        "expired": mint(rs, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "expired_beyond_skew": mint(rs, exp=now - 120),
        "wrong_issuer": mint(rs, iss="https://evil.test"),
        "wrong_audience": mint(rs, aud="someone-else"),
        "wrong_audience_list": mint(rs, aud=["a", "b"]),
        "missing_audience": mint(rs, aud=OMIT),
        "alg_none": raw_token({"alg": "none", "typ": "JWT", "kid": rs.kid}, claims()),
        "alg_none_with_sig": raw_token({"alg": "none", "kid": rs.kid}, claims(), b"sig"),
        "hs256_confusion": hs256_with_public_key(rs),
        "unknown_alg": raw_token({"alg": "XS999", "kid": rs.kid}, claims(), b"x" * 64),
        "alg_not_matching_key": mint(rs, alg="RS384"),  # RS384 signature with a key whose JWK says RS256
        "malformed_two_parts": "abc.def",
        "malformed_garbage": "not-a-jwt",
        "malformed_bad_base64": "@@@.@@@.@@@",
        "malformed_header_not_json": f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(b'sig')}",
        "too_long": mint(rs, pad="x" * 9000),
        "nbf_in_future": mint(rs, nbf=now + 3600),
        "iat_in_future": mint(rs, iat=now + 3600, nbf=OMIT),
        "missing_exp": mint(rs, exp=OMIT),
    }


BAD_TOKEN_CASES = [
    "bad_signature_tampered", "bad_signature_other_key_same_kid", "bad_signature_es256", "bad_signature_eddsa",
    "expired", "expired_beyond_skew", "wrong_issuer", "wrong_audience", "wrong_audience_list",
    "missing_audience", "alg_none", "alg_none_with_sig", "hs256_confusion", "unknown_alg",
    "alg_not_matching_key", "malformed_two_parts", "malformed_garbage", "malformed_bad_base64",
    "malformed_header_not_json", "too_long", "nbf_in_future", "iat_in_future", "missing_exp",
]


@pytest.fixture(scope="module")
def bad_tokens(keys):
    return _bad_tokens(keys)


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_token_is_401_invalid_token(stack, bad_tokens, case):
    resp, tid = stack.get("/mcp", token=bad_tokens[case])
    assert resp.status_code == 401, resp.text
    params = challenge_params(resp.headers["www-authenticate"])
    assert params.get("error") == "invalid_token"
    assert params.get("error_description"), resp.headers["www-authenticate"]
    doc = resp.json()
    assert doc["error"] == "invalid_token"
    assert isinstance(doc.get("message"), str) and doc["message"]
    assert stack.upstream_saw(tid) == []


def test_bad_token_reply_leaks_no_token_or_detail(stack, bad_tokens):
    token = bad_tokens["bad_signature_tampered"]
    resp, _ = stack.get("/mcp", token=token)
    assert resp.status_code == 401
    assert token not in resp.text and token not in resp.headers["www-authenticate"]


# ---- clock skew edges (60 s configured) ------------------------------------------------------------


def test_nbf_slightly_in_future_within_skew_is_accepted(stack, rs):
    resp, tid = stack.get("/mcp", token=mint(rs, nbf=int(time.time()) + 20))
    assert resp.status_code == 200, resp.text
    assert len(stack.upstream_saw(tid)) == 1


def test_exp_just_past_within_skew_is_accepted(stack, rs):
    now = int(time.time())
    resp, _ = stack.get("/mcp", token=mint(rs, exp=now - 20, iat=now - 600, nbf=now - 600))
    assert resp.status_code == 200, resp.text


# ---- valid tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_valid_token_reaches_upstream_with_claim_headers(stack, keys, alg):
    token = mint(keys[alg], sub=f"user-{alg}", scope="read:tasks")
    resp, tid = stack.get("/mcp", token=token)
    assert resp.status_code == 200, resp.text
    seen = stack.upstream_saw(tid)
    assert len(seen) == 1
    h = seen[0]["headers"]
    assert h["authorization"] == f"Bearer {token}"
    assert h["x-user-sub"] == f"user-{alg}"
    assert h["x-user-scopes"] == "read:tasks"
    # what the client receives is the upstream's answer
    assert resp.json()["headers"]["x-test-id"] == tid


def test_valid_token_post_body_reaches_upstream_unchanged(stack, rs):
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    resp, tid = stack.request(
        "POST", "/mcp", token=mint(rs), content=body,
        headers={"content-type": "application/json", "accept": "application/json, text/event-stream"},
    )
    assert resp.status_code == 200, resp.text
    seen = stack.upstream_saw(tid)
    assert len(seen) == 1 and seen[0]["method"] == "POST"
    assert json.loads(seen[0]["body"]) == json.loads(body)


def test_bearer_scheme_is_case_insensitive(stack, rs):
    token = mint(rs)
    resp, tid = stack.get("/mcp", headers={"authorization": f"bearer {token}"})
    assert resp.status_code == 200, resp.text


def test_audience_list_containing_ours_is_accepted(stack, rs):
    resp, _ = stack.get("/mcp", token=mint(rs, aud=["other", AUDIENCE]))
    assert resp.status_code == 200, resp.text


def test_forged_claim_headers_are_replaced(stack, rs):
    token = mint(rs, sub="real-user", scope="read:tasks")
    resp, tid = stack.get("/mcp", token=token, headers={"x-user-sub": "admin", "x-user-scopes": "admin:all"})
    assert resp.status_code == 200, resp.text
    h = stack.upstream_saw(tid)[0]["headers"]
    assert h["x-user-sub"] == "real-user"
    assert h["x-user-scopes"] == "read:tasks"


def test_forged_claim_header_removed_when_claim_absent(stack, rs):
    token = mint(rs, sub="real-user", scope=OMIT)
    resp, tid = stack.get("/mcp", token=token, headers={"x-user-scopes": "admin:all"})
    assert resp.status_code == 200, resp.text
    h = stack.upstream_saw(tid)[0]["headers"]
    assert h["x-user-sub"] == "real-user"
    assert h.get("x-user-scopes", "") != "admin:all"


def test_scopes_from_scp_array(stack, rs):
    token = mint(rs, scope=OMIT, scp=["read:tasks", "write:tasks"])
    resp, tid = stack.get("/mcp", token=token)
    assert resp.status_code == 200, resp.text
    assert stack.upstream_saw(tid)[0]["headers"]["x-user-scopes"] == "read:tasks write:tasks"


def test_same_token_twice_is_accepted_both_times(stack, rs):
    token = mint(rs)
    for _ in range(2):
        resp, tid = stack.get("/mcp", token=token)
        assert resp.status_code == 200
        assert len(stack.upstream_saw(tid)) == 1


# ---- protected-resource metadata (RFC 9728) ---------------------------------------------------------


@pytest.mark.parametrize("path", [WELL_KNOWN, f"{WELL_KNOWN}/mcp"])
def test_protected_resource_metadata(stack, path):
    resp, tid = stack.get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert doc["resource"] == f"http://127.0.0.1:{stack.envoy.listener_port}/mcp"
    assert doc["authorization_servers"] == [ISSUER]
    assert doc["scopes_supported"] == ["read:tasks", "write:tasks"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert stack.upstream_saw(tid) == []


def test_metadata_url_in_challenge_serves_the_document(stack):
    resp, _ = stack.get("/mcp")
    url = challenge_params(resp.headers["www-authenticate"])["resource_metadata"]
    doc = stack.client.get(url).json()
    assert doc["resource"].endswith("/mcp")


# ---- OPTIONS (preflights with an allowed Origin: test_cors.py) ---------------------------------------


def test_options_without_preflight_headers_needs_a_token(stack):
    resp, tid = stack.request("OPTIONS", "/mcp")
    assert resp.status_code == 401
    assert stack.upstream_saw(tid) == []


# ---- stats ------------------------------------------------------------------------------------------


def test_stats_count_allowed_and_denied(stack, rs):
    before_allowed = stack.envoy.metric("mcp_authz.allowed") or 0
    before_denied = stack.envoy.metric("mcp_authz.denied") or 0
    assert stack.get("/mcp", token=mint(rs))[0].status_code == 200
    assert stack.get("/mcp")[0].status_code == 401
    assert stack.get("/mcp", token="x.y.z")[0].status_code == 401
    assert stack.envoy.metric("mcp_authz.allowed") == before_allowed + 1
    assert stack.envoy.metric("mcp_authz.denied") == before_denied + 2
    assert (stack.envoy.metric("mcp_authz.jwks_fetch_success") or 0) >= 1
    assert stack.envoy.metric("mcp_authz.jwks_fetch_failed") is not None, "counter should be defined"
    names = stack.envoy.stats("mcp_authz")
    assert any(n.startswith("wasmcustom.") for n in names), names  # Envoy's prefix for Wasm metrics
