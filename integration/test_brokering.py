"""Brokered upstream credentials through real Envoy: the RFC 7523 JWT bearer grant, alone (the client's
token as assertion) and chained after an RFC 8693 exchange for an ID-JAG (MCP's enterprise-managed
authorization). The IdP (stack/sts.py) and the MCP server's authorization server (stack/authz_server.py)
are real HTTP servers that record what they receive; the echo upstream records what the MCP server would
have received."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import time
import uuid
from typing import Iterator

import httpx
import jwt
import pytest

from harness.envoy import Envoy, filter_config
from harness.keys import AUDIENCE, ISSUER, make_key, mint
from harness.servers import EchoServer, JwksServer
from harness.servers import upstream_bearer as bearer
from stack.authz_server import TOKEN_PATH, AuthorizationServer
from stack.common import TrustedIssuer
from stack.sts import TokenExchangeServer

MCP_RESOURCE = "https://mcp.crm.example/mcp"
CLIENT_ID, CLIENT_SECRET = "mcp-gateway", "demo-secret"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


class BrokerStack:
    def __init__(self, envoy: Envoy, echo: EchoServer, idp: TokenExchangeServer, auth: AuthorizationServer,
                 key, jwks_url: str) -> None:
        self.envoy, self.echo, self.idp, self.auth, self.key = envoy, echo, idp, auth, key
        self.jwks_url = jwks_url

    def token(self, sub: str = "alice") -> str:
        # aud names the MCP gateway (the filter's audience) and the authorization server (RFC 7523 §3: an
        # assertion names its audience): the client's token can then be an assertion itself.
        # A fresh jti: every call of token() is a new client token (a new cache key).
        return mint(self.key, sub=sub, scope="read:tasks", aud=[AUDIENCE, self.auth.issuer], jti=uuid.uuid4().hex)

    def call(self, tool: str, token: str, id_: int = 1) -> tuple[httpx.Response, dict | None]:
        body = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
        marker = f"t{time.monotonic_ns()}"
        r = httpx.post(f"{self.envoy.url}/mcp", timeout=20, content=json.dumps(body).encode(), headers={
            "authorization": f"Bearer {token}", "x-test-id": marker, "content-type": "application/json"})
        seen = self.echo.seen(marker)
        return r, (seen[0] if seen else None)


def broker_config(listener_port: int, jwks: JwksServer, idp: TokenExchangeServer, auth: AuthorizationServer,
                  timeout_ms: int) -> dict:
    cfg = filter_config(jwks.port, listener_port)
    endpoint = {"cluster": "auth", "authority": f"127.0.0.1:{auth.port}", "path": TOKEN_PATH, "timeout_ms": timeout_ms}
    cfg["upstream_credentials"] = {
        "cache": {"max_entries": 100, "margin_seconds": 30},
        "targets": {
            # The client's own token as the assertion, Basic client authentication.
            "direct": {"mode": "jwt_bearer", **endpoint, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            # ID-JAG: the IdP's token exchange, then the JWT bearer grant with client_secret_post.
            "crm-id-jag": {"mode": "rfc8693", "cluster": "idp", "authority": f"127.0.0.1:{idp.port}", "path": "/token",
                           "requested_token_type": ID_JAG, "audience": auth.issuer, "resource": MCP_RESOURCE,
                           "scope": "read:tasks", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                           "timeout_ms": timeout_ms},
            "crm": {"mode": "jwt_bearer", **endpoint, "assertion_from": "crm-id-jag", "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET, "client_auth": "post"},
        },
    }
    cfg["mcp"] = {"rules": [
        {"method": "tools/call", "name": "direct_tool", "scopes": ["read:tasks"], "credential": "direct"},
        {"method": "tools/call", "name": "crm_tool", "scopes": ["read:tasks"], "credential": "crm"},
    ]}
    return cfg


def start_stack(tmp_path_factory, concurrency: int = 1, timeout_ms: int = 1000) -> Iterator[BrokerStack]:
    key = make_key("ES256", kid="broker-es256")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        echo = es.enter_context(EchoServer())
        jwks_url = f"http://127.0.0.1:{jwks.port}/jwks.json"
        # The enterprise IdP's token exchange: it knows the authorization server (ID-JAG audience) once that
        # has a port, so the list is filled in below.
        idp = es.enter_context(TokenExchangeServer(subject_issuer=ISSUER, subject_jwks_url=jwks_url,
                                                   subject_audiences=[AUDIENCE]))
        auth = es.enter_context(AuthorizationServer(
            idp_issuer=idp.issuer, idp_jwks_url=idp.jwks_url, resources=[MCP_RESOURCE],
            plain_assertions=[TrustedIssuer(ISSUER, jwks_url, None)]))
        idp.id_jag_audiences.append(auth.issuer)
        envoy = Envoy(tmp_path_factory.mktemp("brokering"), upstream_port=echo.port, jwks_port=jwks.port,
                      filter_cfg=lambda port: broker_config(port, jwks, idp, auth, timeout_ms),
                      concurrency=concurrency, name=f"envoy-brokering-{concurrency}",
                      extra_clusters={"idp": idp.port, "auth": auth.port})
        es.callback(envoy.stop)
        envoy.start()
        yield BrokerStack(envoy, echo, idp, auth, key, jwks_url)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[BrokerStack]:
    yield from start_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def stack4(tmp_path_factory) -> Iterator[BrokerStack]:
    """Four workers; a 3 s timeout so that an exchange held 0.5 s stays in flight on a loaded machine."""
    yield from start_stack(tmp_path_factory, concurrency=4, timeout_ms=3000)


@pytest.fixture(autouse=True)
def _fresh(request) -> None:
    """Each test starts with counters at zero and both token endpoints answering normally."""
    stacks = [request.getfixturevalue(n) for n in ("stack", "stack4") if n in request.fixturenames]
    servers = [server for s in stacks for server in (s.idp, s.auth)]
    for server in servers:
        server.reset_counters()
        server.set_default("ok")


def unverified(token: str) -> tuple[dict, dict]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


# -- jwt_bearer alone -----------------------------------------------------------------------------------


def test_jwt_bearer_presents_the_client_token_and_the_upstream_gets_the_answer(stack: BrokerStack) -> None:
    token = stack.token()
    r, seen = stack.call("direct_tool", token)
    assert r.status_code == 200, r.text
    assert stack.auth.hits_for(TOKEN_PATH) == 1 and stack.idp.hits_for("/token") == 0
    request = stack.auth.requests[0]
    form = request.form()
    assert form == {"grant_type": [JWT_BEARER], "assertion": [token]}
    basic = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
    assert basic == f"{CLIENT_ID}:{CLIENT_SECRET}"
    upstream = bearer(seen)
    _, claims = unverified(upstream)
    assert claims["iss"] == stack.auth.issuer and claims["sub"] == "alice" and claims["client_id"] == CLIENT_ID
    assert token not in json.dumps(seen), "the client's token never reaches the upstream"
    # Cached: the same client token again makes no second callout and gets the same upstream token.
    r, seen = stack.call("direct_tool", token, id_=2)
    assert r.status_code == 200 and bearer(seen) == upstream
    assert stack.auth.hits_for(TOKEN_PATH) == 1


@pytest.mark.parametrize("behaviour,status,error", [
    (("status", 400, {"error": "invalid_grant"}), 403, "access_denied"),
    (("status", 401, {"error": "invalid_client"}), 401, "invalid_token"),
    ("500", 502, "api_error"),
    ("garbage", 502, "api_error"),
    (("delay", 1.5), 504, "api_error"),
])
def test_jwt_bearer_failures_are_mapped_like_rfc8693(stack: BrokerStack, behaviour, status: int, error: str) -> None:
    stack.auth.set_default(behaviour)
    token = stack.token()
    r, seen = stack.call("direct_tool", token, id_=77)
    assert r.status_code == status, r.text
    assert seen is None, "nothing reaches the upstream without its credential"
    body = r.json()
    assert (body["id"], body["error"]["data"]["error"], body["error"]["data"]["provider"]) == (77, error, "direct")
    assert token not in r.text
    stack.auth.set_default("ok")
    assert stack.call("direct_tool", token)[0].status_code == 200, "failures are not cached"


def test_jwt_bearer_endpoint_down_then_back(stack: BrokerStack) -> None:
    """The authorization server is down (its front answers 503 to every request): 502 and nothing
    upstream, again on a retry (failures are not cached); once it is back the next call gets its token."""
    token = stack.token()
    stack.auth.set_default(("status", 503, {"error": "temporarily_unavailable"}))
    for id_ in (5, 6):
        r, seen = stack.call("direct_tool", token, id_=id_)
        assert r.status_code == 502, r.text
        assert seen is None and r.json()["error"]["data"]["error"] == "api_error"
    assert stack.auth.hits_for(TOKEN_PATH) == 2
    stack.auth.set_default("ok")
    r, seen = stack.call("direct_tool", token, id_=7)
    assert r.status_code == 200, r.text
    assert unverified(bearer(seen))[1]["iss"] == stack.auth.issuer
    assert stack.auth.hits_for(TOKEN_PATH) == 3


def test_jwt_bearer_burst_across_workers_makes_one_callout(stack4: BrokerStack) -> None:
    token = stack4.token()
    stack4.auth.script(("delay", 0.5))  # the first grant stays in flight while the burst arrives
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: stack4.call("direct_tool", token, id_=i), range(16)))
    assert all(r.status_code == 200 for r, _ in results), [r.text for r, _ in results if r.status_code != 200]
    assert len({bearer(seen) for _, seen in results}) == 1
    assert stack4.auth.hits_for(TOKEN_PATH) == 1


# -- ID-JAG: RFC 8693 at the IdP, then the JWT bearer grant ---------------------------------------------


def message_sequence(stack: BrokerStack) -> list[tuple[str, str, dict[str, list[str]]]]:
    """Every token request (POST) the IdP and the authorization server received, in the order they arrived
    (the authorization server's own GETs of the IdP's JWKS, to verify the ID-JAG, left out)."""
    events = [(r.received_at, "idp", r) for r in stack.idp.requests if r.method == "POST"] + \
             [(r.received_at, "auth", r) for r in stack.auth.requests if r.method == "POST"]
    return [(who, r.path, r.form()) for _, who, r in sorted(events, key=lambda e: e[0])]


def test_id_jag_chain_sequence(stack: BrokerStack) -> None:
    token = stack.token()
    r, seen = stack.call("crm_tool", token)
    assert r.status_code == 200, r.text
    sequence = message_sequence(stack)
    assert [(who, path) for who, path, _ in sequence] == [("idp", "/token"), ("auth", TOKEN_PATH)]
    (_, _, exchange), (_, _, grant) = sequence
    # 1. Token exchange at the IdP for an ID-JAG, for the authorization server, about the MCP server.
    assert exchange == {
        "grant_type": [TOKEN_EXCHANGE], "subject_token": [token],
        "subject_token_type": ["urn:ietf:params:oauth:token-type:access_token"],
        "audience": [stack.auth.issuer], "resource": [MCP_RESOURCE], "scope": ["read:tasks"],
        "requested_token_type": [ID_JAG],
    }
    # 2. The JWT bearer grant at the authorization server with exactly the ID-JAG the IdP issued.
    id_jag_claims = stack.idp.issued[-1]
    assert set(grant) == {"grant_type", "assertion", "client_id", "client_secret"}
    assert grant["grant_type"] == [JWT_BEARER] and grant["client_id"] == [CLIENT_ID]
    header, claims = unverified(grant["assertion"][0])
    assert header["typ"] == "oauth-id-jag+jwt" and claims == id_jag_claims
    assert claims["aud"] == stack.auth.issuer and claims["resource"] == MCP_RESOURCE and claims["sub"] == "alice"
    assert stack.auth.accepted[-1] == claims  # signature, typ, aud, client_id, resource, jti checked there
    # 3. The upstream receives the authorization server's access token, nothing else.
    upstream = bearer(seen)
    _, at = unverified(upstream)
    assert (at["iss"], at["aud"], at["sub"]) == (stack.auth.issuer, MCP_RESOURCE, "alice")
    assert grant["assertion"][0] not in json.dumps(seen) and token not in json.dumps(seen)
    print("ID-JAG sequence:", [(who, path, sorted(form)) for who, path, form in sequence])
    # The access token is cached: no second chain.
    r, seen = stack.call("crm_tool", token, id_=2)
    assert r.status_code == 200 and bearer(seen) == upstream
    assert (stack.idp.hits_for("/token"), stack.auth.hits_for(TOKEN_PATH)) == (1, 1)


def test_id_jag_refused_at_either_step_ends_the_chain(stack: BrokerStack) -> None:
    token = stack.token(sub="carol")
    stack.idp.set_default("invalid_target")  # the IdP's policy refuses
    r, seen = stack.call("crm_tool", token, id_=3)
    assert (r.status_code, seen, stack.auth.hits_for(TOKEN_PATH)) == (403, None, 0), r.text
    assert r.json()["error"]["data"] == {"error": "access_denied", "message": "The exchange server refused to issue a token",
                                         "provider": "crm", "details": "exchange server answered 400 invalid_target"}
    stack.idp.set_default("ok")
    stack.auth.set_default(("status", 400, {"error": "invalid_grant"}))  # the authorization server refuses
    r, seen = stack.call("crm_tool", token, id_=4)
    assert (r.status_code, seen) == (403, None), r.text
    assert (stack.idp.hits_for("/token"), stack.auth.hits_for(TOKEN_PATH)) == (2, 1)
    stack.auth.set_default("ok")
    r, seen = stack.call("crm_tool", token, id_=5)
    assert r.status_code == 200, r.text
    # Each chain asked for a fresh ID-JAG (they are never reused): three exchanges, two grants.
    assert (stack.idp.hits_for("/token"), stack.auth.hits_for(TOKEN_PATH)) == (3, 2)


def test_id_jag_burst_across_workers_makes_one_chain(stack4: BrokerStack) -> None:
    token = stack4.token(sub="dave")
    stack4.idp.script(("delay", 0.5))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: stack4.call("crm_tool", token, id_=i), range(16)))
    assert all(r.status_code == 200 for r, _ in results), [r.text for r, _ in results if r.status_code != 200]
    assert len({bearer(seen) for _, seen in results}) == 1
    assert (stack4.idp.hits_for("/token"), stack4.auth.hits_for(TOKEN_PATH)) == (1, 1)
