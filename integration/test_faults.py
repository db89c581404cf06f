"""Faults around the filter, through real Envoy: the JWKS server down (at start and mid-run), answering
garbage or 50 MB, keys rotated by a scheduled refresh; the token-exchange server and the MCP upstream
down; the filter's configuration replaced while Envoy runs (ECDS, as Istio delivers it). In every case
the filter keeps serving in the same Envoy process, answers what docs/configuration.md says, and lets
nothing through that it should not. Waits are bounded polls on counters, hit counts and gauges.

Other JWKS faults are in test_jwks.py (slow beyond the timeout, 500/html/empty/hang after a good load,
rotation through an unknown kid) and other exchange faults in test_exchange.py (slow, 5xx, garbage,
`expires_in` 0 or negative)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
from pathlib import Path

import httpx
import pytest

from harness.envoy import Envoy, filter_config, remote_jwks
from harness.keys import make_key, mint
from harness.ports import free_port
from harness.processes import proc_status_kib
from harness.servers import EchoServer, JwksServer

WAIT = 15.0  # bound for every wait on Envoy, a counter or a server
QUICK_RETRY = {"retry_initial_backoff_ms": 100, "retry_max_backoff_ms": 500}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "getTasks", "arguments": {}}}


@pytest.fixture(scope="module")
def key():
    return make_key("ES256", kid="faults-es256")


def counter(envoy: Envoy, name: str) -> int:
    return envoy.metric(f"mcp_authz.{name}") or 0


def wait_counter(envoy: Envoy, name: str, at_least: int) -> None:
    assert envoy.wait_for(lambda: counter(envoy, name) >= at_least, WAIT), \
        f"mcp_authz.{name} stayed at {counter(envoy, name)} (< {at_least})"


def get(envoy: Envoy, token: str | None, path: str = "/mcp", test_id: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if test_id:
        headers["x-test-id"] = test_id
    return httpx.get(envoy.url + path, headers=headers, timeout=20)


def post_call(envoy: Envoy, token: str, test_id: str, body: dict = CALL) -> httpx.Response:
    return httpx.post(envoy.url + "/mcp", json=body, timeout=30,
                      headers={"authorization": f"Bearer {token}", "x-test-id": test_id})


def assert_503_retry_after(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers.get("retry-after", "").isdigit(), resp.headers
    assert resp.json()["error"] == "temporarily_unavailable"


def hwm_kib(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), KiB."""
    return proc_status_kib(pid, "VmHWM")


@contextlib.contextmanager
def envoy_with(tmp_path: Path, jwks_port: int, configure=None, upstream_port: int | None = None, **kw):
    """Echo upstream (unless `upstream_port`) + Envoy with the test contract's filter config."""
    with contextlib.ExitStack() as es:
        echo = es.enter_context(EchoServer()) if upstream_port is None else None

        def cfg(listener_port: int) -> dict:
            c = filter_config(jwks_port, listener_port, jwks_wait_timeout_ms=1000)
            if configure:
                configure(c)
            return c

        envoy = Envoy(tmp_path, upstream_port=upstream_port or echo.port, jwks_port=jwks_port, filter_cfg=cfg, **kw)
        es.callback(envoy.stop)
        envoy.start()
        yield envoy, echo


# ---- JWKS -------------------------------------------------------------------------------------------------


def test_jwks_down_at_start_then_up(tmp_path, key):
    """Nothing listens on the JWKS port: 503 with Retry-After (never an unauthenticated pass), missing
    tokens still 401; once the server comes up the filter loads the keys by itself, without restart."""
    port = free_port()
    with envoy_with(tmp_path, port, lambda c: remote_jwks(c).update(QUICK_RETRY)) as (envoy, echo):
        pid = envoy.proc.pid
        wait_counter(envoy, "jwks_fetch_failed", 1)
        assert_503_retry_after(get(envoy, mint(key)))
        assert get(envoy, None).status_code == 401
        assert echo.requests == []
        assert "JWKS fetch from cluster idp_jwks failed" in envoy.log_text()
        with JwksServer([key], port=port) as jwks:
            assert jwks.wait_for_hits(1, WAIT)
            wait_counter(envoy, "jwks_fetch_success", 1)
            resp = get(envoy, mint(key, sub="after-recovery"), test_id="recovered")
            assert resp.status_code == 200, resp.text
            assert echo.seen("recovered")[0]["headers"]["x-user-sub"] == "after-recovery"
        assert envoy.proc.pid == pid and envoy.running


