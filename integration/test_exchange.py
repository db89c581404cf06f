"""Upstream credentials through real Envoy: RFC 8693 token exchange, seed 001's connector contract and
internal tokens. The token server and connector backend (integration/stack/) count their hits; the echo
upstream records exactly what the MCP server would have received."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
from typing import Iterator

import httpx
import jwt
import pytest

from harness.envoy import Envoy, filter_config
from harness.keys import AUDIENCE, ISSUER, make_key, mint
from harness.servers import EchoServer, JwksServer
from harness.servers import upstream_bearer as bearer
from stack.connector import ConnectorBackend
from stack.sts import TokenExchangeServer

# RFC 8037 A.1: a fixed Ed25519 key for internal tokens.
INTERNAL_KEY = {"kty": "OKP", "crv": "Ed25519", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
INTERNAL_JWKS_PATH = "/.well-known/mcp-authz/jwks.json"


class ExchangeStack:
    def __init__(self, envoy: Envoy, echo: EchoServer, sts: TokenExchangeServer, connector: ConnectorBackend, key,
                 jwks: JwksServer) -> None:
        self.envoy, self.echo, self.sts, self.connector, self.key, self.jwks = envoy, echo, sts, connector, key, jwks

    def token(self, sub: str = "alice", scope: str = "read:tasks write:tasks", **claims) -> str:
        return mint(self.key, sub=sub, scope=scope, **claims)

    def call(self, tool: str, token: str, meta: dict | None = None, id_: int = 1) -> tuple[httpx.Response, dict | None]:
        """POSTs a tools/call; returns the response and what the upstream received (None if nothing)."""
        params: dict = {"name": tool, "arguments": {}}
        if meta is not None:
            params["_meta"] = meta
        return self.post(json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}), token)

    def post(self, body: str, token: str) -> tuple[httpx.Response, dict | None]:
        """POSTs a JSON-RPC body as written; returns the response and what the upstream received."""
        marker = f"t{time.monotonic_ns()}"
        r = httpx.post(f"{self.envoy.url}/mcp", timeout=20, content=body.encode(), headers={
            "authorization": f"Bearer {token}", "x-test-id": marker, "content-type": "application/json"})
        seen = self.echo.seen(marker)
        return r, (seen[0] if seen else None)


def exchange_config(listener_port: int, jwks: JwksServer, sts: TokenExchangeServer, connector: ConnectorBackend,
                    timeout_ms: int = 1000) -> dict:
    cfg = filter_config(jwks.port, listener_port)
    cfg["upstream_credentials"] = {
        "cache": {"max_entries": 100, "margin_seconds": 30},
        "targets": {
            "tasks-api": {"mode": "rfc8693", "cluster": "sts", "authority": f"127.0.0.1:{sts.port}", "path": "/token",
                          "audience": "tasks-api", "client_id": "mcp-gateway", "client_secret": "demo-secret",
                          "client_auth": "basic", "timeout_ms": timeout_ms},
            "reddit": {"mode": "connector", "cluster": "connector", "authority": f"127.0.0.1:{connector.port}",
                       "provider_id": "reddit", "inject_meta_key": "current_oauth_token", "timeout_ms": 1000},
            "backend": {"mode": "internal", "signing_key": INTERNAL_KEY, "key_id": "gw-1", "issuer": "mcp-authz",
                        "audience": "tasks-backend", "ttl_seconds": 60, "jwks_path": INTERNAL_JWKS_PATH},
        },
    }
    cfg["mcp"] = {"rules": [
        {"method": "tools/call", "name": "getTasks", "scopes": ["read:tasks"], "credential": "tasks-api"},
        {"method": "tools/call", "name": "get_reddit_user", "scopes": ["read:tasks"], "credential": "reddit"},
        {"method": "tools/call", "name": "internalTasks", "scopes": ["read:tasks"], "credential": "backend"},
        {"method": "tools/call", "name": "whoami"},
    ]}
    return cfg



def start_stack(tmp_path_factory, concurrency: int = 1, timeout_ms: int = 1000) -> Iterator[ExchangeStack]:
    key = make_key("ES256", kid="exchange-es256")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        echo = es.enter_context(EchoServer())
        sts = es.enter_context(TokenExchangeServer(subject_issuer=ISSUER, subject_jwks_url=f"http://127.0.0.1:{jwks.port}/jwks.json",
                                                   subject_audiences=[AUDIENCE], token_ttl=300))
        connector = es.enter_context(ConnectorBackend())
        envoy = Envoy(tmp_path_factory.mktemp("exchange"), upstream_port=echo.port, jwks_port=jwks.port,
                      filter_cfg=lambda port: exchange_config(port, jwks, sts, connector, timeout_ms),
                      concurrency=concurrency,
                      name=f"envoy-exchange-{concurrency}", extra_clusters={"sts": sts.port, "connector": connector.port})
        es.callback(envoy.stop)
        envoy.start()
        yield ExchangeStack(envoy, echo, sts, connector, key, jwks)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[ExchangeStack]:
    yield from start_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def stack4(tmp_path_factory) -> Iterator[ExchangeStack]:
    """Four workers, connections spread evenly over them. The exchange timeout is 3 s so that a burst held
    0.5 s by the token server stays in flight even on a loaded machine."""
    yield from start_stack(tmp_path_factory, concurrency=4, timeout_ms=3000)


@pytest.fixture(autouse=True)
def _fresh(request) -> None:
    for name in ("stack", "stack4"):
        if name in request.fixturenames:
            stack = request.getfixturevalue(name)
            for server in (stack.sts, stack.connector):
                server.reset_counters()
                server.set_default("ok")


def error_data(r: httpx.Response) -> dict:
    return r.json()["error"]["data"]


# -- RFC 8693 ------------------------------------------------------------------------------------------


def test_rfc8693_upstream_gets_the_exchanged_token_never_the_original(stack: ExchangeStack) -> None:
    token = stack.token()
    r, seen = stack.call("getTasks", token)
    assert r.status_code == 200, r.text
    exchanged = bearer(seen)
    assert exchanged != token and token not in json.dumps(seen)
    claims = jwt.decode(exchanged, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["aud"] == "tasks-api" and claims["act"] == {"sub": "mcp-gateway"}
    assert stack.sts.hits_for("/token") == 1
    form = stack.sts.requests[0].form()
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert form["subject_token"] == [token] and form["audience"] == ["tasks-api"]


def test_rfc8693_hundred_calls_one_exchange(stack: ExchangeStack) -> None:
    token = stack.token()
    first = None
    for i in range(100):
        r, seen = stack.call("getTasks", token, id_=i)
        assert r.status_code == 200
        first = first or bearer(seen)
        assert bearer(seen) == first
    assert stack.sts.hits_for("/token") == 1
    assert stack.envoy.metric("mcp_authz.exchange.cache_hit") >= 99


def burst_with_one_exchange(stack: ExchangeStack, token: str, size: int = 16) -> str:
    """`size` concurrent calls while the first exchange is held in flight; all must get one token."""
    stack.sts.script(("delay", 0.5))  # keep the first exchange in flight while the burst arrives
    with concurrent.futures.ThreadPoolExecutor(size) as pool:
        results = list(pool.map(lambda i: stack.call("getTasks", token, id_=i), range(size)))
    assert all(r.status_code == 200 for r, _ in results), [r.text for r, _ in results if r.status_code != 200]
    tokens = {bearer(seen) for _, seen in results}
    assert len(tokens) == 1
    assert stack.sts.hits_for("/token") == 1
    return tokens.pop()


def test_rfc8693_concurrent_burst_makes_one_exchange(stack: ExchangeStack) -> None:
    burst_with_one_exchange(stack, stack.token())


def test_rfc8693_one_exchange_per_process_across_workers(stack4: ExchangeStack) -> None:
    """Four workers share exchanged tokens: a burst over 16 connections (4 per worker) makes one callout,
    and later requests on any worker reuse its token."""
    token = stack4.token()
    exchanged = burst_with_one_exchange(stack4, token)
    for i in range(8):
        r, seen = stack4.call("getTasks", token, id_=100 + i)
        assert r.status_code == 200 and bearer(seen) == exchanged
    assert stack4.sts.hits_for("/token") == 1


def test_rfc8693_failed_exchange_on_one_worker_is_not_shared(stack4: ExchangeStack) -> None:
    """A failure frees the slot instead of being shared: the request whose exchange timed out gets 504,
    the other workers' requests, which were waiting for it, exchange once more and share that token."""
    token = stack4.token()
    stack4.sts.script("hang")  # the first exchange never answers: its 3 s timeout fails it
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: stack4.call("getTasks", token, id_=i), range(4)))
    finally:
        stack4.sts.release()
    assert sorted(r.status_code for r, _ in results) == [200, 200, 200, 504], [r.text for r, _ in results]
    assert len({bearer(seen) for r, seen in results if r.status_code == 200}) == 1
    assert stack4.sts.hits_for("/token") == 2
    r, seen = stack4.call("getTasks", token, id_=9)
    assert r.status_code == 200, r.text
    assert stack4.sts.hits_for("/token") == 2


