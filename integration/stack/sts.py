"""An OAuth 2.0 Token Exchange server (RFC 8693) for the demo and the tests.

  POST /token   application/x-www-form-urlencoded:
                  grant_type=urn:ietf:params:oauth:grant-type:token-exchange
                  subject_token=<a JWT from the identity provider>     (verified against the IdP's JWKS)
                  subject_token_type=urn:ietf:params:oauth:token-type:access_token (or :jwt)
                  [audience=..] [resource=..] [scope=..] [requested_token_type=..]
                client authentication: HTTP Basic (RFC 6749 §2.3.1) or client_id/client_secret in the form
                -> 200 {"access_token", "issued_token_type", "token_type": "Bearer", "expires_in", "scope"}
                requested_token_type=urn:ietf:params:oauth:token-type:id-jag (MCP enterprise-managed
                authorization, ext-auth draft of 2025-10-24; draft-ietf-oauth-identity-assertion-authz-grant):
                `audience` (an authorization server's issuer, one of `id_jag_audiences`) and `resource` are
                required; -> 200 {"access_token": <ID-JAG>, "issued_token_type": "...:id-jag",
                "token_type": "N_A", "expires_in"}. The ID-JAG is a JWT with header typ `oauth-id-jag+jwt`
                and claims iss, sub, aud (the authorization server), resource, client_id (the authenticated
                client), jti, iat, exp, scope.
                   The token is a JWT signed by this server's own key: iss = this server, sub = the subject's
                   sub, aud = the requested audience/resource, scope = requested ∩ subject's scopes,
                   act = {"sub": <client_id>} (RFC 8693 §4.1, nesting any earlier `act`).
                errors (RFC 6749 §5.2 / RFC 8693 §2.2.2): 400 unsupported_grant_type, invalid_request,
                invalid_grant (subject token refused), invalid_target (audience/resource not served),
                invalid_scope; 401 invalid_client.
  GET  /.well-known/jwks.json, /.well-known/openid-configuration

Tests script failures on /token (see `harness.scripted_http.Behaviour`) plus "expires_in_0", "expires_in_negative",
"no_access_token", "wrong_token_type", "invalid_grant", "invalid_target", "invalid_client".
Run: python -m stack.sts --port 9100 --subject-issuer http://idp:9000 --subject-jwks-url http://idp:9000/.well-known/jwks.json
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from typing import Any

from harness.keys import jwks_document, make_key
from harness.scripted_http import Request, Response

from .common import JsonServer, JwtVerifier, TokenError, authenticate_client, oauth_error, TrustedIssuer, script_args, scopes_of, setup_logging

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_JAG_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
ID_JAG_TYP = "oauth-id-jag+jwt"
ID_JAG_TTL = 300
SUBJECT_TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)

DEFAULT_CLIENTS = {"mcp-gateway": "demo-secret"}
DEFAULT_TARGETS = ("tasks-api",)


class TokenExchangeServer(JsonServer):
    name = "sts"
    faulty_paths = ("/token",)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, subject_issuer: str, subject_jwks_url: str,
                 subject_audiences: list[str] | None = None, issuer: str | None = None,
                 clients: dict[str, str] | None = None, client_auth: str = "any",
                 targets: list[str] | tuple[str, ...] = DEFAULT_TARGETS, token_ttl: int = 300,
                 id_jag_audiences: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(host, port)
        if client_auth not in ("basic", "post", "any"):
            raise ValueError("client_auth must be basic, post or any")
        self.issuer = (issuer or self.url).rstrip("/")
        self.clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.client_auth = client_auth
        self.targets = list(targets)
        self.token_ttl = token_ttl
        self.id_jag_audiences = list(id_jag_audiences)  # authorization servers this IdP issues ID-JAGs for
        self.key = make_key("ES256")
        self.verifier = JwtVerifier([TrustedIssuer(subject_issuer, subject_jwks_url, subject_audiences)])
        self._issued_lock = threading.Lock()
        self.issued: list[dict] = []  # claims of every token issued, in order
        self.routes.update({
            ("POST", "/token"): self._token,
            ("GET", "/.well-known/jwks.json"): lambda req: Response(200, jwks_document([self.key])),
            ("GET", "/.well-known/openid-configuration"): self._discovery,
        })

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def _discovery(self, req: Request) -> Response:
        return Response(200, {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "token_endpoint": f"{self.issuer}/token",
            "grant_types_supported": [GRANT_TYPE],
            "token_exchange_requested_token_types_supported": [ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, ID_JAG_TOKEN_TYPE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })

    # -- client authentication --------------------------------------------------------------------
    def _client(self, req: Request, form: dict[str, list[str]]) -> tuple[str | None, Response | None]:
        return authenticate_client(req, form, self.clients, self.client_auth, realm="sts")

    # -- the token endpoint -----------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        try:
            form = req.form()
        except UnicodeDecodeError:
            return oauth_error(400, "invalid_request", "body is not UTF-8")
        for name in ("grant_type", "subject_token", "subject_token_type", "requested_token_type", "scope",
                     "client_id", "client_secret"):
            if len(form.get(name, [])) > 1:
                return oauth_error(400, "invalid_request", f"{name} given more than once")
        client_id, failure = self._client(req, form)
        if failure is not None:
            return failure
        one = {k: v[0] for k, v in form.items()}
        if one.get("grant_type") != GRANT_TYPE:
            return oauth_error(400, "unsupported_grant_type", "only token exchange is supported")
        subject_token, subject_type = one.get("subject_token"), one.get("subject_token_type")
        if not subject_token or not subject_type:
            return oauth_error(400, "invalid_request", "subject_token and subject_token_type are required")
        if subject_type not in SUBJECT_TOKEN_TYPES:
            return oauth_error(400, "invalid_request", "unsupported subject_token_type")
        if "actor_token" in one or "actor_token_type" in one:
            return oauth_error(400, "invalid_request", "actor tokens are not supported")
        requested_type = one.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if requested_type == ID_JAG_TOKEN_TYPE:
            return self._id_jag(client_id, form, one, subject_token)
        if requested_type not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            return oauth_error(400, "invalid_request", "unsupported requested_token_type")
        try:
            subject = self.verifier.verify(subject_token)
        except TokenError as e:
            return oauth_error(400, "invalid_grant", f"subject token refused: {e.reason}")
        targets = form.get("audience", []) + form.get("resource", [])
        if not targets:
            targets = self.targets[:1]
        unknown = [t for t in targets if t not in self.targets]
        if unknown or not targets:
            return oauth_error(400, "invalid_target", "this server does not issue tokens for the requested target")
        held = scopes_of(subject)
        if "scope" in one:
            requested = one["scope"].split()
            granted = [s for s in requested if s in held]
            if not granted:
                return oauth_error(400, "invalid_scope", "the subject holds none of the requested scopes")
        else:
            granted = held
        now = int(time.time())
        actor: dict[str, Any] = {"sub": client_id}
        if isinstance(subject.get("act"), dict):
            actor["act"] = subject["act"]
        claims = {
            "iss": self.issuer,
            "sub": subject.get("sub"),
            "aud": targets[0] if len(targets) == 1 else targets,
            "scope": " ".join(granted),
            "client_id": client_id,
            "act": actor,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.token_ttl,
            "jti": uuid.uuid4().hex,
        }
        with self._issued_lock:
            self.issued.append(claims)
        return Response(200, {
            "access_token": self.key.sign(claims),
            "issued_token_type": requested_type,
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": claims["scope"],
        })

    def _id_jag(self, client_id: str, form: dict[str, list[str]], one: dict[str, str], subject_token: str) -> Response:
        """An Identity Assertion JWT Authorization Grant for the authorization server named by `audience`."""
        audiences, resources = form.get("audience", []), form.get("resource", [])
        if len(audiences) != 1 or len(resources) != 1:
            return oauth_error(400, "invalid_request", "an ID-JAG needs exactly one audience and one resource")
        if audiences[0] not in self.id_jag_audiences:
            return oauth_error(400, "invalid_target", "no ID-JAGs are issued for this authorization server")
        try:
            subject = self.verifier.verify(subject_token)
        except TokenError as e:
            return oauth_error(400, "invalid_grant", f"subject token refused: {e.reason}")
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject.get("sub"), "aud": audiences[0], "resource": resources[0],
                  "client_id": client_id, "jti": uuid.uuid4().hex, "iat": now, "exp": now + ID_JAG_TTL}
        if "scope" in one:
            claims["scope"] = one["scope"]
        with self._issued_lock:
            self.issued.append(claims)
        body = {"access_token": self.key.sign(claims, headers={"typ": ID_JAG_TYP}),
                "issued_token_type": ID_JAG_TOKEN_TYPE, "token_type": "N_A", "expires_in": ID_JAG_TTL}
        if "scope" in one:
            body["scope"] = one["scope"]
        return Response(200, body)

    def _special(self, behaviour: Any, req: Request) -> Response | None:
        if behaviour in ("expires_in_0", "expires_in_negative", "no_access_token", "wrong_token_type"):
            body = {"access_token": "opaque-" + uuid.uuid4().hex, "issued_token_type": ACCESS_TOKEN_TYPE,
                    "token_type": "Bearer", "expires_in": self.token_ttl}
            if behaviour == "expires_in_0":
                body["expires_in"] = 0
            elif behaviour == "expires_in_negative":
                body["expires_in"] = -60
            elif behaviour == "no_access_token":
                del body["access_token"]
            else:
                body["token_type"] = "mac"
            return Response(200, body)
        if behaviour in ("invalid_grant", "invalid_target"):
            return oauth_error(400, behaviour, "scripted failure")
        if behaviour == "invalid_client":
            return oauth_error(401, "invalid_client", "scripted failure", {"WWW-Authenticate": 'Basic realm="sts"'})
        return None


def main() -> None:
    parser = script_args("Demo RFC 8693 token exchange server", 9100)
    parser.add_argument("--issuer", help="issuer URL of the tokens this server signs (default: http://HOST:PORT)")
    parser.add_argument("--subject-issuer", required=True, help="issuer of the subject tokens (the IdP)")
    parser.add_argument("--subject-jwks-url", required=True, help="the IdP's JWKS URL")
    parser.add_argument("--subject-audience", action="append", help="accepted `aud` of subject tokens (repeatable)")
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET",
                        help="a client allowed to exchange tokens (repeatable; default mcp-gateway:demo-secret)")
    parser.add_argument("--client-auth", choices=["basic", "post", "any"], default="any")
    parser.add_argument("--target", action="append", help="an audience/resource this server issues for (repeatable)")
    parser.add_argument("--token-ttl", type=int, default=300)
    parser.add_argument("--id-jag-audience", action="append", default=[],
                        help="an authorization server issuer this IdP issues ID-JAGs for (repeatable)")
    args = parser.parse_args()
    setup_logging(args.log_level)
    clients = dict(c.split(":", 1) for c in args.client) if args.client else None
    TokenExchangeServer(
        args.host, args.port, subject_issuer=args.subject_issuer, subject_jwks_url=args.subject_jwks_url,
        subject_audiences=args.subject_audience, issuer=args.issuer, clients=clients, client_auth=args.client_auth,
        targets=args.target or DEFAULT_TARGETS, token_ttl=args.token_ttl, id_jag_audiences=args.id_jag_audience,
    ).serve_forever()


if __name__ == "__main__":
    main()
