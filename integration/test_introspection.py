"""Opaque tokens by RFC 7662 introspection, through real Envoy: the stack's identity provider issues opaque
tokens and serves a client-authenticated introspection endpoint, counting its callouts; the echo upstream
records what the MCP server would have received. Each test uses tokens of its own (answers are cached)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import time
from typing import Iterator

import httpx
import pytest

from harness.envoy import Envoy, filter_config
from harness.keys import AUDIENCE, make_key, mint
from harness.ports import free_port
from harness.servers import EchoServer, JwksServer
from stack.idp import IdentityProvider

CLIENT_ID, CLIENT_SECRET = "mcp-gateway", "demo-secret"
TIMEOUT_MS = 1000
NEGATIVE_TTL_SECONDS = 60


def introspecting_config(listener_port: int, jwks_port: int, idp_port: int, issuer: str, client_auth: str = "basic",
                         tokens: str = "opaque") -> dict:
    cfg = filter_config(jwks_port, listener_port)
    if tokens == "all":
        cfg["providers"] = []  # "all" must be the only provider (it would send the others' JWTs to the endpoint)
    cfg["providers"].append({
        "name": "opaque", "issuer": issuer, "audiences": [AUDIENCE],
        "introspection": {"cluster": "idp_introspect", "authority": f"127.0.0.1:{idp_port}", "path": "/introspect",
                          "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "client_auth": client_auth,
                          "tokens": tokens, "timeout_ms": TIMEOUT_MS,
                          "cache": {"max_ttl_seconds": 300, "negative_ttl_seconds": NEGATIVE_TTL_SECONDS}},
    })
    return cfg


class IntrospectionStack:
    def __init__(self, envoy: Envoy, echo: EchoServer, idp: IdentityProvider, key) -> None:
        self.envoy, self.echo, self.idp, self.key = envoy, echo, idp, key
        self.tokens: list[str] = []  # every opaque token used, to search the log for

    def opaque(self, sub: str = "alice", scope: str = "read:tasks", audience: str = AUDIENCE, **kw) -> str:
        token = self.idp.mint_opaque(sub=sub, scope=scope, audience=audience, **kw)
        self.tokens.append(token)
        return token

    def get(self, token: str, client: httpx.Client | None = None) -> tuple[httpx.Response, dict | None]:
        """A guarded GET (over `client`'s connection, else a new one); the response and what the upstream
        received (None: nothing)."""
        marker = f"t{time.monotonic_ns()}"
        with contextlib.ExitStack() as es:
            client = client or es.enter_context(httpx.Client(timeout=20))
            r = client.get(f"{self.envoy.url}/mcp", headers={"authorization": f"Bearer {token}", "x-test-id": marker})
        seen = self.echo.seen(marker)
        return r, (seen[0] if seen else None)

    @property
    def callouts(self) -> int:
        return self.idp.hits_for("/introspect")


@contextlib.contextmanager
def running(tmp_path, concurrency: int = 1, client_auth: str = "basic", tokens: str = "opaque",
            idp_port: int | None = None, name: str = "envoy-introspection") -> Iterator[IntrospectionStack]:
    """An Envoy whose second provider introspects; with `idp_port`, no IdP runs there yet (the test starts it)."""
    key = make_key("ES256", kid="introspection-es256")
    with contextlib.ExitStack() as es:
        jwks = es.enter_context(JwksServer([key]))
        echo = es.enter_context(EchoServer())
        idp = None
        if idp_port is None:
            idp = es.enter_context(IdentityProvider(introspection_client_auth=client_auth))
        port = idp_port or idp.port
        issuer = f"http://127.0.0.1:{port}"
        envoy = Envoy(tmp_path, upstream_port=echo.port, jwks_port=jwks.port, concurrency=concurrency, name=name,
                      filter_cfg=lambda lp: introspecting_config(lp, jwks.port, port, issuer, client_auth, tokens),
                      extra_clusters={"idp_introspect": port})
        es.callback(envoy.stop)
        envoy.start()
        yield IntrospectionStack(envoy, echo, idp, key)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[IntrospectionStack]:
    """Two workers, connections spread evenly over them; the IdP accepts client_secret_basic only."""
    with running(tmp_path_factory.mktemp("introspection"), concurrency=2) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(request) -> None:
    if "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        stack.idp.reset_counters()
        stack.idp.set_default("ok")


def assert_unavailable(r: httpx.Response, seen: dict | None) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) > 0
    assert r.json()["error"] == "temporarily_unavailable"
    assert seen is None


def test_active_opaque_token_reaches_the_upstream_with_claim_headers(stack: IntrospectionStack) -> None:
    token = stack.opaque(sub="opaque-alice", scope="read:tasks write:tasks")
    r, seen = stack.get(token)
    assert r.status_code == 200, r.text
    assert seen["headers"]["x-user-sub"] == "opaque-alice"
    assert seen["headers"]["x-user-scopes"] == "read:tasks write:tasks"
    assert stack.callouts == 1
    # The endpoint was asked as RFC 7662 says, authenticated with client_secret_basic.
    asked = stack.idp.requests[-1]
    assert asked.form() == {"token": [token], "token_type_hint": ["access_token"]}
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert asked.headers["authorization"] == f"Basic {expected}"


def test_jwts_still_go_to_their_provider(stack: IntrospectionStack) -> None:
    r, seen = stack.get(mint(stack.key, sub="jwt-bob"))
    assert r.status_code == 200, r.text
    assert seen["headers"]["x-user-sub"] == "jwt-bob"
    assert stack.callouts == 0


def test_inactive_token_is_401_and_the_negative_answer_is_cached(stack: IntrospectionStack) -> None:
    token = "unknown-" + "x" * 30
    stack.tokens.append(token)
    # One connection, so one worker: negative answers stay on the worker that got them.
    with httpx.Client(timeout=20) as client:
        answers = [stack.get(token, client) for _ in range(2)]
    for r, seen in answers:
        assert r.status_code == 401, r.text
        assert seen is None
        assert r.json()["error"] == "invalid_token"
        challenge = r.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge
    assert stack.callouts == 1  # the second answer came from the cache (negative TTL 60 s)


def test_tokens_no_server_issues_are_401_without_a_callout(stack: IntrospectionStack) -> None:
    for token in ["short", "fifteen-chars-x", "not!a!b64token!at!all"]:
        r, seen = stack.get(token)
        assert (r.status_code, seen) == (401, None), r.text
        assert r.json()["error"] == "invalid_token"
    assert stack.callouts == 0


def test_refresh_token_is_not_an_access_token(stack: IntrospectionStack) -> None:
    r, seen = stack.get(stack.opaque(sub="refreshing", token_type="refresh_token"))
    assert (r.status_code, seen) == (401, None), r.text
    assert r.json()["error"] == "invalid_token"
    assert stack.callouts == 1


def test_tokens_all_beside_another_provider_is_refused_at_load(tmp_path) -> None:
    def render_all(port: int) -> str:
        cfg = introspecting_config(port, 9, 9, "http://127.0.0.1:9")
        cfg["providers"][1]["introspection"]["tokens"] = "all"
        return json.dumps(cfg)

    envoy = Envoy(tmp_path, upstream_port=9, jwks_port=9, filter_json=render_all)
    rc, log = envoy.start_expect_failure()
    assert rc != 0, log[-3000:]
    lines = [line for line in log.splitlines()
             if "providers[1].introspection.tokens" in line and "other providers' JWTs" in line]
    assert lines, log[-3000:]
    assert CLIENT_SECRET not in log


def test_revoked_token_is_401(stack: IntrospectionStack) -> None:
    token = stack.opaque()
    stack.idp.revoke(token)
    r, seen = stack.get(token)
    assert (r.status_code, seen) == (401, None), r.text


def test_wrong_audience_is_401(stack: IntrospectionStack) -> None:
    r, seen = stack.get(stack.opaque(audience="some-other-api"))
    assert r.status_code == 401, r.text
    assert seen is None
    assert r.json()["message"] == "audience not accepted"


def test_active_answer_is_cached(stack: IntrospectionStack) -> None:
    token = stack.opaque(sub="cached")
    for _ in range(5):
        r, seen = stack.get(token)
        assert r.status_code == 200, r.text
        assert seen["headers"]["x-user-sub"] == "cached"
    assert stack.callouts == 1


@pytest.mark.parametrize("behaviour", [("status", 500), "garbage", ("status", 200, {"active": "yes"}),
                                       ("status", 200, {"active": True, "aud": AUDIENCE, "pad": "x" * 70_000}),
                                       ("delay", TIMEOUT_MS / 1000 + 1.5)],
                         ids=["5xx", "not_json", "active_not_boolean", "over_64KiB", "slower_than_timeout"])
def test_endpoint_failure_is_503_then_recovers(stack: IntrospectionStack, behaviour) -> None:
    token = stack.opaque(sub="after-failure")
    stack.idp.script(behaviour)
    r, seen = stack.get(token)
    assert_unavailable(r, seen)
    # Failures are not cached: once the endpoint answers again, the same token goes through.
    r, seen = stack.get(token)
    assert r.status_code == 200, r.text
    assert seen["headers"]["x-user-sub"] == "after-failure"
    assert stack.callouts == 2


def test_burst_of_one_new_token_across_workers_makes_one_callout(stack: IntrospectionStack) -> None:
    token = stack.opaque(sub="burst")
    stack.idp.script(("delay", 0.5))  # keep the first callout in flight while the burst arrives
    size = 16
    with concurrent.futures.ThreadPoolExecutor(size) as pool:
        results = list(pool.map(lambda _: stack.get(token), range(size)))
    assert [r.status_code for r, _ in results] == [200] * size, [r.text for r, _ in results if r.status_code != 200]
    assert all(seen["headers"]["x-user-sub"] == "burst" for _, seen in results)
    assert stack.callouts == 1


def test_tokens_never_reach_the_envoy_log(stack: IntrospectionStack) -> None:
    stack.idp.script(("status", 500))
    token = stack.opaque()
    assert stack.get(token)[0].status_code == 503
    log = stack.envoy.log_text()
    assert "token introspection at cluster \"idp_introspect\" failed: answered HTTP 500" in log
    assert stack.tokens and not [t for t in stack.tokens if t in log]
    assert CLIENT_SECRET not in log


def test_client_secret_post_and_tokens_all(tmp_path) -> None:
    """client_auth "post" sends the credentials in the form; with tokens "all", JWTs are introspected too."""
    with running(tmp_path, client_auth="post", tokens="all", name="envoy-introspection-post") as s:
        r, seen = s.get(s.opaque(sub="posted"))
        assert r.status_code == 200, r.text
        assert seen["headers"]["x-user-sub"] == "posted"
        form = s.idp.requests[-1].form()
        assert (form["client_id"], form["client_secret"]) == ([CLIENT_ID], [CLIENT_SECRET])
        assert "authorization" not in s.idp.requests[-1].headers
        # A JWT the filter could verify is introspected instead: this IdP never issued it, so it is inactive.
        r, seen = s.get(mint(s.key))
        assert (r.status_code, seen) == (401, None), r.text
        assert s.callouts == 2


def test_endpoint_down_is_503_then_up_is_200(tmp_path) -> None:
    port = free_port()
    with running(tmp_path, idp_port=port, name="envoy-introspection-down") as s:
        token = "opaque-while-down-" + "y" * 20
        r, seen = s.get(token)
        assert_unavailable(r, seen)
        with IdentityProvider(port=port) as idp:
            idp.mint_opaque(sub="back", audience=AUDIENCE, token=token)
            r, seen = s.get(token)
            assert r.status_code == 200, r.text
            assert seen["headers"]["x-user-sub"] == "back"
            assert idp.hits_for("/introspect") == 1
        assert token not in s.envoy.log_text()
        # Envoy answers a refused connection itself (503): the log says so, without the token.
        assert "token introspection at cluster \"idp_introspect\" failed: answered HTTP 503" in s.envoy.log_text()
