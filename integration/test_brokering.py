"""Brokered upstream credentials through real Envoy: the RFC 7523 JWT bearer grant, alone (the client's
token as assertion) and chained after an RFC 8693 exchange for an ID-JAG (MCP's enterprise-managed
authorization); account linking by URL elicitation for connector targets (official SDK client, raw
2026-07-28 requests). The IdP (stack/sts.py) and the MCP server's authorization server (stack/authz_server.py)
are real HTTP servers that record what they receive; the echo upstream records what the MCP server would
have received."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import time
import uuid
from typing import Iterator

import httpx
import httpx2
import jwt
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

from harness.envoy import Envoy, filter_config
from harness.keys import AUDIENCE, ISSUER, make_key, mint
from harness.mcp_upstream import McpServer
from harness.servers import EchoServer, JwksServer
from harness.servers import upstream_bearer as bearer
from stack.authz_server import TOKEN_PATH, AuthorizationServer
from stack.common import TrustedIssuer
from stack.connector import ConnectorBackend
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
    (("status", 401, {"error": "invalid_client"}), 502, "api_error"),
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


# -- account linking by URL elicitation (connector) ------------------------------------------------------

LINK_SECRET = "link-secret-of-the-demo-0123456789abcdef"


class LinkStack:
    def __init__(self, envoy: Envoy, connector: ConnectorBackend, mcp: McpServer, key) -> None:
        self.envoy, self.connector, self.mcp, self.key = envoy, connector, mcp, key

    def token(self, sub: str) -> str:
        return mint(self.key, sub=sub, scope="read:tasks", jti=uuid.uuid4().hex)

    def meta(self, user: str) -> dict:
        return {"userId": user, "userToken": self.connector.issue_temp_token(user, "reddit"), "providerId": "reddit"}


@pytest.fixture(scope="module")
def link_stack(tmp_path_factory) -> Iterator[LinkStack]:
    key = make_key("ES256", kid="link-es256")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        connector = es.enter_context(ConnectorBackend(link_secret=LINK_SECRET))
        mcp = McpServer(resumable=False)
        es.callback(mcp.stop)

        def cfg(port: int) -> dict:
            c = filter_config(jwks.port, port)
            c["upstream_credentials"] = {"targets": {"reddit": {
                "mode": "connector", "cluster": "connector", "authority": f"127.0.0.1:{connector.port}",
                "provider_id": "reddit", "inject_meta_key": "current_oauth_token",
                "link": {"url": f"http://127.0.0.1:{connector.port}/link?user={{userId}}&provider={{providerId}}&state={{state}}",
                         "secret": LINK_SECRET, "statuses": [], "error_codes": ["not_linked"],
                         "message": "Connect your {providerId} account"}}}}
            c["mcp"] = {"rules": [{"method": "tools/call", "name": "get_reddit_user", "scopes": ["read:tasks"],
                                   "credential": "reddit"}],
                        # Linking must not depend on session binding: the 2025-11-25 -32042 path recognizes
                        # URL-capable sessions by Mcp-Session-Id whatever `binding` says.
                        "sessions": {"binding": "off"}}
            return c

        envoy = Envoy(tmp_path_factory.mktemp("link"), upstream_port=mcp.port, jwks_port=jwks.port, filter_cfg=cfg,
                      name="envoy-link", extra_clusters={"connector": connector.port})
        es.callback(envoy.stop)
        envoy.start()
        yield LinkStack(envoy, connector, mcp, key)


async def _sdk_call(url: str, token: str, meta: dict, url_elicitation: bool):
    """tools/call get_reddit_user through the official SDK's 2025-11-25 handshake; with `url_elicitation` the
    client declares elicitation (form and url) by having an elicitation callback."""
    async def elicit(ctx, params):  # never called here: the answer is an error, not a request
        raise AssertionError("unexpected elicitation request")

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write, elicitation_callback=elicit if url_elicitation else None) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"
                return await session.call_tool("get_reddit_user", {}, meta=meta)


def sdk_call(stack: LinkStack, token: str, meta: dict, url_elicitation: bool):
    """The result, or the MCPError the SDK raised (out of the task groups that wrap it)."""
    try:
        return asyncio.run(_sdk_call(f"{stack.envoy.url}/mcp", token, meta, url_elicitation))
    except BaseExceptionGroup as group:
        errors = group.subgroup(MCPError)
        while isinstance(errors, BaseExceptionGroup):
            errors = errors.exceptions[0]
        raise (errors or group) from None


def test_link_2025_11_25_client_gets_url_elicitation_then_links_and_succeeds(link_stack: LinkStack) -> None:
    stack = link_stack
    token = stack.token("bob")  # bob has not linked reddit
    with pytest.raises(MCPError) as raised:
        sdk_call(stack, token, stack.meta("bob"), url_elicitation=True)
    error = raised.value.error
    assert error.code == -32042, error
    [elicitation] = UrlElicitationRequiredError.from_error(error).elicitations
    print("2025-11-25 answer:", json.dumps(error.model_dump(by_alias=True, exclude_none=True)))
    assert elicitation.mode == "url" and elicitation.message == "Connect your reddit account"
    assert len(elicitation.elicitation_id) == 32
    link_url = httpx.URL(elicitation.url)
    assert link_url.path == "/link" and link_url.params["user"] == "bob" and link_url.params["provider"] == "reddit"
    assert stack.connector.verify_state(link_url.params["state"]) == ("bob", "reddit")
    # A forged state is refused by the backend; the real one links the account.
    forged = link_url.copy_set_param("state", link_url.params["state"][:-2] + "AA")
    assert httpx.get(str(forged), timeout=10).status_code == 400
    assert httpx.get(elicitation.url, timeout=10).json() == {"linked": True, "userId": "bob", "providerId": "reddit"}
    result = sdk_call(stack, token, stack.meta("bob"), url_elicitation=True)
    seen = json.loads(result.content[0].text)
    assert seen["provider_token_present"] and seen["authorization"].startswith("Bearer ")
    stack.connector.unlink("bob", "reddit")


def test_link_client_without_url_elicitation_keeps_seed_001_error(link_stack: LinkStack) -> None:
    stack = link_stack
    with pytest.raises(MCPError) as raised:
        sdk_call(stack, stack.token("carol"), stack.meta("carol"), url_elicitation=False)
    error = raised.value.error
    assert error.code == -32003 and error.data["error"] == "access_denied" and error.data["provider"] == "reddit"
    # An older revision, raw: the same 403 as before linking existed.
    r = httpx.post(f"{stack.envoy.url}/mcp", timeout=20, headers={
        "authorization": f"Bearer {stack.token('carol')}", "content-type": "application/json",
        "accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"},
        json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
              "params": {"name": "get_reddit_user", "arguments": {}, "_meta": stack.meta("carol")}})
    assert r.status_code == 403 and r.json()["error"]["data"]["error"] == "access_denied", r.text


def test_link_2026_07_28_request_gets_input_required_with_request_state(link_stack: LinkStack) -> None:
    stack = link_stack
    token = stack.token("dana")
    modern = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
              "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
              "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}}

    def post(id_: int, extra: dict) -> httpx.Response:
        params = {"name": "get_reddit_user", "arguments": {}, "_meta": {**modern, **stack.meta("dana")}, **extra}
        return httpx.post(f"{stack.envoy.url}/mcp", timeout=20, headers={
            "authorization": f"Bearer {token}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call", "mcp-name": "get_reddit_user"},
            json={"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params})

    r = post(1, {})
    assert r.status_code == 200, r.text
    body = r.json()
    print("2026-07-28 answer:", json.dumps(body))
    result = body["result"]
    assert body["id"] == 1 and result["resultType"] == "input_required"
    request = result["inputRequests"]["link_reddit"]
    assert request["method"] == "elicitation/create" and request["params"]["mode"] == "url"
    assert "elicitationId" not in request["params"]
    state = result["requestState"].removeprefix("mcp-authz.link.")
    assert stack.connector.verify_state(state) == ("dana", "reddit")
    assert httpx.get(request["params"]["url"], timeout=10).status_code == 200  # the user links the account
    before = len(stack.mcp.received())
    r = post(2, {"requestState": result["requestState"], "inputResponses": {"link_reddit": {"action": "accept"}}})
    received = stack.mcp.received()[before:]
    assert len(received) == 1, r.text
    forwarded = json.loads(received[0]["body"])["params"]
    assert "requestState" not in forwarded and "inputResponses" not in forwarded, forwarded
    assert forwarded["_meta"]["current_oauth_token"] and "userToken" not in forwarded["_meta"]
    stack.connector.unlink("dana", "reddit")


# -- configuration refused at load --------------------------------------------------------------------


def _targets(**changes) -> dict:
    targets = {
        "idjag": {"mode": "rfc8693", "cluster": "idp", "authority": "idp", "path": "/token",
                  "requested_token_type": ID_JAG, "audience": "https://as", "resource": MCP_RESOURCE},
        "crm": {"mode": "jwt_bearer", "cluster": "auth", "authority": "as", "path": TOKEN_PATH, "assertion_from": "idjag"},
        "reddit": {"mode": "connector", "cluster": "c", "authority": "c", "provider_id": "reddit",
                   "link": {"url": "https://backend/link?state={state}", "secret": LINK_SECRET}},
    }
    for path, value in changes.items():
        name, field = path.split("__")
        if value is None:
            targets[name].pop(field)
        else:
            targets[name][field] = value
    return targets


@pytest.mark.parametrize("targets,rules,field", [
    (_targets(crm__assertion_from="nope"), [], "upstream_credentials.targets.crm.assertion_from"),
    (_targets(idjag__mode="jwt_bearer", idjag__requested_token_type=None, idjag__audience=None,
              idjag__resource=None, idjag__assertion_from="crm"), [], "upstream_credentials.targets.crm.assertion_from"),
    (_targets(crm__cluster=None), [], "upstream_credentials.targets.crm.cluster"),
    (_targets(reddit__link={"url": "https://backend/link", "secret": LINK_SECRET}), [],
     "upstream_credentials.targets.reddit.link.url"),
    (_targets(), [{"method": "tools/call", "name": "t", "credential": "idjag"}], "mcp.rules[0].credential"),
], ids=["unknown_assertion_source", "cycle", "missing_cluster", "link_without_state", "id_jag_as_credential"])
def test_bad_brokering_config_is_refused_naming_the_field(tmp_path, targets, rules, field) -> None:
    def render(port: int) -> str:
        cfg = filter_config(jwks_port=9, listener_port=port)
        cfg["upstream_credentials"] = {"targets": targets}
        if rules:
            cfg["mcp"] = {"rules": rules}
        return json.dumps(cfg)

    envoy = Envoy(tmp_path, upstream_port=9, jwks_port=9, filter_json=render)
    rc, log = envoy.start_expect_failure()
    assert rc != 0, log[-3000:]
    lines = [line for line in log.splitlines() if field in line and "configuration refused" in line]
    assert lines, f"no log line names {field!r}:\n{log[-3000:]}"
    assert LINK_SECRET not in log, "the link secret is never logged"