def test_rfc8693_other_subjects_exchange_separately(stack: ExchangeStack) -> None:
    a, b = stack.token(sub="alice"), stack.token(sub="bob")
    ra, sa = stack.call("getTasks", a)
    rb, sb = stack.call("getTasks", b)
    assert (ra.status_code, rb.status_code) == (200, 200)
    assert jwt.decode(bearer(sb), options={"verify_signature": False})["sub"] == "bob"
    assert stack.sts.hits_for("/token") == 2


def test_rfc8693_token_reused_only_until_the_subject_token_expires(stack: ExchangeStack) -> None:
    # The exchanged token lives 300 s, but the subject token expires in 32 s: with a 30 s safety margin
    # the exchange may be reused for about 2 s only.
    token = stack.token(exp=int(time.time()) + 32)
    assert stack.call("getTasks", token)[0].status_code == 200
    assert stack.call("getTasks", token)[0].status_code == 200
    assert stack.sts.hits_for("/token") == 1
    time.sleep(2.5)  # waiting for an expiry, not for another process
    assert stack.call("getTasks", token)[0].status_code == 200
    assert stack.sts.hits_for("/token") == 2


@pytest.mark.parametrize("behaviour, status, error", [
    ("invalid_grant", 403, "access_denied"),
    ("invalid_target", 403, "access_denied"),
    ("invalid_client", 502, "api_error"),
    ("404", 502, "api_error"),
    ("500", 502, "api_error"),
    ("garbage", 502, "api_error"),
    ("expires_in_0", 502, "api_error"),
    ("expires_in_negative", 502, "api_error"),
    ("no_access_token", 502, "api_error"),
    ("wrong_token_type", 502, "api_error"),
    (("delay", 1.5), 504, "api_error"),
])
def test_rfc8693_failures(stack: ExchangeStack, behaviour, status: int, error: str) -> None:
    stack.sts.set_default(behaviour)
    token = stack.token()
    r, seen = stack.call("getTasks", token, id_=77)
    assert r.status_code == status, r.text
    assert seen is None, "nothing reaches the upstream without its credential"
    body = r.json()
    assert body["id"] == 77
    assert body["error"]["data"]["error"] == error
    assert body["error"]["data"]["provider"] == "tasks-api"
    assert token not in r.text
    stack.sts.set_default("ok")
    assert stack.call("getTasks", token)[0].status_code == 200, "failures are not cached"


