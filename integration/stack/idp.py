"""A small identity provider for the demo and the tests: issues RS256/ES256 JWT access tokens, serves its
JWKS and discovery documents, and rotates its keys on request.

  POST /token                                   JSON {"sub","scope","alg","aud","ttl","claims"} (demo/tests),
                                                or form grant_type=client_credentials&client_id=..&scope=..
                                                -> {"access_token","token_type":"Bearer","expires_in","scope"}
                                                With "opaque": true (JSON) the token is opaque: a random
                                                string whose claims only /introspect tells.
  GET  /.well-known/jwks.json                   the published public keys
  GET  /.well-known/openid-configuration        issuer, jwks_uri, token_endpoint (also served as
  GET  /.well-known/oauth-authorization-server  RFC 8414 metadata, which MCP clients look for)
  POST /introspect                              RFC 7662 token introspection, client-authenticated (HTTP
                                                Basic or client_id/client_secret in the form): form token=..
                                                -> {"active": true, "iss","sub","aud","scope","exp",..} for
                                                an opaque token this IdP issued and did not revoke, else
                                                {"active": false}
  POST /rotate                                  JSON {"keep_old": true, "algorithms": ["RS256"]}: new key
                                                (new kid) per algorithm; the old one stays published or is
                                                dropped -> {"active": {alg: kid}, "published": [kid, ...]}

It authenticates nobody: it stands in for a real authorization server, which would run a login and
consent flow before issuing a token (the introspection endpoint does authenticate its clients).
Tests script failures on /introspect (see `harness.scripted_http.Behaviour`). Run: python -m stack.idp --port 9000 --issuer http://idp:9000

With --keys-file PATH the keys live in that file (created on first start, rewritten on each rotation), so
a restarted IdP publishes the same keys, as a real one does; without it, every start makes new keys.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from harness.keys import SigningKey, jwks_document, load_key, make_key
from harness.scripted_http import Request, Response, error

from .common import JsonServer, authenticate_client, oauth_error, script_args, setup_logging

DEFAULT_AUDIENCE = "mcp-demo"
ALGORITHMS = ("RS256", "ES256")
MAX_TTL = 86400
# Who may call /introspect (RFC 7662 section 2.1: the endpoint requires client authentication).
DEFAULT_INTROSPECTION_CLIENTS = {"mcp-gateway": "demo-secret"}


class IdentityProvider(JsonServer):
    name = "idp"
    faulty_paths = ("/introspect",)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, issuer: str | None = None,
                 audience: str = DEFAULT_AUDIENCE, token_ttl: int = 3600, jwks_max_age: int = 300,
                 keys_file: Path | str | None = None, introspection_clients: dict[str, str] | None = None,
                 introspection_client_auth: str = "any") -> None:
        super().__init__(host, port)
        self.introspection_clients = dict(introspection_clients or DEFAULT_INTROSPECTION_CLIENTS)
        self.introspection_client_auth = introspection_client_auth
        self._opaque_lock = threading.Lock()
        self._opaque: dict[str, dict[str, Any]] = {}  # opaque token -> its claims
        self.issuer = (issuer or self.url).rstrip("/")
        self.audience = audience
        self.token_ttl = token_ttl
        self.jwks_max_age = jwks_max_age
        self.keys_file = Path(keys_file) if keys_file else None
        self._keys_lock = threading.Lock()
        if self.keys_file and self.keys_file.exists():
            self.active, self.published = self._load_keys(self.keys_file)
        else:
            self.active = {alg: make_key(alg) for alg in ALGORITHMS}
            self.published = list(self.active.values())
            self._save_keys()
        self.routes.update({
            ("GET", "/.well-known/jwks.json"): self._jwks,
            ("GET", "/.well-known/openid-configuration"): self._discovery,
            ("GET", "/.well-known/oauth-authorization-server"): self._discovery,
            ("POST", "/token"): self._token,
            ("POST", "/rotate"): self._rotate,
            ("POST", "/introspect"): self._introspect,
        })

    # -- Python API (tests, demo) -----------------------------------------------------------------
    @property
    def jwks_path(self) -> str:
        return "/.well-known/jwks.json"

    def jwks(self) -> dict:
        with self._keys_lock:
            return jwks_document(self.published)

    def kid(self, alg: str = "RS256") -> str:
        with self._keys_lock:
            return self.active[alg].kid

    def mint(self, sub: str = "alice", scope: str = "", alg: str = "RS256", audience: str | list[str] | None = None,
             ttl: int | None = None, **claims: Any) -> str:
        """A signed access token; `claims` are added (and may override the standard ones)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience if audience is not None else self.audience,
            "scope": scope,
            "client_id": "demo-client",
            "iat": now,
            "nbf": now - 5,
            "exp": now + (ttl if ttl is not None else self.token_ttl),
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        with self._keys_lock:
            key = self.active.get(alg)
        if key is None:
            raise ValueError(f"no active key for {alg}; the IdP signs with {', '.join(ALGORITHMS)}")
        return key.sign(body)

    def mint_opaque(self, sub: str = "alice", scope: str = "", audience: str | list[str] | None = None,
                    ttl: int | None = None, token: str | None = None, **claims: Any) -> str:
        """An opaque access token (random, or `token`): its claims, as `mint` would sign them, are known only to
        /introspect."""
        token = token or secrets.token_urlsafe(32)
        claims_of_token: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": audience if audience is not None else self.audience,
            "scope": scope, "client_id": "demo-client", "token_type": "Bearer",
            "iat": int(time.time()), "exp": int(time.time()) + (ttl if ttl is not None else self.token_ttl),
        }
        claims_of_token.update(claims)
        with self._opaque_lock:
            self._opaque[token] = claims_of_token
        return token

    def revoke(self, token: str) -> None:
        with self._opaque_lock:
            self._opaque.pop(token, None)

    def rotate(self, keep_old: bool = True, algorithms: list[str] | None = None) -> dict:
        """New signing key (new kid) for each algorithm; the previous keys stay published if `keep_old`."""
        algorithms = list(algorithms or ALGORITHMS)
        for alg in algorithms:
            if alg not in ALGORITHMS:
                raise ValueError(f"unknown algorithm {alg!r}")
        with self._keys_lock:
            for alg in algorithms:
                old = self.active[alg]
                self.active[alg] = make_key(alg)
                if not keep_old:
                    self.published = [k for k in self.published if k.kid != old.kid]
                self.published.append(self.active[alg])
            self._save_keys()
            return {"active": {a: k.kid for a, k in self.active.items()}, "published": [k.kid for k in self.published]}

    # -- keys on disk (--keys-file) ---------------------------------------------------------------
    @staticmethod
    def _load_keys(path: Path) -> tuple[dict[str, SigningKey], list[SigningKey]]:
        doc = json.loads(path.read_text())
        published = [load_key(k["alg"], k["kid"], k["pem"].encode()) for k in doc["keys"]]
        by_kid = {k.kid: k for k in published}
        return {alg: by_kid[kid] for alg, kid in doc["active"].items()}, published

    def _save_keys(self) -> None:
        """Writes every published key (private halves: this file is the IdP's secret) atomically."""
        if self.keys_file is None:
            return
        doc = {"active": {alg: k.kid for alg, k in self.active.items()},
               "keys": [{"kid": k.kid, "alg": k.alg, "pem": k.private_pem().decode()} for k in self.published]}
        tmp = self.keys_file.with_name(self.keys_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.keys_file)

    # -- HTTP -------------------------------------------------------------------------------------
    def _jwks(self, req: Request) -> Response:
        return Response(200, self.jwks(), headers={"Cache-Control": f"public, max-age={self.jwks_max_age}"})

    def _discovery(self, req: Request) -> Response:
        return Response(200, {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}{self.jwks_path}",
            "token_endpoint": f"{self.issuer}/token",
            "introspection_endpoint": f"{self.issuer}/introspect",
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "scopes_supported": ["read:tasks", "write:tasks", "admin"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        })

    def _token(self, req: Request) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            form = {k: v[0] for k, v in req.form().items()}
            if form.get("grant_type") != "client_credentials":
                return Response(400, {"error": "unsupported_grant_type"})
            if not form.get("client_id"):
                return Response(400, {"error": "invalid_request", "error_description": "client_id is required"})
            params: dict[str, Any] = {"sub": form["client_id"], "scope": form.get("scope", "")}
        else:
            try:
                params = req.json()
            except ValueError:
                return error(400, "invalid_request", "body must be JSON or a client_credentials form")
            if not isinstance(params, dict):
                return error(400, "invalid_request", "body must be a JSON object")
        sub, scope = params.get("sub", "alice"), params.get("scope", "")
        alg, ttl = params.get("alg", "RS256"), params.get("ttl", self.token_ttl)
        extra = params.get("claims", {})
        if not isinstance(sub, str) or not sub or not isinstance(scope, str):
            return error(400, "invalid_request", "sub must be a non-empty string and scope a string")
        if alg not in ALGORITHMS:
            return error(400, "invalid_request", f"alg must be one of {', '.join(ALGORITHMS)}")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
            return error(400, "invalid_request", f"ttl must be an integer 1..{MAX_TTL}")
        if not isinstance(extra, dict):
            return error(400, "invalid_request", "claims must be an object")
        audience = params.get("aud")
        if params.get("opaque") is True:
            token = self.mint_opaque(sub=sub, scope=scope, audience=audience, ttl=ttl, **extra)
            return Response(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope})
        token = self.mint(sub=sub, scope=scope, alg=alg, audience=audience, ttl=ttl, **extra)
        return Response(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": scope})

    def _introspect(self, req: Request) -> Response:
        try:
            form = req.form()
        except UnicodeDecodeError:
            return oauth_error(400, "invalid_request", "body is not UTF-8")
        _, refused = authenticate_client(req, form, self.introspection_clients, self.introspection_client_auth,
                                         realm="idp")
        if refused is not None:
            return refused
        tokens = form.get("token", [])
        if len(tokens) != 1:
            return oauth_error(400, "invalid_request", "exactly one token is required")
        with self._opaque_lock:
            claims = self._opaque.get(tokens[0])
        if claims is None or claims["exp"] <= time.time():
            return Response(200, {"active": False})
        return Response(200, {"active": True, **claims})

    def _rotate(self, req: Request) -> Response:
        try:
            params = req.json() if req.body else {}
        except ValueError:
            return error(400, "invalid_request", "body must be JSON")
        keep_old = params.get("keep_old", True)
        algorithms = params.get("algorithms")
        if not isinstance(keep_old, bool) or not (algorithms is None or isinstance(algorithms, list)):
            return error(400, "invalid_request", "keep_old must be a boolean and algorithms a list")
        try:
            return Response(200, self.rotate(keep_old=keep_old, algorithms=algorithms))
        except ValueError as e:
            return error(400, "invalid_request", str(e))


def main() -> None:
    parser = script_args("Demo identity provider (JWT access tokens, JWKS, key rotation)", 9000)
    parser.add_argument("--issuer", help="issuer URL (default: http://HOST:PORT)")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help="default `aud` of issued tokens")
    parser.add_argument("--token-ttl", type=int, default=3600)
    parser.add_argument("--keys-file", help="keep the signing keys in this file across restarts (created if absent)")
    args = parser.parse_args()
    setup_logging(args.log_level)
    IdentityProvider(args.host, args.port, issuer=args.issuer, audience=args.audience,
                     token_ttl=args.token_ttl, keys_file=args.keys_file).serve_forever()


if __name__ == "__main__":
    main()
