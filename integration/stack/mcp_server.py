"""Sample MCP server for the stack: seed 000's task tools, an admin tool, and a seed-001-style tool.

Built with the official Python SDK (`mcp`). It trusts nothing from the filter except what it can check
itself; what it received is recorded so tests can assert what reached the upstream:

  GET /_received   -> JSON list of every HTTP request to /mcp: method, headers, body (as text)
  POST /_reset     -> clears that list

With `--backend-url`, getTasks and createTask call seed 000's tasks API (stack/backend_api.py) with the
Authorization header this server received (the client's token, or the one the gateway exchanged for it),
and that API verifies it again. Without it they use an in-memory list. With `--provider-api-url`,
get_reddit_user calls the provider's API with the token found in `_meta.current_oauth_token`.

With `--resumable`, SSE streams carry event ids kept in memory, so a client can resume a stream with
`GET` and `Last-Event-ID` and have the answers it missed replayed (the SDK's EventStore).

Run: python mcp_server.py --port 8000 [--json-response] [--resumable] [--backend-url URL]
                          [--provider-api-url URL] [--header-tool]
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
from typing import Annotated, Any

import httpx
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

RECEIVED: list[dict[str, Any]] = []
_LOCK = threading.Lock()
TASKS: list[dict[str, str]] = [{"title": "Write the README"}, {"title": "Rotate the signing keys"}]

mcp = MCPServer(name="tasks-demo")
BACKEND_URL: str | None = None  # seed 000's tasks API; None: in-memory TASKS
PROVIDER_API_URL: str | None = None  # e.g. http://connector:9200/provider/reddit


def _headers(ctx: Context) -> dict[str, str]:
    request = getattr(ctx.request_context, "request", None)
    return {k.lower(): v for k, v in request.headers.items()} if request is not None else {}


async def _backend(ctx: Context, method: str, path: str, body: dict | None = None) -> dict:
    """Seed 000's callBackend: forward the Authorization header this server received."""
    headers = {k: v for k, v in {"authorization": _headers(ctx).get("authorization")}.items() if v}
    async with httpx.AsyncClient(base_url=BACKEND_URL, timeout=10) as http:
        r = await http.request(method, path, headers=headers, json=body)
    if r.status_code >= 300:
        try:
            detail = r.json().get("error", "")
        except ValueError:
            detail = ""
        raise RuntimeError(f"backend API answered {r.status_code} {detail}".strip())
    return r.json()


@mcp.tool()
async def getTasks(ctx: Context) -> str:
    """Get the current user's tasks."""
    user = _headers(ctx).get("x-user-sub", "unknown")
    tasks = (await _backend(ctx, "GET", "/api/tasks"))["tasks"] if BACKEND_URL else TASKS
    return f"Found {len(tasks)} tasks for {user}:\n" + "\n".join(f"- {t['title']}" for t in tasks)


@mcp.tool()
async def createTask(title: str, ctx: Context, description: str = "") -> str:
    """Create a new task."""
    if BACKEND_URL:
        task = (await _backend(ctx, "POST", "/api/tasks", {"title": title, "description": description}))["task"]
        return f"Created task: {task['title']}"
    TASKS.append({"title": title, "description": description})
    return f"Created task: {title}"


@mcp.tool()
def get_project_tasks(project: str, limit: int = 10) -> str:
    """Get a project's tasks (the filter's argument conditions decide which projects a caller may ask for)."""
    return json.dumps({"project": project, "tasks": [t["title"] for t in TASKS][:limit]})


@mcp.tool()
def admin_reset(ctx: Context) -> str:
    """Delete every task (administrators only)."""
    TASKS.clear()
    return "All tasks deleted"


@mcp.tool()
def whoami(ctx: Context) -> str:
    """Report the Authorization header and identity headers this server received."""
    h = _headers(ctx)
    return json.dumps({k: h.get(k) for k in ("authorization", "x-user-sub", "x-user-scopes")})


def search(q: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Q"})],
           limit: Annotated[int, Field(json_schema_extra={"x-mcp-header": "Limit"})] = 10) -> str:
    """Search the tasks (2026-07-28: `q` and `limit` are mirrored into Mcp-Param-Q / Mcp-Param-Limit).
    Registered only with --header-tool, so that other suites' tool lists stay as they are."""
    return json.dumps({"q": q, "limit": limit})