def test_jwks_down_mid_run_keeps_the_last_keys(tmp_path, key):
    """The JWKS server goes away after a good load: refreshes fail (counted, logged), tokens keep being
    verified with the last keys, and an unknown kid is still refused."""
    jwks = JwksServer([key]).start()
    try:
        def configure(c):
            remote_jwks(c).update(refresh_interval_seconds=1, min_refresh_interval_seconds=1, **QUICK_RETRY)

        with envoy_with(tmp_path, jwks.port, configure) as (envoy, echo):
            assert get(envoy, mint(key)).status_code == 200
            jwks.stop()  # connection refused from now on
            failed = counter(envoy, "jwks_fetch_failed")
            wait_counter(envoy, "jwks_fetch_failed", failed + 2)
            resp = get(envoy, mint(key, sub="stale-but-valid"), test_id="stale")
            assert resp.status_code == 200, resp.text
            assert echo.seen("stale")[0]["headers"]["x-user-sub"] == "stale-but-valid"
            stranger = make_key("ES256", kid="not-published")
            resp = get(envoy, mint(stranger))
            assert resp.status_code == 401 and resp.json()["message"] == "signing key not found"
            assert "keeping the previous keys" in envoy.log_text()
    finally:
        jwks.stop()


@pytest.mark.parametrize("answer, logged", [
    ("html", "JWKS is not valid JSON"),
    ("empty", "JWKS has no usable signing key (the keys array is empty)"),
    (("huge", 5 * 1024 * 1024), "exceeds max_bytes"),
    (("huge", 50 * 1024 * 1024), "no response"),
], ids=["html", "empty_keys", "5MB", "50MB"])
def test_bad_jwks_answers_at_start_fail_closed_then_recover(tmp_path, key, answer, logged):
    """No good answer yet (500s, then the bad answer under test): requests get 503 (never a pass), the
    reason is logged, and once the server answers properly the filter recovers in the same process.
    5 MB is over `max_bytes` (256 KiB) and refused by the filter before its body is copied into the VM;
    50 MB is over the 32 MiB that Envoy's callout client buffers, so Envoy drops it (its peak memory grows
    by less than the answer) and the filter sees no response."""
    jwks = JwksServer([key])
    jwks.set_default("500")
    with jwks, envoy_with(tmp_path, jwks.port, lambda c: remote_jwks(c).update(QUICK_RETRY)) as (envoy, echo):
        wait_counter(envoy, "jwks_fetch_failed", 1)
        assert "HTTP status 500" in envoy.log_text()
        peak_before = hwm_kib(envoy.proc.pid)
        jwks.script(answer)  # the next retry gets it
        assert envoy.wait_for(lambda: logged in envoy.log_text(), WAIT), envoy.log_text()[-3000:]
        assert_503_retry_after(get(envoy, mint(key)))
        assert echo.requests == []
        if answer == ("huge", 50 * 1024 * 1024):
            grown_mib = (hwm_kib(envoy.proc.pid) - peak_before) / 1024
            assert grown_mib < 50, f"Envoy's peak memory grew by {grown_mib:.0f} MiB"
        jwks.set_default("ok")
        wait_counter(envoy, "jwks_fetch_success", 1)
        assert get(envoy, mint(key)).status_code == 200
        assert envoy.running