# -- connector (seed 001) --------------------------------------------------------------------------------


def test_connector_exchange_rewrites_authorization_and_meta(stack: ExchangeStack) -> None:
    temp = stack.connector.issue_temp_token("alice", "reddit")
    token = stack.token(sub="alice")
    r, seen = stack.call("get_reddit_user", token, {"userId": "alice", "userToken": temp, "providerId": "reddit"})
    assert r.status_code == 200, r.text
    provider_token = stack.connector.provider_token("alice", "reddit")
    assert bearer(seen) == provider_token
    meta = json.loads(seen["body"])["params"]["_meta"]
    assert meta == {"userId": "alice", "providerId": "reddit", "current_oauth_token": provider_token}
    assert temp not in seen["body"] and token not in json.dumps(seen)
    assert int(seen["headers"]["content-length"]) == len(seen["body"].encode())
    assert stack.connector.exchanges == 1


def test_connector_user_id_spoofing_is_refused(stack: ExchangeStack) -> None:
    temp = stack.connector.issue_temp_token("alice", "reddit")
    r, seen = stack.call("get_reddit_user", stack.token(sub="mallory"), {"userId": "alice", "userToken": temp, "providerId": "reddit"})
    assert r.status_code == 403
    assert error_data(r)["error"] == "user_mismatch"
    assert seen is None and stack.connector.hits == 0


