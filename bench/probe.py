"""Before anything is timed, every config must show that it enforces the rule and keeps connections:
an allowed call answers 200, a tool the token lacks the scope for 403, no token and a forged token 401,
tools/list is trimmed where the config can trim it, and several requests share one connection. A config
that does not behave stops the run: a misconfigured peer would make every ratio meaningless. (c0), the filter
with MCP inspection off, must authenticate but must not read bodies: it lets the denied tool through."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field

from configs import (ALLOWED_TOOL, CALL_PATH, DENIED_TOOL, LIST_PATH, LIST_TOOLS, VISIBLE_TOOLS, call_body,
                     list_body)
from load import ACCEPT

TIMEOUT = 15.0
KEEPALIVE_REQUESTS = 5


class ProbeFailed(RuntimeError):
    pass


@dataclass
class ProbeReport:
    config: str
    checks: list[tuple[str, str]] = field(default_factory=list)  # (check, what was observed, in words)

    def check(self, what: str, expected, observed, shown: str | None = None) -> None:
        if expected != observed:
            raise ProbeFailed(f"config {self.config!r}: {what}: expected {expected!r}, got {observed!r}")
        self.checks.append((what, shown if shown is not None else str(observed)))


def _post(port: int, path: str, body: bytes, token: str | None, conn: http.client.HTTPConnection | None = None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    headers = {"content-type": "application/json", "accept": ACCEPT}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    result = (resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data, resp.will_close)
    if own:
        conn.close()
    return result


def probe(config: str, envoy, tokens: dict[str, str], forged: str) -> ProbeReport:
    """`tokens`: one valid read:tasks token per algorithm ("RS256", "ES256", "EdDSA")."""
    port = envoy.listener_port
    enforcing = config != "passthrough"
    rules = enforcing and config != "filter_authn"
    rep = ProbeReport(config)
    for alg, token in tokens.items():
        status, _, body, _ = _post(port, CALL_PATH, call_body(ALLOWED_TOOL), token)
        rep.check(f"allowed tools/call {ALLOWED_TOOL} with an {alg} token", 200, status)
    status, headers, body, _ = _post(port, CALL_PATH, call_body(DENIED_TOOL), tokens["RS256"])
    rep.check(f"tools/call {DENIED_TOOL} without its scope", 403 if rules else 200, status)
    if rules:
        challenge = headers.get("www-authenticate", "")
        rep.check("403 challenge names the missing scope", True, 'error="insufficient_scope"' in challenge
                  and 'scope="write:tasks"' in challenge, "yes")
    status, _, _, _ = _post(port, CALL_PATH, call_body("tool_07"), tokens["RS256"])
    rep.check("tools/call of a tool no rule lists", 403 if rules else 200, status)
    status, _, _, _ = _post(port, CALL_PATH, call_body(ALLOWED_TOOL), None)
    rep.check("no token", 401 if enforcing else 200, status)
    status, _, _, _ = _post(port, CALL_PATH, call_body(ALLOWED_TOOL), forged)
    rep.check("forged token (valid kid, bad signature)", 401 if enforcing else 200, status)
    status, _, body, _ = _post(port, LIST_PATH, list_body(), tokens["RS256"])
    rep.check("tools/list", 200, status)
    names = [t["name"] for t in json.loads(body)["result"]["tools"]]
    trims = config in ("filter", "exchange")
    rep.check("tools/list: tools in the answer", VISIBLE_TOOLS if trims else LIST_TOOLS, names,
              f"{len(names)} ({', '.join(names)})" if len(names) < 3 else f"{len(names)} (all)")

    before = envoy.stats(r"^http\.ingress\.downstream_(cx|rq)_total$")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        closes = []
        for _ in range(KEEPALIVE_REQUESTS):
            status, _, _, will_close = _post(port, CALL_PATH, call_body(ALLOWED_TOOL), tokens["RS256"], conn)
            closes.append((status, will_close))
    finally:
        conn.close()
    rep.check(f"{KEEPALIVE_REQUESTS} allowed calls on one connection",
              [(200, False)] * KEEPALIVE_REQUESTS, closes, f"{KEEPALIVE_REQUESTS} × 200, kept open")
    after = envoy.stats(r"^http\.ingress\.downstream_(cx|rq)_total$")
    delta = {k.rsplit(".", 1)[1]: after[k] - before.get(k, 0) for k in after}
    rep.check("Envoy counted 1 connection for them", {"downstream_cx_total": 1,
              "downstream_rq_total": KEEPALIVE_REQUESTS}, delta, f"{delta['downstream_cx_total']} connection, "
              f"{delta['downstream_rq_total']} requests")
    return rep