def test_scheduled_refresh_rotates_keys_and_drops_cached_verifications(tmp_path):
    """The IdP rotates; a scheduled refresh (no unknown kid involved) picks it up: the new key works
    without an early fetch, and a token verified (and cached) with the removed key is refused."""
    old, new = make_key("RS256", kid="rotate-old"), make_key("EdDSA", kid="rotate-new")
    with JwksServer([old]) as jwks:
        def configure(c):
            remote_jwks(c).update(refresh_interval_seconds=1, min_refresh_interval_seconds=1)

        with envoy_with(tmp_path, jwks.port, configure) as (envoy, echo):
            cached = mint(old)
            assert get(envoy, cached).status_code == 200
            assert get(envoy, cached).status_code == 200
            assert counter(envoy, "jwt_cache_hit") >= 1
            jwks.set_keys([new])
            # Every answer so far succeeded, so the (n+1)-th success is the first answer served after the
            # rotation (answers are counted in the order they were requested: one fetch at a time).
            served_before = jwks.hits
            wait_counter(envoy, "jwks_fetch_success", served_before + 1)
            resp = get(envoy, mint(new, sub="rotated"), test_id="rotated")
            assert resp.status_code == 200, resp.text
            assert counter(envoy, "jwks_refetch_unknown_kid") == 0, "the scheduled refresh had the new key"
            resp = get(envoy, cached)
            assert resp.status_code == 401 and resp.json()["message"] == "signing key not found"


# ---- token exchange and upstream ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rfc8693", "connector"])
def test_exchange_server_down_is_502_and_other_tools_keep_working(tmp_path, key, mode):
    """Nothing listens on the exchange cluster: Envoy answers the callout itself (503), which the filter
    maps to 502 `api_error`; the call never reaches the upstream, and passthrough tools are unaffected."""
    dead = free_port()
    target = ({"mode": "rfc8693", "cluster": "exchange", "authority": f"127.0.0.1:{dead}", "path": "/token",
               "audience": "tasks-api"} if mode == "rfc8693" else
              {"mode": "connector", "cluster": "exchange", "authority": f"127.0.0.1:{dead}", "provider_id": "reddit"})

    def configure(c):
        c["upstream_credentials"] = {"targets": {"t": target}}
        c["mcp"] = {"rules": [{"method": "tools/call", "name": "getTasks", "credential": "t"},
                              {"method": "tools/call", "name": "whoami"}]}

    with JwksServer([key]) as jwks, envoy_with(tmp_path, jwks.port, configure, extra_clusters={"exchange": dead}) as (envoy, echo):
        token = mint(key, sub="alice")
        body = CALL | {"params": {"name": "getTasks", "_meta": {"userId": "alice", "userToken": "t", "providerId": "reddit"}}}
        resp = post_call(envoy, token, "exchange-down", body)
        assert resp.status_code == 502, resp.text
        assert resp.json()["error"]["data"]["error"] == "api_error"
        assert token not in resp.text
        assert echo.seen("exchange-down") == []
        assert counter(envoy, "exchange.failed.api_error") == 1
        resp = post_call(envoy, token, "passthrough", CALL | {"params": {"name": "whoami"}})
        assert resp.status_code == 200, resp.text
        assert echo.seen("passthrough")[0]["headers"]["authorization"] == f"Bearer {token}"


def test_upstream_down_is_503_from_envoy_and_the_filter_keeps_deciding(tmp_path, key):
    """The MCP server is down: an authorized call gets Envoy's own 503 (the filter had allowed it), a bad
    token is still refused by the filter, and when the server comes back the next call goes through."""
    port = free_port()

    def configure(c):
        c["mcp"] = {"rules": [{"method": "tools/call", "name": "getTasks"}]}

    with JwksServer([key]) as jwks, envoy_with(tmp_path, jwks.port, configure, upstream_port=port) as (envoy, _):
        resp = post_call(envoy, mint(key), "down")
        assert resp.status_code == 503 and "upstream connect error" in resp.text
        assert counter(envoy, "allowed") == 1
        assert get(envoy, "not-a-token").status_code == 401
        assert counter(envoy, "denied.malformed") == 1
        with EchoServer(port=port) as echo:
            resp = post_call(envoy, mint(key), "back")
            assert resp.status_code == 200, resp.text
            assert len(echo.seen("back")) == 1


# ---- hot reload of the filter configuration ----------------------------------------------------------