@pytest.mark.parametrize("meta_text, status, error", [
    # Another spelling of the verified subject is another user.
    ('{"userId":"Alice","userToken":"%s","providerId":"reddit"}', 403, "user_mismatch"),
    ('{"userId":"alice ","userToken":"%s","providerId":"reddit"}', 403, "user_mismatch"),
    ('{"userId":"alice\\u0000","userToken":"%s","providerId":"reddit"}', 403, "user_mismatch"),
    ('{"userId":["alice"],"userToken":"%s","providerId":"reddit"}', 400, "invalid_parameter"),
    # Two userIds (one the caller's): parsers disagree on which one counts, so the body is refused.
    ('{"userId":"mallory","userId":"alice","userToken":"%s","providerId":"reddit"}', 400, None),
    ('{"userId":"alice","u\\u0073erId":"mallory","userToken":"%s","providerId":"reddit"}', 400, None),
    ('{"userId":"alice","userToken":"%s","providerId":"reddit","providerId":"github"}', 400, None),
])
def test_connector_meta_spoofing_is_refused(stack: ExchangeStack, meta_text: str, status: int, error) -> None:
    temp = stack.connector.issue_temp_token("alice", "reddit")
    body = '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_reddit_user","_meta":%s}}' % (
        meta_text % temp)
    r, seen = stack.post(body, stack.token(sub="alice"))
    assert r.status_code == status, r.text
    if error is None:
        assert r.json()["error"]["code"] == -32700  # duplicate keys: a parse error before any exchange
    else:
        assert error_data(r)["error"] == error
    assert seen is None and stack.connector.hits == 0
    assert temp not in r.text


def test_connector_escaped_user_id_is_the_same_user(stack: ExchangeStack) -> None:
    """Control: JSON escapes are decoded before comparing, so alice spelled with an escaped `a` is alice."""
    temp = stack.connector.issue_temp_token("alice", "reddit")
    body = ('{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"get_reddit_user","_meta":'
            '{"userId":"\\u0061lice","userToken":"%s","providerId":"reddit"}}}' % temp)
    r, seen = stack.post(body, stack.token(sub="alice"))
    assert r.status_code == 200, r.text
    assert bearer(seen) == stack.connector.provider_token("alice", "reddit")


@pytest.mark.parametrize("meta, status, error, details", [
    ({"userId": "alice", "providerId": "reddit"}, 400, "missing_parameters", "Missing: userToken"),
    (None, 400, "missing_parameters", "Missing: userId, userToken, providerId"),
    ({"userId": "alice", "userToken": "", "providerId": "reddit"}, 400, "invalid_parameter", "userToken must be a non-empty string"),
    ({"userId": "alice", "userToken": 5, "providerId": "reddit"}, 400, "invalid_parameter", "userToken must be a non-empty string"),
    ({"userId": "alice", "userToken": "t", "providerId": "github"}, 403, "provider_mismatch", "Received providerId: github"),
])
def test_connector_parameter_errors(stack: ExchangeStack, meta, status, error, details) -> None:
    r, seen = stack.call("get_reddit_user", stack.token(sub="alice"), meta, id_=5)
    assert r.status_code == status, r.text
    data = error_data(r)
    assert (data["error"], data["provider"]) == (error, "reddit")
    assert details in data["details"]
    assert r.json()["id"] == 5
    assert seen is None and stack.connector.hits == 0


