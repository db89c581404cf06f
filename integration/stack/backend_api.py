"""Seed 000's backend API, in Python: it verifies the JWT itself (defense in depth) and checks scopes again.

  GET  /                health: {"service": "mcp-backend", "status": "healthy", "timestamp"}
  GET  /api/tasks       needs read:tasks  -> {"tasks": [...]} (the caller's tasks)
  POST /api/tasks       needs write:tasks, JSON {"title", "description"?} -> 201 {"task": {...}}
  GET  /api/profile     any valid token  -> {"id", "email", "name", "createdAt"} or 404 user_not_found
  GET  /_calls          what each authenticated request's token said (iss, aud, sub, scopes, act; never the
                        token): how the demo and the compose tests see which token reached the API

Refusals, as in seed 000: 401 {"error":"unauthorized"} without a bearer token, 401 {"error":"invalid_token"}
for a token that fails verification (details are logged, not returned), 403 {"error":"insufficient_scope",
"missing": [...]}. Tokens are accepted from each trusted issuer (its JWKS URL and audience): the identity
provider's (the client's own token, forwarded by the MCP server: seed 000's "Pattern 1") and the token
exchange server's (a token the gateway obtained for this API by RFC 8693).
Run: python -m stack.backend_api --port 4000 --trust ISSUER,JWKS_URL,AUDIENCE [--trust ...]
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
from typing import Any

from harness.scripted_http import Request, Response, error

from .common import JsonServer, JwtVerifier, TokenError, TrustedIssuer, script_args, scopes_of, setup_logging

log = logging.getLogger("stack.backend_api")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class TasksApi(JsonServer):
    name = "mcp-backend"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, trusted: list[TrustedIssuer] | None = None) -> None:
        super().__init__(host, port)
        self.verifier = JwtVerifier(trusted or [])
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        created = _now()
        self.tasks: list[dict[str, Any]] = [
            {"id": next(self._ids), "userId": "alice", "title": "Write the README", "description": "", "createdAt": created},
            {"id": next(self._ids), "userId": "alice", "title": "Rotate the signing keys", "description": "", "createdAt": created},
        ]
        self.profiles = {
            "alice": {"id": "alice", "email": "alice@example.com", "name": "Alice", "createdAt": created},
            "bob": {"id": "bob", "email": "bob@example.com", "name": "Bob", "createdAt": created},
        }
        self.calls: list[dict[str, Any]] = []  # what each authenticated request carried (for tests and the demo)
        self.routes.update({
            ("GET", "/"): lambda req: Response(200, {"service": "mcp-backend", "status": "healthy", "timestamp": _now()}),
            ("GET", "/api/tasks"): self._list_tasks,
            ("POST", "/api/tasks"): self._create_task,
            ("GET", "/api/profile"): self._profile,
            ("GET", "/_calls"): self._calls,
        })

    # -- middleware, as in seed 000 ---------------------------------------------------------------
    def _auth(self, req: Request, *required: str) -> tuple[dict | None, Response | None]:
        token = req.bearer()
        if token is None:
            return None, Response(401, {"error": "unauthorized", "message": "Missing or invalid Authorization header"},
                                  headers={"WWW-Authenticate": "Bearer"})
        try:
            claims = self.verifier.verify(token)
        except TokenError as e:
            log.info("JWT verification failed: %s", e.reason)
            return None, Response(401, {"error": "invalid_token", "message": "Token verification failed"},
                                  headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        held = scopes_of(claims)
        with self._lock:
            self.calls.append({"method": req.method, "path": req.path, "sub": claims.get("sub"), "iss": claims.get("iss"),
                               "aud": claims.get("aud"), "scopes": held, "act": claims.get("act")})
        missing = [s for s in required if s not in held]
        if missing:
            return None, Response(403, {"error": "insufficient_scope", "message": f"Required scopes: {', '.join(required)}",
                                        "missing": missing})
        if not isinstance(claims.get("sub"), str):
            return None, Response(401, {"error": "invalid_token", "message": "Token verification failed"})
        return claims, None

    # -- routes -----------------------------------------------------------------------------------
    def _list_tasks(self, req: Request) -> Response:
        claims, refused = self._auth(req, "read:tasks")
        if refused:
            return refused
        with self._lock:
            mine = [t for t in self.tasks if t["userId"] == claims["sub"]]
        return Response(200, {"tasks": mine})

    def _create_task(self, req: Request) -> Response:
        claims, refused = self._auth(req, "write:tasks")
        if refused:
            return refused
        try:
            body = req.json()
        except ValueError:
            return error(400, "invalid_request", "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("title"), str) or not body["title"].strip():
            return error(400, "invalid_request", "title is required")
        description = body.get("description") if isinstance(body.get("description"), str) else ""
        with self._lock:
            task = {"id": next(self._ids), "userId": claims["sub"], "title": body["title"], "description": description,
                    "createdAt": _now()}
            self.tasks.append(task)
        return Response(201, {"task": task})

    def _calls(self, req: Request) -> Response:
        with self._lock:
            return Response(200, list(self.calls))

    def _profile(self, req: Request) -> Response:
        claims, refused = self._auth(req)
        if refused:
            return refused
        profile = self.profiles.get(claims["sub"])
        if profile is None:
            return Response(404, {"error": "user_not_found"})
        return Response(200, profile)


def parse_trust(value: str) -> TrustedIssuer:
    parts = value.split(",")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError(f"--trust wants ISSUER,JWKS_URL[,AUDIENCE], got {value!r}")
    return TrustedIssuer(parts[0], parts[1], [parts[2]] if len(parts) == 3 and parts[2] else None)


def main() -> None:
    parser = script_args("Seed 000's tasks API (verifies the JWT again, checks scopes)", 4000)
    parser.add_argument("--trust", action="append", required=True, metavar="ISSUER,JWKS_URL[,AUDIENCE]",
                        help="an issuer whose tokens are accepted (repeatable)")
    args = parser.parse_args()
    setup_logging(args.log_level)
    TasksApi(args.host, args.port, trusted=[parse_trust(t) for t in args.trust]).serve_forever()


if __name__ == "__main__":
    main()
