"""Sample MCP server for the stack: seed 000's task tools, an admin tool, and a seed-001-style tool.

Built with the official Python SDK (`mcp`). It trusts nothing from the filter except what it can check
itself; what it received is recorded so tests can assert what reached the upstream:

  GET /_received   -> JSON list of every HTTP request to /mcp: method, headers, body (as text)
  POST /_reset     -> clears that list

Run: python mcp_server.py --port 8000 [--json-response]
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse

RECEIVED: list[dict[str, Any]] = []
_LOCK = threading.Lock()
TASKS: list[dict[str, str]] = [{"title": "Write the README"}, {"title": "Rotate the signing keys"}]

mcp = MCPServer(name="tasks-demo")


def _headers(ctx: Context) -> dict[str, str]:
    request = getattr(ctx.request_context, "request", None)
    return {k.lower(): v for k, v in request.headers.items()} if request is not None else {}


@mcp.tool()
def getTasks(ctx: Context) -> str:
    """Get the current user's tasks."""
    user = _headers(ctx).get("x-user-sub", "unknown")
    return f"Found {len(TASKS)} tasks for {user}:\n" + "\n".join(f"- {t['title']}" for t in TASKS)


@mcp.tool()
def createTask(title: str, ctx: Context, description: str = "") -> str:
    """Create a new task."""
    TASKS.append({"title": title, "description": description})
    return f"Created task: {title}"


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


@mcp.tool()
def get_reddit_user(ctx: Context) -> str:
    """Seed 001 pattern: use the provider token the gateway put in _meta.current_oauth_token."""
    meta = ctx.request_context.meta
    token = None
    if meta is not None:
        token = meta.get("current_oauth_token") if isinstance(meta, dict) else getattr(meta, "current_oauth_token", None)
    return json.dumps({"provider_token_present": bool(token), "authorization": _headers(ctx).get("authorization")})


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


def build_app(json_response: bool) -> Any:
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
    app = mcp.streamable_http_app(json_response=json_response, transport_security=security)
    return Recorder(app, "/mcp")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true", help="answer with application/json instead of SSE")
    args = parser.parse_args()
    uvicorn.run(build_app(args.json_response), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
