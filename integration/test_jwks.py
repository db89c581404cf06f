"""The JWKS lifecycle as users observe it: first load, rotation, rate-limited refetches, failures after a
good load, and one fetch per Envoy process however many workers. Each test gets a fresh Envoy (the
state under test is the filter's key cache), with its own JWKS server and echo upstream."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from harness.envoy import remote_jwks
from harness.keys import make_key, mint

HOLD_TIMEOUT = 10.0  # bound for waiting on Envoy / the JWKS server to reach a state


def _retry_after_ok(value: str | None) -> bool:
    return value is not None and value.strip().isdigit() and int(value) > 0


# ---- one fetch per process --------------------------------------------------------------------------


def test_concurrency_4_fetches_jwks_once(stack_factory, keys):
    stack = stack_factory(concurrency=4)
    token = mint(keys["ES256"])

    # A round of requests over fresh connections (spread across the 4 workers by the kernel).
    def one(_):
        with httpx.Client(base_url=stack.envoy.url, timeout=20) as c:
            return c.get("/mcp", headers={"authorization": f"Bearer {token}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(40)))
    assert statuses == [200] * 40
    assert stack.jwks.hits == 1
    assert stack.envoy.metric("mcp_authz.jwks_fetch_success") == 1


# ---- rotation ---------------------------------------------------------------------------------------


def test_rotation_new_kid_accepted_without_restart_and_removed_key_rejected(stack_factory):
    old = make_key("RS256", kid="old-1")
    new = make_key("ES256", kid="new-1")
    stack = stack_factory([old])
    assert stack.get("/mcp", token=mint(old))[0].status_code == 200
    assert stack.jwks.hits == 1

    stack.jwks.set_keys([new])  # the IdP rotates: old key removed, new key published
    resp, tid = stack.get("/mcp", token=mint(new, sub="after-rotation"))
    assert resp.status_code == 200, resp.text  # held while the unknown kid triggered a refetch
    assert stack.upstream_saw(tid)[0]["headers"]["x-user-sub"] == "after-rotation"
    assert stack.jwks.hits == 2

    # A fresh token signed by the removed key is now refused (its kid is no longer in the set).
    resp, tid = stack.get("/mcp", token=mint(old))
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_token"
    assert stack.upstream_saw(tid) == []


def test_unknown_kid_refetch_is_rate_limited(stack_factory, keys):
    stack = stack_factory([keys["RS256"]])
    assert stack.get("/mcp", token=mint(keys["RS256"]))[0].status_code == 200
    assert stack.jwks.hits == 1
    stranger = make_key("RS256", kid="stranger")
    for i in range(12):
        token = mint(stranger, header={"kid": f"unknown-{i}"})
        resp, tid = stack.get("/mcp", token=token)
        assert resp.status_code == 401, resp.text
        assert stack.upstream_saw(tid) == []
    assert stack.jwks.hits <= 2  # at most one refetch per unknown_kid_refetch_interval (30 s)
    # and good tokens keep working throughout
    assert stack.get("/mcp", token=mint(keys["RS256"]))[0].status_code == 200


# ---- before the first load ----------------------------------------------------------------------------


def test_request_held_until_first_jwks_load(stack_factory, keys):
    stack = stack_factory([keys["EdDSA"]], prepare_jwks=lambda j: j.script("hang"))
    assert stack.jwks.wait_for_hits(1, HOLD_TIMEOUT), "Envoy never asked for the JWKS"
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(stack.get, "/mcp", mint(keys["EdDSA"], sub="early"))
        # The request is inside Envoy and has not reached the upstream: it is held.
        assert stack.envoy.wait_for(lambda: stack.envoy.active_requests() >= 1, HOLD_TIMEOUT)
        assert stack.echo.requests == []
        assert not fut.done()
        stack.jwks.release()
        resp, tid = fut.result(timeout=HOLD_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert stack.upstream_saw(tid)[0]["headers"]["x-user-sub"] == "early"


def test_first_fetch_fails_then_succeeds_and_held_request_passes(stack_factory, keys):
    stack = stack_factory([keys["PS256"]], prepare_jwks=lambda j: j.script("500"))
    resp, tid = stack.get("/mcp", token=mint(keys["PS256"]))
    assert resp.status_code == 200, resp.text
    assert stack.jwks.hits >= 2
    assert (stack.envoy.metric("mcp_authz.jwks_fetch_failed") or 0) >= 1
    assert (stack.envoy.metric("mcp_authz.jwks_fetch_success") or 0) >= 1


def test_first_fetch_times_out_then_succeeds(stack_factory, keys):
    def configure(cfg):
        remote_jwks(cfg)["timeout_ms"] = 300

    # First response delayed past the callout timeout; the retry is answered at once.
    stack = stack_factory([keys["ES384"]], configure=configure, prepare_jwks=lambda j: j.script(("delay", 1.0)))
    resp, _ = stack.get("/mcp", token=mint(keys["ES384"]))
    assert resp.status_code == 200, resp.text
    assert stack.jwks.hits >= 2


@pytest.mark.parametrize("failure", ["hang", "500"])
def test_jwks_never_available_is_503_with_retry_after(stack_factory, keys, failure):
    stack = stack_factory([keys["RS256"]], prepare_jwks=lambda j: j.set_default(failure))
    started = time.monotonic()
    resp, tid = stack.get("/mcp", token=mint(keys["RS256"]))
    elapsed = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert _retry_after_ok(resp.headers.get("retry-after")), resp.headers
    assert stack.upstream_saw(tid) == []
    assert elapsed < 3.0 + 2.0, f"held {elapsed:.1f}s, jwks_wait_timeout_ms is 3000"


def test_missing_token_while_jwks_unavailable_is_still_401(stack_factory, keys):
    stack = stack_factory([keys["RS256"]], prepare_jwks=lambda j: j.set_default("500"))
    resp, _ = stack.get("/mcp")
    assert resp.status_code == 401


# ---- failures after a good load -------------------------------------------------------------------


def test_bad_jwks_responses_after_good_load_keep_old_keys(stack_factory, keys):
    def configure(cfg):
        r = remote_jwks(cfg)
        r.update(refresh_interval_seconds=1, min_refresh_interval_seconds=1,
                 retry_initial_backoff_ms=100, retry_max_backoff_ms=200)

    key = keys["RS256"]
    stack = stack_factory([key], configure=configure)
    assert stack.get("/mcp", token=mint(key))[0].status_code == 200
    for failure in ["500", "html", "empty", "hang"]:
        stack.jwks.set_default(failure)
        seen = stack.jwks.hits
        # wait (bounded) until the filter has asked again and got the bad answer at least twice
        assert stack.jwks.wait_for_hits(seen + 2, 15), f"no refetch while serving {failure!r}"
        resp, _ = stack.get("/mcp", token=mint(key))
        assert resp.status_code == 200, f"after {failure!r}: {resp.status_code} {resp.text}"
    assert (stack.envoy.metric("mcp_authz.jwks_fetch_failed") or 0) >= 3


def test_cache_control_max_age_shortens_refresh(stack_factory, keys):
    """The IdP's `Cache-Control: max-age` bounds how long keys are cached (refresh_interval is 600 s)."""

    def configure(cfg):
        remote_jwks(cfg)["min_refresh_interval_seconds"] = 1

    def prepare(jwks):
        jwks.max_age = 1

    stack = stack_factory([keys["RS256"]], configure=configure, prepare_jwks=prepare)
    assert stack.get("/mcp", token=mint(keys["RS256"]))[0].status_code == 200
    assert stack.jwks.wait_for_hits(3, 10), f"only {stack.jwks.hits} JWKS fetches with max-age=1"
    assert stack.get("/mcp", token=mint(keys["RS256"]))[0].status_code == 200


