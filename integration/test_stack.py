"""The bundled stack's own servers (integration/stack/), and the stack as a whole behind real Envoy.

The servers are small but real: the identity provider signs and rotates keys, the token exchange server
speaks RFC 8693 (client authentication, error codes), the connector keeps seed 001's contract and the
tasks API verifies every token again (seed 000's defense in depth). Other tests reuse them, so their
contracts are pinned here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Iterator

import httpx
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from stack.backend_api import TasksApi
from stack.common import TrustedIssuer
from stack.connector import ConnectorBackend
from stack.idp import IdentityProvider
from stack.local import LocalStack
from stack.sts import ACCESS_TOKEN_TYPE, GRANT_TYPE, TokenExchangeServer

AUD = "http://mcp.test/mcp"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider(audience=AUD) as server:
        yield server


@pytest.fixture
def sts(idp) -> Iterator[TokenExchangeServer]:
    with TokenExchangeServer(subject_issuer=idp.issuer, subject_jwks_url=f"{idp.url}{idp.jwks_path}",
                             subject_audiences=[AUD], clients={"gw id": "s3cr:t"}, targets=["tasks-api", "other-api"]) as s:
        yield s


@pytest.fixture
def connector() -> Iterator[ConnectorBackend]:
    with ConnectorBackend(links=[("alice", "reddit"), ("bob", "github")]) as c:
        yield c


@pytest.fixture
def api(idp, sts) -> Iterator[TasksApi]:
    with TasksApi(trusted=[TrustedIssuer(idp.issuer, f"{idp.url}{idp.jwks_path}", [AUD]),
                           TrustedIssuer(sts.issuer, sts.jwks_url, ["tasks-api"])]) as server:
        yield server


def verify(token: str, jwks_url: str, **kw) -> dict:
    key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], **kw)


# -- identity provider ---------------------------------------------------------------------------------


def test_idp_issues_verifiable_tokens_and_publishes_discovery(idp):
    meta = httpx.get(f"{idp.url}/.well-known/openid-configuration").json()
    assert meta["issuer"] == idp.issuer and meta["jwks_uri"] == f"{idp.issuer}/.well-known/jwks.json"
    assert httpx.get(f"{idp.url}/.well-known/oauth-authorization-server").json() == meta
    for alg in ("RS256", "ES256"):
        r = httpx.post(f"{idp.url}/token", json={"sub": "alice", "scope": "read:tasks", "alg": alg, "claims": {"groups": ["ops"]}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert jwt.get_unverified_header(body["access_token"])["alg"] == alg
        claims = verify(body["access_token"], meta["jwks_uri"], audience=AUD, issuer=idp.issuer)
        assert (claims["sub"], claims["scope"], claims["groups"]) == ("alice", "read:tasks", ["ops"])
    form = httpx.post(f"{idp.url}/token", data={"grant_type": "client_credentials", "client_id": "svc", "scope": "admin"})
    assert verify(form.json()["access_token"], meta["jwks_uri"], audience=AUD)["sub"] == "svc"
    assert httpx.post(f"{idp.url}/token", json={"alg": "HS256"}).status_code == 400
    assert httpx.post(f"{idp.url}/token", data={"grant_type": "password"}).json()["error"] == "unsupported_grant_type"


def test_idp_rotation_keeps_or_drops_the_old_key():
    with IdentityProvider(audience=AUD) as idp:
        old = idp.kid("RS256")
        old_token = idp.mint(scope="read:tasks")
        kept = httpx.post(f"{idp.url}/rotate", json={"keep_old": True, "algorithms": ["RS256"]}).json()
        assert kept["active"]["RS256"] != old and old in kept["published"]
        assert kept["active"]["ES256"] in kept["published"]
        kids = {k["kid"] for k in httpx.get(f"{idp.url}{idp.jwks_path}").json()["keys"]}
        assert {old, kept["active"]["RS256"]} <= kids
        assert jwt.get_unverified_header(idp.mint())["kid"] == kept["active"]["RS256"]
        dropped = httpx.post(f"{idp.url}/rotate", json={"keep_old": False}).json()
        assert old in dropped["published"], "only the replaced (active) keys are dropped; older kept ones stay"
        assert kept["active"]["RS256"] not in dropped["published"]
        kids = {k["kid"] for k in httpx.get(f"{idp.url}{idp.jwks_path}").json()["keys"]}
        assert kept["active"]["RS256"] not in kids and dropped["active"]["RS256"] in kids
        assert verify(old_token, f"{idp.url}{idp.jwks_path}", audience=AUD)["sub"] == "alice"


def test_idp_keys_file_keeps_the_keys_across_a_restart_and_follows_rotation(tmp_path):
    keys_file = tmp_path / "keys.json"
    with IdentityProvider(audience=AUD, keys_file=keys_file) as idp:
        token = idp.mint(scope="read:tasks")
        first = httpx.get(f"{idp.url}{idp.jwks_path}").json()
    assert keys_file.stat().st_mode & 0o077 == 0, "private keys: readable by the owner only"
    with IdentityProvider(audience=AUD, keys_file=keys_file) as idp:
        assert httpx.get(f"{idp.url}{idp.jwks_path}").json() == first
        assert verify(token, f"{idp.url}{idp.jwks_path}", audience=AUD)["sub"] == "alice"
        rotated = httpx.post(f"{idp.url}/rotate", json={"keep_old": True}).json()
    with IdentityProvider(audience=AUD, keys_file=keys_file) as idp:
        assert idp.kid("RS256") == rotated["active"]["RS256"] != jwt.get_unverified_header(token)["kid"]
        assert {k["kid"] for k in httpx.get(f"{idp.url}{idp.jwks_path}").json()["keys"]} == set(rotated["published"])
    # Without a keys file every start makes new keys.
    with IdentityProvider(audience=AUD) as a, IdentityProvider(audience=AUD) as b:
        assert a.kid("RS256") != b.kid("RS256")


def test_tasks_api_shows_which_token_it_verified_never_the_token(idp, api):
    token = idp.mint(sub="alice", scope="read:tasks")
    assert httpx.get(f"{api.url}/api/tasks", headers={"authorization": f"Bearer {token}"}).status_code == 200
    calls = httpx.get(f"{api.url}/_calls").json()
    assert calls[-1] | {"aud": None} == {"method": "GET", "path": "/api/tasks", "sub": "alice", "iss": idp.issuer,
                                          "aud": None, "scopes": ["read:tasks"], "act": None}
    assert token not in httpx.get(f"{api.url}/_calls").text


# -- token exchange (RFC 8693) -------------------------------------------------------------------------


def exchange(sts: TokenExchangeServer, subject: str, auth: str = "basic", client=("gw id", "s3cr:t"), **form) -> httpx.Response:
    data = {"grant_type": GRANT_TYPE, "subject_token": subject, "subject_token_type": ACCESS_TOKEN_TYPE, **form}
    headers = {}
    if auth == "basic":
        pair = f"{client[0].replace(' ', '+')}:{client[1].replace(':', '%3A')}"  # RFC 6749 §2.3.1 encoding
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif auth == "post":
        data.update(client_id=client[0], client_secret=client[1])
    return httpx.post(f"{sts.url}/token", data=data, headers=headers)


def test_sts_issues_a_delegation_token(idp, sts):
    subject = idp.mint(sub="alice", scope="read:tasks write:tasks admin")
    for auth in ("basic", "post"):
        r = exchange(sts, subject, auth, audience="tasks-api", scope="read:tasks write:tasks other")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["issued_token_type"] == ACCESS_TOKEN_TYPE
        assert body["expires_in"] == 300 and body["scope"] == "read:tasks write:tasks"
        claims = verify(body["access_token"], sts.jwks_url, audience="tasks-api", issuer=sts.issuer)
        assert claims["sub"] == "alice" and claims["act"] == {"sub": "gw id"} and claims["scope"] == "read:tasks write:tasks"
    assert sts.hits_for("/token") == 2 and len(sts.issued) == 2
    # Without audience/resource/scope: the first served target and the subject's scopes.
    claims = jwt.decode(exchange(sts, subject).json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "tasks-api" and claims["scope"] == "read:tasks write:tasks admin"


@pytest.mark.parametrize("case, status, code", [
    ("wrong secret", 401, "invalid_client"),
    ("no client auth", 401, "invalid_client"),
    ("both auth methods", 400, "invalid_request"),
    ("wrong grant", 400, "unsupported_grant_type"),
    ("no subject token", 400, "invalid_request"),
    ("bad subject token type", 400, "invalid_request"),
    ("forged subject", 400, "invalid_grant"),
    ("expired subject", 400, "invalid_grant"),
    ("subject for another audience", 400, "invalid_grant"),
    ("unknown audience", 400, "invalid_target"),
    ("unknown resource", 400, "invalid_target"),
    ("no scope in common", 400, "invalid_scope"),
])
def test_sts_errors_follow_rfc_6749_and_8693(idp, sts, case, status, code):
    good = idp.mint(sub="alice", scope="read:tasks")
    r = {
        "wrong secret": lambda: exchange(sts, good, client=("gw id", "nope")),
        "no client auth": lambda: exchange(sts, good, auth="none"),
        "both auth methods": lambda: exchange(sts, good, client_id="gw id", client_secret="s3cr:t"),
        "wrong grant": lambda: exchange(sts, good, grant_type="client_credentials"),
        "no subject token": lambda: exchange(sts, ""),
        "bad subject token type": lambda: exchange(sts, good, subject_token_type="urn:x"),
        "forged subject": lambda: exchange(sts, good[:-6] + "AAAAAA"),
        "expired subject": lambda: exchange(sts, idp.mint(ttl=1, exp=int(time.time()) - 3600)),
        "subject for another audience": lambda: exchange(sts, idp.mint(audience="someone-else")),
        "unknown audience": lambda: exchange(sts, good, audience="billing"),
        "unknown resource": lambda: exchange(sts, good, resource="https://billing.test"),
        "no scope in common": lambda: exchange(sts, good, scope="admin"),
    }[case]()
    assert (r.status_code, r.json()["error"]) == (status, code), r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
    assert sts.issued == []


def test_sts_failure_modes(idp, sts):
    good = idp.mint(sub="alice", scope="read:tasks")
    sts.script("500", "garbage", "404", "expires_in_0", "expires_in_negative", ("status", 503, {"error": "busy"}),
               ("delay", 0.3))
    assert exchange(sts, good).status_code == 500
    garbage = exchange(sts, good)
    assert garbage.status_code == 200 and garbage.headers["content-type"] == "text/html"
    assert exchange(sts, good).status_code == 404
    assert exchange(sts, good).json()["expires_in"] == 0
    assert exchange(sts, good).json()["expires_in"] < 0
    assert exchange(sts, good).status_code == 503
    started = time.monotonic()
    assert exchange(sts, good).status_code == 200 and time.monotonic() - started >= 0.3
    assert exchange(sts, good).status_code == 200, "back to normal once the script is used up"
    assert sts.hits_for("/token") == 8
    assert sts.wait_for_hits(8, timeout=1, path="/token")


# -- connector (seed 001) ------------------------------------------------------------------------------


def request_auth(c: ConnectorBackend, body) -> httpx.Response:
    return httpx.post(f"{c.url}/api/connectors/requestAuth", json=body)


def test_connector_contract(connector):
    temp = httpx.post(f"{connector.url}/api/connectors/tempToken", json={"userId": "alice", "providerId": "reddit"}).json()
    assert temp["expiresIn"] == 300
    ok = request_auth(connector, {"userId": "alice", "userToken": temp["userToken"], "providerId": "reddit"})
    assert ok.status_code == 200 and ok.json() == {"accessToken": connector.provider_token("alice", "reddit")}
    me = httpx.get(f"{connector.url}/provider/reddit/api/v1/me", headers={"authorization": f"Bearer {ok.json()['accessToken']}"})
    assert me.json()["name"] == "alice_on_reddit"
    assert httpx.get(f"{connector.url}/provider/reddit/api/v1/me", headers={"authorization": "Bearer nope"}).status_code == 401
    assert connector.exchanges == 1

    def status(user: str, token: str, provider: str) -> int:
        return request_auth(connector, {"userId": user, "userToken": token, "providerId": provider}).status_code

    assert status("alice", "tmp-unknown", "reddit") == 401
    assert status("bob", temp["userToken"], "reddit") == 401, "a temp token is bound to its user"
    assert status("alice", temp["userToken"], "gitlab") == 404
    assert status("alice", temp["userToken"], "github") == 403, "issued for reddit, not github"
    assert status("alice", connector.issue_temp_token("alice", "github"), "github") == 403, "alice has no github link"
    expired = connector.issue_temp_token("alice", "reddit", ttl=-1)
    assert status("alice", expired, "reddit") == 401
    connector.revoke(temp["userToken"])
    assert status("alice", temp["userToken"], "reddit") == 401
    assert request_auth(connector, {"userId": "alice"}).status_code == 400
    assert httpx.post(f"{connector.url}/api/connectors/requestAuth", content=b"{").status_code == 400


def test_connector_failure_modes(connector):
    body = {"userId": "alice", "userToken": connector.issue_temp_token("alice", "reddit"), "providerId": "reddit"}
    connector.script("500", "401", "403", "garbage", "expires_in_negative", "no_access_token")
    assert [request_auth(connector, body).status_code for _ in range(3)] == [500, 401, 403]
    assert request_auth(connector, body).headers["content-type"] == "text/html"
    assert request_auth(connector, body).json()["expiresIn"] == -1
    assert "accessToken" not in request_auth(connector, body).json()
    assert request_auth(connector, body).status_code == 200
    assert connector.hits_for("/api/connectors/requestAuth") == 7


# -- tasks API (seed 000) ------------------------------------------------------------------------------


def test_tasks_api_verifies_again_and_checks_scopes(idp, sts, api):
    def call(method: str, path: str, token: str | None, **kw) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, f"{api.url}{path}", headers=headers, **kw)

    reader, writer = idp.mint(sub="alice", scope="read:tasks"), idp.mint(sub="alice", scope="read:tasks write:tasks")
    assert call("GET", "/", None).json()["status"] == "healthy"
    assert call("GET", "/api/tasks", None).json()["error"] == "unauthorized"
    assert call("GET", "/api/tasks", reader[:-4] + "AAAA").json()["error"] == "invalid_token"
    assert call("GET", "/api/tasks", idp.mint(audience="other")).status_code == 401
    assert [t["title"] for t in call("GET", "/api/tasks", reader).json()["tasks"]] == ["Write the README", "Rotate the signing keys"]
    denied = call("POST", "/api/tasks", reader, json={"title": "x"})
    assert denied.status_code == 403 and denied.json()["missing"] == ["write:tasks"]
    created = call("POST", "/api/tasks", writer, json={"title": "Ship it"})
    assert created.status_code == 201 and created.json()["task"]["userId"] == "alice"
    assert call("POST", "/api/tasks", writer, json={}).status_code == 400
    assert call("GET", "/api/profile", reader).json()["email"] == "alice@example.com"
    assert call("GET", "/api/profile", idp.mint(sub="mallory")).status_code == 404
    # A token the exchange server issued for this API is accepted too; one for another API is not.
    exchanged = exchange(sts, writer, audience="tasks-api").json()["access_token"]
    assert call("GET", "/api/tasks", exchanged).status_code == 200
    assert api.calls[-1]["act"] == {"sub": "gw id"} and api.calls[-1]["iss"] == sts.issuer
    other = exchange(sts, writer, audience="other-api").json()["access_token"]
    assert call("GET", "/api/tasks", other).status_code == 401


def test_tasks_api_follows_key_rotation(idp, api):
    before = idp.mint(sub="alice", scope="read:tasks")
    assert httpx.get(f"{api.url}/api/tasks", headers={"authorization": f"Bearer {before}"}).status_code == 200
    idp.rotate(keep_old=True)
    after = idp.mint(sub="alice", scope="read:tasks", alg="ES256")
    assert httpx.get(f"{api.url}/api/tasks", headers={"authorization": f"Bearer {after}"}).status_code == 200


# -- the stack behind Envoy ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("local-stack")) as stack:
        yield stack


async def _get_tasks(url: str, token: str) -> str:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool("getTasks", {})
            return result.content[0].text


def get_tasks(stack: LocalStack, token: str) -> str:
    return asyncio.run(asyncio.wait_for(_get_tasks(stack.mcp_url, token), timeout=60))


def test_rotation_at_the_idp_reaches_filter_and_backend(local_stack):
    assert get_tasks(local_stack, local_stack.token()).startswith("Found")
    fetches = local_stack.idp.hits_for(local_stack.idp.jwks_path)
    local_stack.idp.rotate(keep_old=False)
    # A token with the new kid: the filter refetches the JWKS (unknown kid), and so does the tasks API.
    assert get_tasks(local_stack, local_stack.token()).startswith("Found")
    assert local_stack.idp.hits_for(local_stack.idp.jwks_path) >= fetches + 2


def test_unauthenticated_and_foreign_tokens_never_reach_the_server(local_stack):
    local_stack.mcp.reset()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "getTasks", "arguments": {}}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    assert httpx.post(local_stack.mcp_url, json=body, headers=headers).status_code == 401
    with IdentityProvider(issuer=local_stack.idp.issuer, audience=local_stack.resource) as impostor:
        forged = impostor.mint(sub="alice", scope="read:tasks")  # right issuer name, wrong keys
    r = httpx.post(local_stack.mcp_url, json=body, headers=headers | {"authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    assert local_stack.mcp.received() == []


def test_two_stacks_run_side_by_side(local_stack, tmp_path):
    """Every port is picked at run time, so a second run (another checkout, a parallel CI job) does not
    collide with the first."""
    with LocalStack(tmp_path / "second") as second:
        ports = {second.envoy.listener_port, second.idp.port, second.sts.port, second.connector.port, second.backend.port,
                 second.mcp.port}
        first = {local_stack.envoy.listener_port, local_stack.idp.port, local_stack.sts.port, local_stack.connector.port,
                 local_stack.backend.port, local_stack.mcp.port}
        assert len(ports) == 6 and not ports & first
        assert get_tasks(second, second.token()).startswith("Found")
        assert get_tasks(local_stack, local_stack.token()).startswith("Found")
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{second.envoy.listener_port}/", timeout=1)
        pytest.fail("the second stack's Envoy still answers after stop()")