@mcp.tool()
def crm_whoami(ctx: Context) -> str:
    """Report the access token this server received for the CRM: who issued it, for whom (the claims,
    read without verification: a demo of what arrived, not an authorization decision)."""
    scheme, _, token = (_headers(ctx).get("authorization") or "").partition(" ")
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return json.dumps({"scheme": scheme, "jwt": False})
    return json.dumps({"scheme": scheme, "jwt": True,
                       **{k: claims.get(k) for k in ("iss", "aud", "sub", "client_id", "scope")}})


def _meta(ctx: Context) -> dict[str, Any]:
    meta = ctx.request_context.meta
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return meta
    return meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(vars(meta))


@mcp.tool()
async def get_reddit_user(ctx: Context) -> str:
    """Seed 001 pattern: use the provider token the gateway put in _meta.current_oauth_token."""
    meta = _meta(ctx)
    token = meta.get("current_oauth_token")
    out: dict[str, Any] = {
        "provider_token_present": bool(token),
        "authorization": _headers(ctx).get("authorization"),
        "meta_keys": sorted(meta),
    }
    if token and PROVIDER_API_URL:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{PROVIDER_API_URL}/api/v1/me", headers={"authorization": f"Bearer {token}"})
        out["provider_status"] = r.status_code
        if r.status_code == 200:
            out["reddit_user"] = r.json().get("name")
    return json.dumps(out)


class Recorder:
    """ASGI middleware: records each request to the MCP path exactly as it arrived."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        recorded = False

        async def recording_receive() -> dict:
            nonlocal recorded
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body") and not recorded:
                    recorded = True
                    entry = {
                        "method": scope["method"],
                        "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                        "body": b"".join(chunks).decode("utf-8", "replace"),
                    }
                    with _LOCK:
                        RECEIVED.append(entry)
            return message

        await self.app(scope, recording_receive, send)


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, for replay after a `Last-Event-ID`; the oldest are dropped
    beyond MAX_EVENTS (a test server's memory stays bounded)."""

    MAX_EVENTS = 10_000

    def __init__(self) -> None:
        self._events: list[tuple[EventId, StreamId, Any]] = []
        self._next_id = 0

    async def store_event(self, stream_id: StreamId, message: Any) -> EventId:
        self._next_id += 1
        event_id = str(self._next_id)
        self._events.append((event_id, stream_id, message))
        del self._events[: -self.MAX_EVENTS]
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        position = next((i for i, (event_id, _, _) in enumerate(self._events) if event_id == last_event_id), None)
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, stream, message in self._events[position + 1:]:
            if stream == stream_id and message is not None:  # None: a priming event, nothing to replay
                await send_callback(EventMessage(message, event_id))
        return stream_id


def build_app(json_response: bool, resumable: bool = False) -> Any:
    @mcp.custom_route("/_received", methods=["GET"])
    async def received(_: Request) -> JSONResponse:
        with _LOCK:
            return JSONResponse(list(RECEIVED))

    @mcp.custom_route("/_reset", methods=["POST"])
    async def reset(_: Request) -> JSONResponse:
        with _LOCK:
            RECEIVED.clear()
        return JSONResponse({"ok": True})

    # The filter in front validates Origin; Host is Envoy's listener address.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = mcp.streamable_http_app(json_response=json_response, transport_security=security,
                                  event_store=MemoryEventStore() if resumable else None)
    return Recorder(app, "/mcp")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true", help="answer with application/json instead of SSE")
    parser.add_argument("--resumable", action="store_true", help="keep SSE events for replay after Last-Event-ID")
    parser.add_argument("--backend-url", help="seed 000's tasks API (e.g. http://127.0.0.1:4000)")
    parser.add_argument("--provider-api-url", help="the provider API get_reddit_user calls (e.g. http://127.0.0.1:9200/provider/reddit)")
    parser.add_argument("--header-tool", action="store_true", help="also serve `search`, whose parameters carry x-mcp-header")
    args = parser.parse_args()
    if args.header_tool:
        mcp.tool()(search)
    global BACKEND_URL, PROVIDER_API_URL
    BACKEND_URL, PROVIDER_API_URL = args.backend_url, args.provider_api_url
    uvicorn.run(build_app(args.json_response, args.resumable), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