def test_refresh_with_unchanged_keys_keeps_verified_tokens_cached(stack_factory, keys):
    """A refresh that returns the same key set must not flush the token caches: otherwise any client
    could force every cached token to be verified again, once per unknown-`kid` refetch interval."""

    def configure(cfg):
        remote_jwks(cfg)["min_refresh_interval_seconds"] = 1

    def prepare(jwks):
        jwks.max_age = 1

    stack = stack_factory([keys["RS256"]], configure=configure, prepare_jwks=prepare)
    token = mint(keys["RS256"])
    assert stack.get("/mcp", token=token)[0].status_code == 200
    misses = stack.envoy.metric("mcp_authz.jwt_cache_miss")
    hits = stack.envoy.metric("mcp_authz.jwt_cache_hit") or 0
    seen = stack.jwks.hits
    assert stack.jwks.wait_for_hits(seen + 2, 10), "the key set was not refreshed"
    assert stack.get("/mcp", token=token)[0].status_code == 200
    assert stack.envoy.metric("mcp_authz.jwt_cache_miss") == misses, "the refresh flushed the token cache"
    assert stack.envoy.metric("mcp_authz.jwt_cache_hit") == hits + 1


def test_forged_token_sent_again_is_refused_from_the_refused_cache_until_the_keys_change(stack_factory):
    """A token whose signature does not verify is remembered (by its hash): sending it again costs no
    second verification. When the key set changes, it is verified again, and passes if a key now fits."""
    published = make_key("ES256", kid="k1")
    impostor = make_key("ES256", kid="k1")  # same kid, another private key

    def configure(cfg):
        remote_jwks(cfg)["min_refresh_interval_seconds"] = 1

    def prepare(jwks):
        jwks.max_age = 1

    stack = stack_factory([published], configure=configure, prepare_jwks=prepare)
    forged = mint(impostor, sub="impostor")
    for attempt in range(3):
        resp, tid = stack.get("/mcp", token=forged)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"] == "invalid_token"
        assert stack.upstream_saw(tid) == []
    assert stack.envoy.metric("mcp_authz.jwt_cache_miss") == 1, "verified once"
    assert stack.envoy.metric("mcp_authz.jwt_refused_cache_hit") == 2
    assert stack.envoy.metric("mcp_authz.denied") == 3

    # The IdP now publishes the impostor's key under that kid: after the refresh the same token is
    # verified again (not refused from memory) and passes.
    stack.jwks.set_keys([impostor])
    seen = stack.jwks.hits
    assert stack.jwks.wait_for_hits(seen + 2, 10), "the key set was not refreshed"
    resp, tid = stack.get("/mcp", token=forged)
    assert resp.status_code == 200, resp.text
    assert stack.upstream_saw(tid)[0]["headers"]["x-user-sub"] == "impostor"
    assert stack.envoy.metric("mcp_authz.jwt_refused_cache_hit") == 2
