"""Shared pieces of the stack's small servers: `JsonServer` (routes on top of the harness's scripted
server), JWT verification against a remote JWKS (PyJWT's PyJWKClient), script arguments. Signing keys
come from harness.keys."""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
import signal
import threading
from dataclasses import dataclass
import urllib.parse
from typing import Callable

import jwt

from harness.scripted_http import Request, Response, ScriptedServer, error

log = logging.getLogger("stack")

# Algorithms the stack's verifiers accept (asymmetric only; never `none` or HS*).
VERIFY_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


# -------------------------------------------------------------------------------------------------
# JWT verification (what a backend does on its own: defense in depth)
# -------------------------------------------------------------------------------------------------


class TokenError(Exception):
    """A token was refused; `reason` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrustedIssuer:
    issuer: str
    jwks_url: str
    audiences: list[str] | None  # None: the audience is not checked


class JwtVerifier:
    """Verifies JWTs from a set of trusted issuers, each with its own JWKS URL. Keys are fetched by PyJWT's
    PyJWKClient (cached; an unknown `kid` triggers a refetch, so key rotation needs no restart)."""

    def __init__(self, trusted: list[TrustedIssuer], leeway: int = 30, refetch_cooldown: float = 0.0) -> None:
        # refetch_cooldown: minimum seconds between unknown-kid refetches. 0 suits a demo and its tests (a
        # rotation is seen at once); a production verifier rate-limits these (as the filter does).
        self.trusted = {t.issuer: t for t in trusted}
        self.leeway = leeway
        self._clients = {
            t.issuer: jwt.PyJWKClient(t.jwks_url, cache_keys=False, lifespan=300, timeout=5,
                                      cooldown_duration=refetch_cooldown)
            for t in trusted
        }

    def verify(self, token: str) -> dict:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise TokenError("malformed token") from e
        issuer = unverified.get("iss")
        trust = self.trusted.get(issuer) if isinstance(issuer, str) else None
        if trust is None:
            raise TokenError("issuer not accepted")
        try:
            key = self._clients[issuer].get_signing_key_from_jwt(token)
        except jwt.PyJWKClientError as e:
            raise TokenError("signing key not found") from e
        except jwt.PyJWTError as e:
            raise TokenError("malformed token") from e
        options = {"require": ["exp", "iss"], "verify_aud": trust.audiences is not None}
        try:
            return jwt.decode(
                token, key.key, algorithms=VERIFY_ALGORITHMS, issuer=trust.issuer, audience=trust.audiences,
                leeway=self.leeway, options=options,
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenError("token expired") from e
        except jwt.InvalidAudienceError as e:
            raise TokenError("audience not accepted") from e
        except jwt.PyJWTError as e:
            raise TokenError("token verification failed") from e


def scopes_of(claims: dict) -> list[str]:
    """Union of `scope` (space-delimited) and `scp` (array or string), in order, without duplicates."""
    out: list[str] = []
    scope = claims.get("scope")
    if isinstance(scope, str):
        out.extend(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        out.extend(scp.split())
    elif isinstance(scp, list):
        out.extend(s for s in scp if isinstance(s, str))
    return list(dict.fromkeys(out))


# -------------------------------------------------------------------------------------------------
# HTTP server
# -------------------------------------------------------------------------------------------------


class JsonServer(ScriptedServer):
    """A stack service: a `harness.scripted_http.ScriptedServer` (threaded, on host:port, port 0: a free one;
    every request counted and recorded; scripted failures on `faulty_paths`) that routes requests by
    method and path. Subclasses fill `routes` with {(method, path): handler(request) -> Response}; a
    route answered normally carries `Cache-Control: no-store` unless it sets its own."""

    name = "server"
    server_version = "mcp-authz-stack"
    default_headers = {"Cache-Control": "no-store"}

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {("GET", "/health"): self._health}

    def serve_forever(self) -> None:
        """Script mode: serve until SIGTERM/SIGINT."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        log.info("%s listening on %s:%d", self.name, self.host, self.port)
        while not stop.wait(3600):
            pass
        self.stop()

    def _health(self, req: Request) -> Response:
        return Response(200, {"service": self.name, "status": "healthy"})

    def _serve(self, req: Request) -> Response:
        behaviour = self._record(req)
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            if any(path == req.path for _, path in self.routes):
                return Response(405, {"error": "method_not_allowed"})
            return error(404, "not_found", f"no route for {req.path}")
        scripted = self._behave(behaviour, req)
        return scripted if scripted is not None else handler(req)


def script_args(description: str, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--log-level", default="INFO")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")


def authenticate_client(req: Request, form: dict[str, list[str]], clients: dict[str, str], allowed: str = "any",
                        realm: str = "server") -> tuple[str | None, Response | None]:
    """OAuth client authentication (RFC 6749 §2.3.1) of a form POST: HTTP Basic (form-urlencoded id and secret)
    or client_id/client_secret in the form; `allowed` is "basic", "post" or "any". Returns (client_id, None),
    or (None, the 400/401 answer)."""
    challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}
    header = req.headers.get("authorization", "")
    in_form = "client_id" in form or "client_secret" in form
    if header and in_form:
        return None, oauth_error(400, "invalid_request", "more than one client authentication method")
    if header:
        if allowed == "post":
            return None, oauth_error(401, "invalid_client", "client_secret_basic is not allowed", challenge)
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, oauth_error(401, "invalid_client", "unsupported client authentication", challenge)
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, oauth_error(401, "invalid_client", "malformed Basic credentials", challenge)
        ident, sep, secret = raw.partition(":")
        if not sep:
            return None, oauth_error(401, "invalid_client", "malformed Basic credentials", challenge)
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
        ident, secret = urllib.parse.unquote_plus(ident), urllib.parse.unquote_plus(secret)
    elif in_form:
        if allowed == "basic":
            return None, oauth_error(401, "invalid_client", "client_secret_post is not allowed", challenge)
        ident, secret = form.get("client_id", [""])[0], form.get("client_secret", [""])[0]
    else:
        return None, oauth_error(401, "invalid_client", "client authentication required", challenge)
    expected = clients.get(ident)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        return None, oauth_error(401, "invalid_client", "unknown client or wrong secret", challenge)
    return ident, None


def oauth_error(status: int, code: str, description: str, headers: dict | None = None) -> Response:
    return Response(status, {"error": code, "error_description": description}, headers=headers or {})
