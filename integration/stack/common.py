"""Shared pieces of the stack's small servers: a threaded JSON HTTP server with hit counters and scriptable
failures, signing keys, and JWT verification against a remote JWKS (PyJWT's PyJWKClient)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

log = logging.getLogger("stack")

# Upper bound for a held ("hang") response, so no server thread outlives a test run.
MAX_HANG_SECONDS = 60.0

# Algorithms the stack's verifiers accept (asymmetric only; never `none` or HS*).
VERIFY_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


# -------------------------------------------------------------------------------------------------
# Keys
# -------------------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict = field(default_factory=dict)

    @property
    def public(self):
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        hdr = {"kid": self.kid, "typ": "at+jwt"}
        hdr.update(headers or {})
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=hdr)


def new_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    """A fresh key for `alg` (RSA 2048 for RS*/PS*, P-256, P-384, Ed25519) with its public JWK (kid, alg,
    use=sig). The test harness uses the same function (harness.keys.make_key)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:12]}"
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg in ("ES256", "ES384"):
        private = ec.generate_private_key(ec.SECP256R1() if alg == "ES256" else ec.SECP384R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    return signing_key(alg, kid, private)


def signing_key(alg: str, kid: str, private: Any) -> SigningKey:
    """A SigningKey for an existing private key, with its public JWK (kid, alg, use=sig)."""
    if alg.startswith(("RS", "PS")):
        public_jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg in ("ES256", "ES384"):
        public_jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    public_jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return SigningKey(kid=kid, alg=alg, private=private, jwk=public_jwk)


def jwks_document(keys: list[SigningKey]) -> dict:
    return {"keys": [k.jwk for k in keys]}


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


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode("utf-8"), keep_blank_values=True)

    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    return Response(status, {"error": code, "message": message, **extra})


# Behaviours a test can script for the next requests to a server's `faulty_paths`:
#   "ok"                normal answer                 "500"      500 {"error":"server_error"}
#   "404"               404 {"error":"not_found"}     "garbage"  200 text/html that is not JSON
#   "hang"              hold until release() (or MAX_HANG_SECONDS), then answer normally
#   ("delay", seconds)  wait, then answer normally    ("status", code[, body])  a fixed answer
# Servers add their own (the STS: "expires_in_0", "expires_in_negative"; the connector: "401", "403").
Behaviour = Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mcp-authz-stack"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        owner: JsonServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = Request(self.command, url.path, urllib.parse.parse_qs(url.query), headers, self._read_body())
        try:
            resp = owner._dispatch(req)
        except Exception:  # a bug in a handler must answer 500, not drop the connection
            log.exception("%s: handler failed for %s %s", owner.name, req.method, req.path)
            resp = error(500, "server_error", "internal error")
        body = resp.encoded()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", resp.headers.pop("Cache-Control", "no-store"))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (a callout timeout): expected in failure tests

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class JsonServer:
    """A threaded HTTP/1.1 server on host:port (port 0: the kernel picks a free one, so parallel runs never
    collide). Subclasses fill `routes` with {(method, path): handler(request) -> Response}.

    Every request is counted (`hits`, `hits_for(path)`, `wait_for_hits(...)`) and recorded (`requests`).
    Requests to `faulty_paths` go through the scripted behaviours first (`script`, `set_default`)."""

    name = "server"
    faulty_paths: tuple[str, ...] = ()

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes: dict[tuple[str, str], Callable[[Request], Response]] = {("GET", "/health"): self._health}
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"{self.name}-{self.port}")
        self._started = False
        self._cond = threading.Condition()
        self._hits: Counter[str] = Counter()
        self._requests: list[Request] = []
        self._queue: deque[Behaviour] = deque()
        self.default: Behaviour = "ok"
        self._release = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self):
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        self._release.set()
        if self._started:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._started = False
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

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

    # -- observation ------------------------------------------------------------------------------
    @property
    def hits(self) -> int:
        with self._cond:
            return sum(self._hits.values())

    def hits_for(self, path: str) -> int:
        with self._cond:
            return self._hits[path]

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def wait_for_hits(self, n: int, timeout: float, path: str | None = None) -> bool:
        """Block until at least `n` requests (to `path`, if given) arrived; bounded by `timeout`."""
        def enough() -> bool:
            return (self._hits[path] if path else sum(self._hits.values())) >= n
        with self._cond:
            return self._cond.wait_for(enough, timeout=timeout)

    def reset_counters(self) -> None:
        with self._cond:
            self._hits.clear()
            self._requests.clear()

    # -- failure modes ----------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests to `faulty_paths`; then `default` applies again."""
        with self._cond:
            self._queue.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        with self._cond:
            self.default = behaviour

    def release(self) -> None:
        """Let every held ("hang") response go, now and from now on."""
        self._release.set()

    # -- dispatch ---------------------------------------------------------------------------------
    def _health(self, req: Request) -> Response:
        return Response(200, {"service": self.name, "status": "healthy"})

    def _dispatch(self, req: Request) -> Response:
        with self._cond:
            self._hits[req.path] += 1
            self._requests.append(req)
            behaviour = "ok"
            if req.path in self.faulty_paths:
                behaviour = self._queue.popleft() if self._queue else self.default
            self._cond.notify_all()
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            if any(path == req.path for _, path in self.routes):
                return Response(405, {"error": "method_not_allowed"})
            return error(404, "not_found", f"no route for {req.path}")
        fixed = self._behave(behaviour, req)
        if fixed is not None:
            return fixed
        return handler(req)

    def _behave(self, behaviour: Behaviour, req: Request) -> Response | None:
        """A scripted answer, or None to answer normally (after any delay)."""
        if behaviour == "ok":
            return None
        if behaviour == "500":
            return error(500, "server_error", "scripted failure")
        if behaviour == "404":
            return error(404, "not_found", "scripted failure")
        if behaviour == "garbage":
            return Response(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html")
        if behaviour == "hang":
            self._release.wait(MAX_HANG_SECONDS)
            return None
        if isinstance(behaviour, tuple) and behaviour[0] == "delay":
            time.sleep(float(behaviour[1]))
            return None
        if isinstance(behaviour, tuple) and behaviour[0] == "status":
            return Response(int(behaviour[1]), behaviour[2] if len(behaviour) > 2 else {"error": "scripted"})
        special = self._special(behaviour, req)
        if special is not None:
            return special
        raise ValueError(f"{self.name}: unknown behaviour {behaviour!r}")

    def _special(self, behaviour: Behaviour, req: Request) -> Response | None:
        return None


def script_args(description: str, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--log-level", default="INFO")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
