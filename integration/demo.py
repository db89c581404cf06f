"""`make demo`: start the bundled stack on 127.0.0.1 and run a real MCP client session through Envoy.

    .venv/bin/python integration/demo.py            # show the session, then keep the stack up until Ctrl-C
    .venv/bin/python integration/demo.py --once     # show the session and stop (exit 1 if a step failed)
    .venv/bin/python integration/demo.py --once --external   # against a stack already running elsewhere
                                                    # (docker-compose): URLs from MCP_AUTHZ_* variables;
                                                    # with MCP_AUTHZ_TASKS_API_URL / MCP_AUTHZ_MCP_SERVER_URL
                                                    # it also shows what the tasks API / MCP server received

The client is the official MCP Python SDK (`mcp.Client` over `streamable_http_client`). Every step prints
one status line `[ok] <step>: ...` or `[FAIL] <step>: ...` (test_demo.py reads them), then what a user
should notice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from harness.jsonrpc import received_messages
from stack import config
from stack.local import ALL_TOOLS

STEPS = ("list-tools", "allowed-call", "denied-call", "connector-exchange", "id-jag-exchange", "rfc8693-exchange",
         "opaque-token")
SESSION_TIMEOUT = 60.0
USER = config.DEMO_USER


def mask(token: str | None) -> str:
    if not token:
        return "(none)"
    return token if len(token) <= 16 else f"{token[:10]}…{token[-4:]}"


@dataclass
class Endpoints:
    mcp: str
    idp: str
    connector: str
    envoy_admin: str | None = None
    tasks_api: str | None = None  # its GET /_calls shows which token it verified
    mcp_server: str | None = None  # its GET /_received shows what reached it (not through Envoy)
    as_issuer: str | None = None  # the CRM authorization server's issuer (the ID-JAG step's expected `iss`)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Endpoints":
        try:
            return cls(mcp=os.environ["MCP_AUTHZ_MCP_URL"], idp=os.environ["MCP_AUTHZ_IDP_URL"],
                       connector=os.environ["MCP_AUTHZ_CONNECTOR_URL"],
                       envoy_admin=os.environ.get("MCP_AUTHZ_ENVOY_ADMIN_URL"),
                       tasks_api=os.environ.get("MCP_AUTHZ_TASKS_API_URL"),
                       mcp_server=os.environ.get("MCP_AUTHZ_MCP_SERVER_URL"),
                       as_issuer=os.environ.get("MCP_AUTHZ_AS_ISSUER"))
        except KeyError as e:
            raise SystemExit(f"--external needs {e.args[0]} (and MCP_AUTHZ_MCP_URL, MCP_AUTHZ_IDP_URL, "
                             "MCP_AUTHZ_CONNECTOR_URL)") from None


class Demo:
    def __init__(self, endpoints: Endpoints, stack: Any = None, out=sys.stdout) -> None:
        self.ep = endpoints
        self.stack = stack  # LocalStack when the demo started the services itself (adds server-side detail)
        self.out = out
        self.results: dict[str, bool] = {}

    # -- output -----------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def status(self, step: str, ok: bool, text: str) -> None:
        self.results[step] = ok
        self.say(f"  [{'ok' if ok else 'FAIL'}] {step}: {text}")

    # -- helpers ----------------------------------------------------------------------------------
    def token(self, scope: str) -> str:
        r = httpx.post(f"{self.ep.idp}/token", json={"sub": USER, "scope": scope, "alg": "RS256"}, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    def opaque_token(self, scope: str) -> str:
        """An opaque access token: the IdP alone knows what it means (it answers /introspect)."""
        r = httpx.post(f"{self.ep.idp}/token", json={"sub": USER, "scope": scope, "opaque": True}, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    def temp_token(self) -> str:
        r = httpx.post(f"{self.ep.connector}/api/connectors/tempToken", json={"userId": USER, "providerId": "reddit"},
                       timeout=10)
        r.raise_for_status()
        return r.json()["userToken"]

    async def session(self, token: str, work: Callable[[Client, list], Awaitable[Any]]) -> Any:
        """One SDK session with `token`; `work(client, http_log)` sees every HTTP answer (status, headers, body)."""
        http_log: list[httpx2.Response] = []

        async def record(response: httpx2.Response) -> None:
            if response.request.method == "POST":
                if response.status_code >= 400:
                    await response.aread()  # a short JSON error; success bodies may be open SSE streams
                http_log.append(response)

        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20,
                                      event_hooks={"response": [record]}) as http:
            async with Client(streamable_http_client(self.ep.mcp, http_client=http)) as client:
                return await work(client, http_log)

    # -- what the servers behind Envoy saw (the local stack's handles, or their HTTP views) ------------
    def backend_calls(self) -> list[dict] | None:
        if self.stack is not None:
            return list(self.stack.backend.calls)
        if self.ep.tasks_api:
            return httpx.get(f"{self.ep.tasks_api}/_calls", timeout=10).json()
        return None

    def mcp_messages(self) -> list[dict] | None:
        if self.stack is not None:
            return self.stack.mcp.messages()
        if self.ep.mcp_server:
            return received_messages(httpx.get(f"{self.ep.mcp_server}/_received", timeout=10).json())
        return None

    @staticmethod
    def text(result: Any) -> str:
        return "\n".join(getattr(c, "text", "") for c in result.content)

    # -- the session ------------------------------------------------------------------------------
    async def run_steps(self) -> None:
        reader = self.token("read:tasks")
        self.say(f'1. A reader signs in: token for sub={USER}, scope="read:tasks" (from the identity provider)')

        async def as_reader(client: Client, http_log: list) -> None:
            await self.step_list(client)
            await self.step_allowed(client)
            await self.step_denied(client, http_log)
            await self.step_connector(client, reader)
            await self.step_id_jag(client, reader)

        await self.session(reader, as_reader)
        writer = self.token("read:tasks write:tasks")
        self.say()
        self.say('6. A writer (scope="read:tasks write:tasks") creates a task; the filter exchanges the token first')

        async def as_writer(client: Client, http_log: list) -> None:
            await self.step_rfc8693(client, writer)

        await self.session(writer, as_writer)
        opaque = self.opaque_token("read:tasks")
        self.say()
        self.say(f"7. The IdP issues an opaque token ({mask(opaque)}): the filter asks the IdP's introspection endpoint")

        async def with_opaque(client: Client, http_log: list) -> None:
            await self.step_opaque(client)

        await self.session(opaque, with_opaque)

    async def step_list(self, client: Client) -> None:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        hidden = sorted(set(ALL_TOOLS) - set(names))
        ok = names == ["crm_whoami", "getTasks", "get_reddit_user", "whoami"]
        self.status("list-tools", ok, f"tools/list -> {', '.join(names)}")
        self.say(f"     hidden by the filter (the reader lacks their scopes): {', '.join(hidden) or '(none)'}")

    async def step_allowed(self, client: Client) -> None:
        self.say()
        self.say("2. tools/call getTasks (needs read:tasks)")
        try:
            result = await client.call_tool("getTasks", {})
        except MCPError as e:
            self.status("allowed-call", False, f"getTasks refused: {e}")
            return
        text = self.text(result)
        ok = not result.is_error and text.startswith("Found")
        self.status("allowed-call", ok, f"getTasks -> {text.splitlines()[0] if text else '(empty)'}")
        for line in text.splitlines()[1:]:
            self.say(f"     {line}")
        calls = self.backend_calls()
        if calls:
            call = calls[-1]
            self.say(f"     the tasks API verified the same token again: iss={call['iss']} sub={call['sub']} "
                     f"scopes={' '.join(call['scopes'])}")

    async def step_denied(self, client: Client, http_log: list) -> None:
        self.say()
        self.say("3. tools/call createTask (needs write:tasks)")
        before = len(http_log)
        earlier = self.mcp_messages()  # a stack that keeps running has seen earlier sessions' calls
        try:
            result = await client.call_tool("createTask", {"title": "sneaky"})
            self.status("denied-call", False, f"createTask was allowed: {self.text(result)[:200]}")
            return
        except MCPError as e:
            message = str(e)
        answers = [r for r in http_log[before:] if r.status_code >= 400]
        if not answers:
            self.status("denied-call", False, f"refused without an HTTP error: {message}")
            return
        r = answers[-1]
        challenge = r.headers.get("www-authenticate", "(none)")
        try:
            err = r.json()["error"]
            rpc = f"JSON-RPC error {err['code']}: {err['message']}"
        except (ValueError, KeyError, TypeError):
            rpc = r.text[:200]
        ok = r.status_code == 403 and 'error="insufficient_scope"' in challenge
        note = ""
        messages = self.mcp_messages()
        if messages is not None and earlier is not None:  # ask the MCP server what reached it since
            reached = any(("tools/call", "createTask") == (m.get("method"), (m.get("params") or {}).get("name"))
                          for m in messages[len(earlier):])
            ok = ok and not reached
            note = " (and it reached the MCP server!)" if reached else " (the MCP server never saw it)"
        self.status("denied-call", ok, f"createTask -> HTTP {r.status_code}{note}")
        self.say(f"     WWW-Authenticate: {challenge}")
        self.say(f"     {rpc}")

    async def step_connector(self, client: Client, reader: str) -> None:
        self.say()
        self.say("4. tools/call get_reddit_user with _meta {userId, userToken, providerId} (seed 001's connector)")
        temp = self.temp_token()
        self.say(f"     temp token from the connector: {mask(temp)}")
        meta = {"userId": USER, "userToken": temp, "providerId": "reddit"}
        try:
            result = await client.call_tool("get_reddit_user", {}, meta=meta)
        except MCPError as e:
            self.status("connector-exchange", False, f"get_reddit_user refused: {e}")
            self.explain_missing_credentials()
            return
        try:
            seen = json.loads(self.text(result))
        except ValueError:
            self.status("connector-exchange", False, f"unexpected answer: {self.text(result)[:200]}")
            return
        problems = []
        if not seen.get("provider_token_present"):
            problems.append("no provider token in _meta.current_oauth_token")
        if "userToken" in seen.get("meta_keys", []):
            problems.append("_meta.userToken reached the MCP server")
        if seen.get("authorization") == f"Bearer {reader}":
            problems.append("the client's own token reached the MCP server")
        if seen.get("reddit_user") is None:
            problems.append(f"the provider API refused the token (status {seen.get('provider_status')})")
        if problems:
            self.status("connector-exchange", False, "; ".join(problems))
            self.explain_missing_credentials()
            return
        self.status("connector-exchange", True, f"get_reddit_user -> the provider knows this user as {seen['reddit_user']}")
        scheme, _, upstream_token = (seen.get("authorization") or "").partition(" ")
        own = [k for k in seen.get("meta_keys", []) if not k.startswith("io.modelcontextprotocol/")]
        self.say("     the filter sent {userId, userToken, providerId} to POST /api/connectors/requestAuth;")
        self.say("     the MCP server got the provider token in _meta.current_oauth_token and as")
        self.say(f"     Authorization: {scheme} {mask(upstream_token)} (never the client's token); its _meta: {', '.join(own)}")

    async def step_id_jag(self, client: Client, reader: str) -> None:
        self.say()
        self.say("5. tools/call crm_whoami: enterprise-managed authorization (ID-JAG), brokered by the filter")
        try:
            result = await client.call_tool("crm_whoami", {})
            seen = json.loads(self.text(result))
        except (MCPError, ValueError) as e:
            self.status("id-jag-exchange", False, f"crm_whoami refused: {e}")
            self.explain_missing_credentials()
            return
        crm_as = self.stack.crm_as if self.stack else None
        expected_iss = crm_as.issuer if crm_as else (self.ep.as_issuer or config.COMPOSE_AS_ISSUER)
        ok = (seen.get("jwt") and seen.get("iss") == expected_iss and seen.get("sub") == USER
              and seen.get("client_id") == config.STS_CLIENT_ID)
        self.status("id-jag-exchange", bool(ok),
                    f"crm_whoami -> the MCP server got a token from iss={seen.get('iss')} for sub={seen.get('sub')}")
        sts_issuer = self.stack.sts.issuer if self.stack else "http://sts:9100"
        self.say(f"     a. token exchange at the enterprise IdP ({sts_issuer}/token): subject_token = the reader's token,")
        self.say(f"        requested_token_type = ...:id-jag, audience = {expected_iss} -> an ID-JAG (typ oauth-id-jag+jwt)")
        self.say(f"     b. JWT bearer grant at the CRM's authorization server ({expected_iss}/oauth2/token) with that ID-JAG")
        self.say(f"     c. the MCP server received that server's access token: aud={seen.get('aud')} "
                 f"client_id={seen.get('client_id')} (never the reader's token{', never the ID-JAG' if ok else ''})")
        if crm_as is not None and crm_as.accepted:
            claims = crm_as.accepted[-1]
            self.say(f"     the authorization server checked the ID-JAG: iss={claims.get('iss')} aud={claims.get('aud')} "
                     f"resource={claims.get('resource')}")
        if not ok:
            self.explain_missing_credentials()

    async def step_rfc8693(self, client: Client, writer: str) -> None:
        try:
            result = await client.call_tool("createTask", {"title": "Try mcp-authz", "description": "from the demo"})
        except MCPError as e:
            self.status("rfc8693-exchange", False, f"createTask refused: {e}")
            self.explain_missing_credentials()
            return
        text = self.text(result)
        ok = not result.is_error and text.startswith("Created task")
        detail = ""
        calls = self.backend_calls() if ok else None
        if calls is not None:
            call = calls[-1] if calls else {}
            # The exchanged token: the STS's (not the IdP's), for the tasks API, acting for the gateway.
            sts_issuer = self.stack.sts.issuer if self.stack else None
            ok = ((call.get("iss") == sts_issuer if sts_issuer else call.get("aud") == "tasks-api")
                  and (call.get("act") or {}).get("sub") == config.STS_CLIENT_ID)
            detail = (f"\n     the tasks API received the exchanged token: iss={call.get('iss')} aud={call.get('aud')} "
                      f"scopes={' '.join(call.get('scopes', []))} act={json.dumps(call.get('act'))}")
        self.status("rfc8693-exchange", ok, f"createTask -> {text.splitlines()[0] if text else '(empty)'}{detail}")
        if not ok:
            self.explain_missing_credentials()

    async def step_opaque(self, client: Client) -> None:
        try:
            result = await client.call_tool("whoami", {})
        except MCPError as e:
            self.status("opaque-token", False, f"whoami refused: {e}")
            return
        try:
            seen = json.loads(self.text(result))
        except ValueError:
            seen = {}
        ok = not result.is_error and seen.get("x-user-sub") == USER and seen.get("x-user-scopes") == "read:tasks"
        self.status("opaque-token", ok, f"whoami -> the MCP server saw x-user-sub={seen.get('x-user-sub')} "
                                        f"x-user-scopes={seen.get('x-user-scopes')} (claims from the introspection answer)")

    def explain_missing_credentials(self) -> None:
        if self.stack is not None and self.stack.credentials_supported is False:
            self.say("     this build of the filter refused `upstream_credentials` "
                     f"({self.stack.refusal}); rebuild with `make build` once it supports them")

    def summary(self) -> bool:
        passed = sum(1 for s in STEPS if self.results.get(s))
        self.say()
        self.say(f"RESULT: {passed}/{len(STEPS)} steps as expected")
        return passed == len(STEPS)


def print_endpoints(demo: Demo, urls: dict[str, str], workdir: Path | None) -> None:
    demo.say("The stack (all on 127.0.0.1):")
    rows = [
        ("MCP endpoint (Envoy + mcp-authz)", urls["mcp"]),
        ("identity provider (POST /token)", urls["idp"]),
        ("token exchange server (RFC 8693)", urls["sts"]),
        ("CRM authorization server (ID-JAG)", urls["crm_as"]),
        ("connector backend (seed 001)", urls["connector"]),
        ("tasks API (seed 000)", urls["backend"]),
        ("MCP server, behind Envoy", urls["mcp_direct"]),
        ("Envoy admin", urls["envoy_admin"]),
    ]
    for label, url in rows:
        demo.say(f"  {label:<34} {url}")
    if workdir:
        demo.say(f"  {'logs (Envoy, MCP server)':<34} {workdir}")
    demo.say()


def print_try_it(demo: Demo, urls: dict[str, str], token: str) -> None:
    demo.say()
    demo.say("The stack keeps running. Try it yourself (a reader token, valid for an hour):")
    demo.say(f"  export TOKEN={token}")
    demo.say(f"  curl -s {urls['mcp']} -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
    demo.say("       -H 'Accept: application/json, text/event-stream' \\")
    demo.say("       -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"createTask\",\"arguments\":{\"title\":\"x\"}}}'")
    demo.say("  # -> 403 insufficient_scope. Another token:")
    demo.say(f"  curl -s -X POST {urls['idp']}/token -H 'Content-Type: application/json' \\")
    demo.say(f"       -d '{{\"sub\":\"{USER}\",\"scope\":\"read:tasks write:tasks\"}}'")
    demo.say(f"  # rotate the IdP's keys: curl -s -X POST {urls['idp']}/rotate")
    demo.say("Press Ctrl-C to stop everything.")


def run_local(args: argparse.Namespace) -> int:
    from stack.local import LocalStack

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mcp-authz-demo-"))
    demo = Demo(Endpoints(mcp="", idp="", connector=""))
    demo.say("mcp-authz demo: Envoy with the Wasm filter in front of a sample MCP server (official Python SDK)")
    demo.say("starting the identity provider, token exchange server, connector, tasks API, MCP server and Envoy …")
    started = time.monotonic()
    with LocalStack(workdir, credentials="auto", json_response=args.json_response) as stack:
        urls = stack.urls()
        demo.ep = Endpoints(mcp=urls["mcp"], idp=urls["idp"], connector=urls["connector"], envoy_admin=urls["envoy_admin"])
        demo.stack = stack
        demo.say(f"started in {time.monotonic() - started:.1f} s")
        if stack.credentials_supported is False:
            demo.say(f"WARNING: this filter build refused `upstream_credentials` ({stack.refusal});")
            demo.say("         running without them, so the two exchange steps will fail")
        print_endpoints(demo, urls, workdir)
        try:
            asyncio.run(asyncio.wait_for(demo.run_steps(), timeout=SESSION_TIMEOUT))
        except Exception as e:  # report, keep the stack up for inspection in interactive mode
            demo.say(f"  [FAIL] session: {type(e).__name__}: {e}")
        ok = demo.summary()
        if args.once:
            return 0 if ok else 1
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print_try_it(demo, urls, stack.token("read:tasks"))
        while not stop.wait(1.0):
            if stack.envoy.proc is None or stack.envoy.proc.poll() is not None:
                demo.say("Envoy exited; stopping")
                break
        demo.say("stopping …")
    demo.say("stopped")
    return 0 if ok else 1


def run_external(args: argparse.Namespace) -> int:
    ep = Endpoints.from_env()
    demo = Demo(ep)
    demo.say(f"mcp-authz demo against {ep.mcp}")
    if ep.envoy_admin:
        wait_ready(ep.envoy_admin)
    try:
        asyncio.run(asyncio.wait_for(demo.run_steps(), timeout=SESSION_TIMEOUT))
    except Exception as e:
        demo.say(f"  [FAIL] session: {type(e).__name__}: {e}")
    return 0 if demo.summary() else 1


def wait_ready(admin_url: str, timeout: float = 120.0) -> None:
    """Envoy's admin /ready (bounded): containers start in any order."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{admin_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"Envoy not ready at {admin_url} within {timeout:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="run the session and stop (no Ctrl-C wait)")
    parser.add_argument("--external", action="store_true", help="use a running stack (MCP_AUTHZ_* variables)")
    parser.add_argument("--json-response", action="store_true", help="MCP server answers JSON instead of SSE")
    parser.add_argument("--workdir", help="where Envoy and the MCP server write their logs (default: a temp dir)")
    args = parser.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)  # stop everything cleanly, as on Ctrl-C
    try:
        return run_external(args) if args.external else run_local(args)
    except KeyboardInterrupt:
        print("interrupted; everything stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