def _rules_cfg(jwks_port: int, listener_port: int, get_tasks_scope: str) -> str:
    cfg = filter_config(jwks_port, listener_port)
    cfg["mcp"] = {"rules": [{"method": "tools/call", "name": "getTasks", "scopes": [get_tasks_scope]}]}
    return json.dumps(cfg)


def _ecds(envoy: Envoy, stat: str) -> int:
    name = f"extension_config_discovery.http_filter.mcp_authz.{stat}"
    return envoy.stats(f"^{name}$").get(name, 0)


class PartialPost:
    """A POST whose headers and first half of body are sent; the rest is sent by `finish()`."""

    def __init__(self, envoy: Envoy, token: str, test_id: str, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=20)
        head = (f"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nx-test-id: {test_id}\r\nConnection: close\r\n\r\n").encode()
        self.sock.sendall(head + body[:len(body) // 2])

    def finish(self) -> int:
        with self.sock:
            self.sock.sendall(self.body[len(self.body) // 2:])
            data = b""
            while b"\r\n" not in data and (chunk := self.sock.recv(4096)):
                data += chunk
        return int(data.split(b" ", 2)[1])


def test_hot_reload_applies_new_rules_and_in_flight_requests_finish_under_the_old(tmp_path, key):
    """The filter config is replaced on disk (atomic rename) while Envoy runs: new requests follow the
    new rules, requests already inside Envoy finish as the old config decided (one held by the upstream,
    one whose body was still arriving), the JWKS is not fetched again, and a broken config is rejected
    while the last good one keeps serving — all in the same Envoy process."""
    reader, admin = mint(key, scope="read:tasks"), mint(key, scope="read:tasks admin")
    with JwksServer([key]) as jwks, EchoServer() as echo:
        envoy = Envoy(tmp_path, upstream_port=echo.port, jwks_port=jwks.port, concurrency=2, ecds=True,
                      filter_json=lambda lp: _rules_cfg(jwks.port, lp, "read:tasks"))
        with envoy, concurrent.futures.ThreadPoolExecutor(1) as pool:
            pid = envoy.proc.pid
            assert post_call(envoy, reader, "before").status_code == 200
            jwks_hits = jwks.hits

            echo.hold("in-upstream")
            held = pool.submit(post_call, envoy, reader, "in-upstream")
            assert echo.wait_for("in-upstream", WAIT), "the held request never reached the upstream"
            partial = PartialPost(envoy, reader, "in-filter", json.dumps(CALL).encode())
            assert envoy.wait_for(lambda: envoy.active_requests() >= 2, WAIT)

            reloads = _ecds(envoy, "config_reload")
            envoy.replace_filter_json(_rules_cfg(jwks.port, envoy.listener_port, "admin"))
            assert envoy.wait_for(lambda: _ecds(envoy, "config_reload") > reloads, WAIT)
            assert envoy.wait_for(lambda: post_call(envoy, reader, "probe").status_code == 403, WAIT), \
                "the new rules never applied"
            for i in range(4):  # fresh connections, spread over both workers
                assert post_call(envoy, reader, f"after-{i}").status_code == 403
                assert post_call(envoy, admin, f"admin-{i}").status_code == 200
            assert not any(echo.seen(f"after-{i}") for i in range(4))

            assert partial.finish() == 200, "decided by the config it started under"
            assert len(echo.seen("in-filter")) == 1
            echo.release("in-upstream")
            assert held.result(timeout=WAIT).status_code == 200
            assert jwks.hits == jwks_hits, "the key set is shared across configs: no refetch"

            rejected = _ecds(envoy, "update_rejected")
            broken = json.loads(_rules_cfg(jwks.port, envoy.listener_port, "admin")) | {"bogus": 1}
            envoy.replace_filter_json(json.dumps(broken))
            assert envoy.wait_for(lambda: _ecds(envoy, "update_rejected") > rejected, WAIT)
            assert "configuration refused: bogus: unknown field" in envoy.log_text()
            assert post_call(envoy, reader, "after-broken").status_code == 403
            assert post_call(envoy, admin, "admin-after-broken").status_code == 200
            assert envoy.proc.pid == pid and envoy.running
