"""An MCP server's own OAuth authorization server that accepts the RFC 7523 JWT bearer grant: the second
step of MCP's enterprise-managed authorization (ext-auth draft of 2025-10-24, section 5).

  POST /oauth2/token  application/x-www-form-urlencoded:
                        grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
                        assertion=<JWT>  [scope=..] [resource=..]
                      client authentication: HTTP Basic or client_id/client_secret in the form
                      -> 200 {"access_token", "token_type": "Bearer", "expires_in", "scope"}
                      The assertion is either an ID-JAG (header typ `oauth-id-jag+jwt`) from a trusted
                      IdP — signature, iss, exp, aud == this server's issuer, client_id == the authenticated
                      client, resource one this server serves, jti never seen before — or (when
                      `plain_assertions` trusts its issuer) an ordinary JWT whose aud names this server.
                      The access token is a JWT signed by this server: iss, sub, aud = the resource,
                      client_id, scope, exp.
                      errors (RFC 6749 §5.2): 400 unsupported_grant_type, invalid_request, invalid_grant
                      (assertion refused: the reason is in error_description); 401 invalid_client.
  GET  /.well-known/jwks.json, /.well-known/oauth-authorization-server

Every accepted assertion's claims are kept in `accepted` (in order). Scripted failures on /oauth2/token.
Run: python -m stack.authz_server --port 9300 --idp-issuer http://sts:9100 --idp-jwks-url http://sts:9100/.well-known/jwks.json
"""

from __future__ import annotations

import threading
import time
import uuid

import jwt

from harness.keys import jwks_document, make_key
from harness.scripted_http import Request, Response

from .common import JsonServer, JwtVerifier, TokenError, TrustedIssuer, script_args, setup_logging
from .common import authenticate_client, oauth_error
from .sts import DEFAULT_CLIENTS, ID_JAG_TYP

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_PATH = "/oauth2/token"


class AuthorizationServer(JsonServer):
    name = "authorization-server"
    faulty_paths = (TOKEN_PATH,)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, idp_issuer: str, idp_jwks_url: str,
                 resources: list[str], issuer: str | None = None, clients: dict[str, str] | None = None,
                 plain_assertions: list[TrustedIssuer] | None = None, token_ttl: int = 600) -> None:
        super().__init__(host, port)
        self.issuer = (issuer or self.url).rstrip("/")
        self.clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.resources = list(resources)
        self.token_ttl = token_ttl
        self.key = make_key("ES256")
        # ID-JAGs: from the IdP, for this server (aud). Plain assertions: their own issuers, aud = this server.
        self.id_jags = JwtVerifier([TrustedIssuer(idp_issuer, idp_jwks_url, [self.issuer])])
        plain = [TrustedIssuer(t.issuer, t.jwks_url, [self.issuer]) for t in plain_assertions or []]
        self.plain = JwtVerifier(plain) if plain else None
        self._lock = threading.Lock()
        self._seen_jti: set[str] = set()
        self.accepted: list[dict] = []  # claims of every accepted assertion, in order
        self.routes.update({
            ("POST", TOKEN_PATH): self._token,
            ("GET", "/.well-known/jwks.json"): lambda req: Response(200, jwks_document([self.key])),
            ("GET", "/.well-known/oauth-authorization-server"): lambda req: Response(200, {
                "issuer": self.issuer, "token_endpoint": f"{self.issuer}{TOKEN_PATH}",
                "jwks_uri": f"{self.issuer}/.well-known/jwks.json", "grant_types_supported": [GRANT_TYPE],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}),
        })

    def _token(self, req: Request) -> Response:
        if req.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
        form = req.form()
        if any(len(v) > 1 for k, v in form.items() if k in ("grant_type", "assertion", "scope", "resource")):
            return oauth_error(400, "invalid_request", "a parameter is given more than once")
        client_id, failure = authenticate_client(req, form, self.clients, "any", self.name)
        if failure is not None:
            return failure
        one = {k: v[0] for k, v in form.items()}
        if one.get("grant_type") != GRANT_TYPE:
            return oauth_error(400, "unsupported_grant_type", "only the JWT bearer grant is supported")
        assertion = one.get("assertion")
        if not assertion:
            return oauth_error(400, "invalid_request", "assertion is required")
        try:
            claims = self._verify(assertion, client_id)
        except TokenError as e:
            return oauth_error(400, "invalid_grant", f"assertion refused: {e.reason}")
        resource = claims.get("resource") or one.get("resource") or self.resources[0]
        scope = claims.get("scope") or one.get("scope") or ""
        now = int(time.time())
        token = self.key.sign({"iss": self.issuer, "sub": claims.get("sub"), "aud": resource, "client_id": client_id,
                               "scope": scope, "iat": now, "exp": now + self.token_ttl, "jti": uuid.uuid4().hex})
        return Response(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl,
                              "scope": scope})

    def _verify(self, assertion: str, client_id: str) -> dict:
        try:
            typ = jwt.get_unverified_header(assertion).get("typ")
        except jwt.PyJWTError as e:
            raise TokenError("malformed assertion") from e
        if typ != ID_JAG_TYP:
            if self.plain is None:
                raise TokenError(f"typ must be {ID_JAG_TYP}")
            claims = self.plain.verify(assertion)
            with self._lock:
                self.accepted.append(claims)
            return claims
        claims = self.id_jags.verify(assertion)
        if claims.get("client_id") != client_id:
            raise TokenError("the ID-JAG was issued to another client")
        if claims.get("resource") not in self.resources:
            raise TokenError("the ID-JAG is for a resource this server does not serve")
        jti = claims.get("jti")
        with self._lock:
            if not isinstance(jti, str) or jti in self._seen_jti:
                raise TokenError("the ID-JAG has no jti or was used before")
            self._seen_jti.add(jti)
            self.accepted.append(claims)
        return claims


def main() -> None:
    parser = script_args("Demo authorization server accepting the JWT bearer grant (ID-JAG)", 9300)
    parser.add_argument("--issuer", help="this server's issuer URL (default: http://HOST:PORT)")
    parser.add_argument("--idp-issuer", required=True, help="issuer of the ID-JAGs (the enterprise IdP)")
    parser.add_argument("--idp-jwks-url", required=True)
    parser.add_argument("--resource", action="append", required=True, help="an MCP server resource (repeatable)")
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET")
    args = parser.parse_args()
    setup_logging(args.log_level)
    clients = dict(c.split(":", 1) for c in args.client) if args.client else None
    AuthorizationServer(args.host, args.port, idp_issuer=args.idp_issuer, idp_jwks_url=args.idp_jwks_url,
                        resources=args.resource, issuer=args.issuer, clients=clients).serve_forever()


if __name__ == "__main__":
    main()
