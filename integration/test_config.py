"""Bad filter configurations: Envoy must refuse them (at start-up and in `--mode validate`), and the
log must name the offending field so an operator knows what to fix."""

from __future__ import annotations

import json
import re

import pytest

from harness.envoy import Envoy, filter_config, remote_jwks, validate_config
from harness.ports import free_port


def _mutate(fn):
    def render(listener_port: int) -> str:
        cfg = filter_config(jwks_port=9, listener_port=listener_port)
        fn(cfg)
        return json.dumps(cfg)

    return render


def _set(path_fn, value):
    def apply(cfg):
        parent, key = path_fn(cfg)
        parent[key] = value

    return apply


def _rename(path_fn, new):
    def apply(cfg):
        parent, key = path_fn(cfg)
        parent[new] = parent.pop(key)

    return apply


PROVIDER = lambda k: lambda c: (c["providers"][0], k)  # noqa: E731
REMOTE = lambda k: lambda c: (remote_jwks(c), k)  # noqa: E731
TOP = lambda k: lambda c: (c, k)  # noqa: E731

# (case id, mutation, field path the log must name)
BAD_CONFIGS = [
    ("unknown_provider_field", _rename(PROVIDER("audiences"), "audiencez"), "providers[0].audiencez"),
    ("unknown_top_level_field", _set(TOP("pathz"), [{"prefix": "/x"}]), "pathz"),
    ("unknown_remote_field", _set(REMOTE("timeoutms"), 5), "providers[0].jwks.remote.timeoutms"),
    ("empty_audiences", _set(PROVIDER("audiences"), []), "providers[0].audiences"),
    ("hs256_algorithm", _set(PROVIDER("algorithms"), ["RS256", "HS256"]), "providers[0].algorithms[1]"),
    ("negative_timeout", _set(REMOTE("timeout_ms"), -1), "providers[0].jwks.remote.timeout_ms"),
    ("zero_timeout", _set(REMOTE("timeout_ms"), 0), "providers[0].jwks.remote.timeout_ms"),
    ("zero_jwks_wait_timeout", _set(TOP("jwks_wait_timeout_ms"), 0), "jwks_wait_timeout_ms"),
]


def _field_lines(log: str, field: str) -> list[str]:
    # the field as a whole path: not followed by more path characters (so "pathz" != "pathzz")
    pat = re.compile(re.escape(field) + r"(?![\w\[.])")
    return [line for line in log.splitlines() if pat.search(line)]


@pytest.mark.parametrize("case,mutation,field", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_envoy_refuses_bad_filter_config_at_startup(tmp_path, case, mutation, field):
    envoy = Envoy(tmp_path, upstream_port=free_port(), jwks_port=free_port(), filter_json=_mutate(mutation))
    rc, log = envoy.start_expect_failure()
    assert rc != 0, log[-3000:]
    lines = _field_lines(log, field)
    assert lines, f"no log line names {field!r}:\n{log[-3000:]}"
    assert len(lines) == 1, "one line should name the field:\n" + "\n".join(lines)
    assert "[error]" in lines[0] or "[critical]" in lines[0], lines[0]


@pytest.mark.parametrize("case,mutation,field", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_validate_mode_refuses_bad_filter_config(tmp_path, case, mutation, field):
    envoy = Envoy(tmp_path, upstream_port=free_port(), jwks_port=free_port(), filter_json=_mutate(mutation))
    result = validate_config(envoy.config_path, cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert _field_lines(out, field), f"no line names {field!r}:\n{out[-3000:]}"


@pytest.mark.parametrize(
    "raw,why",
    [("", "empty"), ("not json", "not JSON"), ('{"providers": [] }', "no provider"), ("[]", "not an object")],
)
def test_envoy_refuses_unusable_filter_config(tmp_path, raw, why):
    envoy = Envoy(tmp_path, upstream_port=free_port(), jwks_port=free_port(), filter_json=raw)
    rc, log = envoy.start_expect_failure()
    assert rc != 0, why
    assert "mcp_authz" in log


def test_good_filter_config_validates(tmp_path):
    envoy = Envoy(tmp_path, upstream_port=free_port(), jwks_port=free_port())
    result = validate_config(envoy.config_path, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_inline_jwks_config_works(tmp_path, keys):
    """`jwks: {"inline": {...}}` instead of a remote JWKS: no callout needed."""
    import httpx

    from harness.keys import jwks_document, mint
    from harness.servers import EchoServer

    def render(listener_port):
        cfg = filter_config(jwks_port=9, listener_port=listener_port)
        cfg["providers"][0]["jwks"] = {"inline": jwks_document([keys["ES256"]])}
        return json.dumps(cfg)

    with EchoServer() as echo:
        with Envoy(tmp_path, upstream_port=echo.port, jwks_port=free_port(), filter_json=render) as envoy:
            with httpx.Client(base_url=envoy.url, timeout=10) as c:
                ok = c.get("/mcp", headers={"authorization": f"Bearer {mint(keys['ES256'])}"})
                bad = c.get("/mcp", headers={"authorization": f"Bearer {mint(keys['RS256'])}"})
    assert ok.status_code == 200, ok.text
    assert bad.status_code == 401
