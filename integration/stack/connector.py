"""The connector backend of seed 001: exchanges a user's temporary token for the provider OAuth token it keeps.

  POST /api/connectors/requestAuth   {"userId", "userToken", "providerId"} -> 200 {"accessToken"}
                                     401 invalid or expired temp token (or issued to another user)
                                     403 user not authorized for the provider (no linked account, or a
                                         temp token issued for another provider)
                                     404 provider not configured          400 malformed request
                                     500 backend error (scripted)
  GET  /link?state=..                account linking (the filter's `link.url`, with `link_secret`): verifies the
                                     state (HMAC-SHA256 over its first part, `exp`), then links its user to its
                                     provider -> 200 {"linked", "userId", "providerId"}; 400 invalid_state
                                     (A missing link answers requestAuth 403 {"error": "not_linked"}.)
  POST /api/connectors/tempToken     demo/test helper standing in for the app's account-linking flow:
                                     {"userId", "providerId", "ttl"?} -> {"userToken", "expiresIn"}
  GET  /provider/<id>/api/v1/me      the provider's API (a stand-in for Reddit's): needs
                                     `Authorization: Bearer <provider token>` -> {"provider", "name", "id"}

Provider tokens are fixed per linked account (the backend stores them; seed 001 says "decrypted"). Temp
tokens are valid until they expire (default 300 s) or are revoked. Tests script failures on requestAuth
(see `harness.scripted_http.Behaviour`) plus "401", "403", "expires_in_negative", "no_access_token".
Run: python -m stack.connector --port 9200 --link alice:reddit
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from harness.scripted_http import Request, Response, error

from .common import JsonServer, script_args, setup_logging

REQUEST_AUTH = "/api/connectors/requestAuth"
DEFAULT_PROVIDERS = ("reddit", "github")
DEFAULT_LINKS = (("alice", "reddit"),)


@dataclass
class TempToken:
    user_id: str
    provider_id: str
    expires_at: float


class ConnectorBackend(JsonServer):
    name = "connector"
    faulty_paths = (REQUEST_AUTH,)

    def __init__(self, host: str = "127.0.0.1", port: int = 0, providers: tuple[str, ...] | list[str] = DEFAULT_PROVIDERS,
                 links: tuple[tuple[str, str], ...] | list[tuple[str, str]] = DEFAULT_LINKS, temp_token_ttl: int = 300,
                 expires_in: int | None = None, link_secret: str | None = None) -> None:
        super().__init__(host, port)
        self.link_secret = link_secret
        self.providers = list(providers)
        self.temp_token_ttl = temp_token_ttl
        self.expires_in = expires_in  # None: answer {"accessToken"} only, as in seed 001
        self._lock = threading.Lock()
        self._temp: dict[str, TempToken] = {}
        self._linked: dict[tuple[str, str], str] = {}
        self._owners: dict[str, tuple[str, str]] = {}
        self.exchanges = 0  # successful requestAuth answers
        for user, provider in links:
            self.link(user, provider)
        self.routes.update({
            ("POST", REQUEST_AUTH): self._request_auth,
            ("POST", "/api/connectors/tempToken"): self._temp_token,
            ("GET", "/link"): self._link,
        })
        for provider in self.providers:
            self.routes[("GET", f"/provider/{provider}/api/v1/me")] = self._provider_me

    # -- Python API -------------------------------------------------------------------------------
    def link(self, user_id: str, provider_id: str) -> str:
        """Link a user's account at a provider; returns the provider access token the backend keeps."""
        with self._lock:
            token = self._linked.get((user_id, provider_id))
            if token is None:
                token = f"{provider_id}-at-{secrets.token_urlsafe(18)}"
                self._linked[(user_id, provider_id)] = token
                self._owners[token] = (user_id, provider_id)
            return token

    def unlink(self, user_id: str, provider_id: str) -> None:
        with self._lock:
            token = self._linked.pop((user_id, provider_id), None)
            self._owners.pop(token or "", None)

    def provider_token(self, user_id: str, provider_id: str) -> str | None:
        with self._lock:
            return self._linked.get((user_id, provider_id))

    def issue_temp_token(self, user_id: str, provider_id: str, ttl: int | None = None) -> str:
        token = "tmp-" + secrets.token_urlsafe(24)
        with self._lock:
            self._temp[token] = TempToken(user_id, provider_id, time.time() + (self.temp_token_ttl if ttl is None else ttl))
        return token

    def revoke(self, temp_token: str) -> None:
        with self._lock:
            self._temp.pop(temp_token, None)

    # -- HTTP -------------------------------------------------------------------------------------
    def _request_auth(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return error(400, "invalid_request", "body must be JSON")
        fields = ("userId", "userToken", "providerId")
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) and body.get(f) for f in fields):
            return error(400, "invalid_request", "userId, userToken and providerId are required strings")
        user_id, user_token, provider_id = (body[f] for f in fields)
        if provider_id not in self.providers:
            return error(404, "provider_not_configured", f"provider {provider_id[:64]!r} is not configured")
        with self._lock:
            temp = self._temp.get(user_token)
            if temp is not None and temp.expires_at <= time.time():
                del self._temp[user_token]
                temp = None
            if temp is None or temp.user_id != user_id:
                return error(401, "invalid_token", "invalid or expired temp token")
            access = self._linked.get((user_id, provider_id))
            if temp.provider_id != provider_id:
                return error(403, "forbidden", "user not authorized for provider")
            if access is None:
                return error(403, "not_linked", "the user has not linked this provider")
            self.exchanges += 1
        answer: dict[str, Any] = {"accessToken": access}
        if self.expires_in is not None:
            answer["expiresIn"] = self.expires_in
        return Response(200, answer)

    def verify_state(self, state: str) -> tuple[str, str] | None:
        """(user, provider) of a state the filter signed with `link_secret` that has not expired."""
        if not self.link_secret or "." not in state:
            return None
        body, mac = state.split(".", 1)
        wanted = base64.urlsafe_b64encode(hmac.new(self.link_secret.encode(), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(wanted.rstrip(b"=").decode(), mac):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            return None
        user, provider = claims.get("sub"), claims.get("provider")
        return (user, provider) if isinstance(user, str) and isinstance(provider, str) else None

    def _link(self, req: Request) -> Response:
        verified = self.verify_state(req.query.get("state", [""])[0])
        if verified is None:
            return error(400, "invalid_state", "the link state is missing, forged or expired")
        user, provider = verified
        self.link(user, provider)
        return Response(200, {"linked": True, "userId": user, "providerId": provider})

    def _temp_token(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return error(400, "invalid_request", "body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str) or not isinstance(body.get("providerId"), str):
            return error(400, "invalid_request", "userId and providerId are required strings")
        ttl = body.get("ttl", self.temp_token_ttl)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 86400:
            return error(400, "invalid_request", "ttl must be an integer 1..86400")
        token = self.issue_temp_token(body["userId"], body["providerId"], ttl)
        return Response(200, {"userToken": token, "expiresIn": ttl})

    def _provider_me(self, req: Request) -> Response:
        provider = req.path.split("/")[2]
        token = req.bearer()
        with self._lock:
            owner = self._owners.get(token or "")
        if owner is None or owner[1] != provider:
            return Response(401, {"error": "invalid_token"}, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return Response(200, {"provider": provider, "name": f"{owner[0]}_on_{provider}", "id": f"t2_{owner[0]}"})

    def _special(self, behaviour: Any, req: Request) -> Response | None:
        if behaviour == "401":
            return error(401, "invalid_token", "scripted failure")
        if behaviour == "403":
            return error(403, "forbidden", "scripted failure")
        if behaviour == "expires_in_negative":
            return Response(200, {"accessToken": "scripted-" + secrets.token_hex(8), "expiresIn": -1})
        if behaviour == "no_access_token":
            return Response(200, {"token": "wrong-field"})
        return None


def main() -> None:
    parser = script_args("Demo connector backend (seed 001's POST /api/connectors/requestAuth)", 9200)
    parser.add_argument("--provider", action="append", help=f"a configured provider (repeatable; default {', '.join(DEFAULT_PROVIDERS)})")
    parser.add_argument("--link", action="append", metavar="USER:PROVIDER",
                        help="a linked account (repeatable; default alice:reddit)")
    parser.add_argument("--temp-token-ttl", type=int, default=300)
    args = parser.parse_args()
    setup_logging(args.log_level)
    links = [tuple(link.split(":", 1)) for link in args.link] if args.link else DEFAULT_LINKS
    ConnectorBackend(args.host, args.port, providers=args.provider or DEFAULT_PROVIDERS, links=links,
                     temp_token_ttl=args.temp_token_ttl).serve_forever()


if __name__ == "__main__":
    main()