@pytest.mark.parametrize("behaviour, status", [("401", 401), ("403", 403), ("404", 502), ("500", 502), ("garbage", 502),
                                               ("no_access_token", 502), ("expires_in_negative", 502), (("delay", 1.5), 504)])
def test_connector_backend_failures(stack: ExchangeStack, behaviour, status: int) -> None:
    stack.connector.set_default(behaviour)
    temp = stack.connector.issue_temp_token("alice", "reddit")
    r, seen = stack.call("get_reddit_user", stack.token(sub="alice"), {"userId": "alice", "userToken": temp, "providerId": "reddit"})
    assert r.status_code == status, r.text
    assert seen is None
    assert temp not in r.text


def test_connector_invalid_temp_token_is_401(stack: ExchangeStack) -> None:
    r, _ = stack.call("get_reddit_user", stack.token(sub="alice"), {"userId": "alice", "userToken": "tmp-forged", "providerId": "reddit"})
    assert r.status_code == 401
    assert error_data(r)["error"] == "invalid_token"


# -- internal tokens (seed 000 trusted gateway) ------------------------------------------------------------


def test_internal_token_verifies_against_the_published_key(stack: ExchangeStack) -> None:
    token = stack.token(sub="alice", scope="read:tasks")
    r, seen = stack.call("internalTasks", token)
    assert r.status_code == 200, r.text
    internal = bearer(seen)
    assert internal != token
    jwks = httpx.get(f"{stack.envoy.url}{INTERNAL_JWKS_PATH}").json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(internal, key.key, algorithms=["EdDSA"], audience="tasks-backend", issuer="mcp-authz")
    assert claims["sub"] == "alice" and claims["scope"] == "read:tasks"
    assert claims["exp"] - claims["iat"] <= 60
    assert jwt.get_unverified_header(internal)["kid"] == "gw-1"


def test_passthrough_tools_still_get_the_client_token(stack: ExchangeStack) -> None:
    token = stack.token()
    r, seen = stack.call("whoami", token)
    assert r.status_code == 200
    assert bearer(seen) == token
    assert stack.sts.hits == 0 and stack.connector.hits == 0


def test_default_exchange_holds_a_streamed_body_until_the_credential_is_known(stack: ExchangeStack, tmp_path) -> None:
    """A guarded non-MCP POST whose default credential is an exchange: body frames that arrive while the
    callout runs must wait with the headers, or the request would leave with the client's token."""
    def configure(listener_port: int) -> dict:
        cfg = filter_config(stack.jwks.port, listener_port)
        cfg["paths"] = [{"prefix": "/"}]
        cfg["mcp"] = {"paths": [{"exact": "/mcp"}]}
        cfg["upstream_credentials"] = {"default": "tasks-api", "targets": {"tasks-api": {
            "mode": "rfc8693", "cluster": "sts", "authority": f"127.0.0.1:{stack.sts.port}", "path": "/token",
            "audience": "tasks-api", "client_id": "mcp-gateway", "client_secret": "demo-secret"}}}
        return cfg

    with Envoy(tmp_path, upstream_port=stack.echo.port, jwks_port=stack.jwks.port, filter_cfg=configure,
               name="envoy-default-exchange", extra_clusters={"sts": stack.sts.port}) as envoy:
        stack.sts.script(("delay", 0.3))
        token = stack.token()

        def frames():
            for _ in range(20):
                yield b"x" * 100
        r = httpx.post(f"{envoy.url}/api/tasks", content=frames(), timeout=20,
                       headers={"authorization": f"Bearer {token}", "x-test-id": "default-exchange"})
        assert r.status_code == 200, r.text
        [seen] = stack.echo.seen("default-exchange")
        assert bearer(seen) != token and token not in json.dumps(seen)
        assert seen["body"] == "x" * 2000
        assert stack.sts.hits_for("/token") == 1
