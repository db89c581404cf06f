"""The base of every scripted HTTP server the tests, the demo stack, bench/ and soak/ run in-process: the
harness's JWKS server and echo upstream (harness/servers.py) and the stack's identity provider, token
exchange server, connector and tasks API (stack/).

A `ScriptedServer` serves on a thread of this process, on host:port (port 0: a free one, picked by the
kernel). It records every request and counts them per path (`hits`, `hits_for`, bounded `wait_for_hits`),
and answers requests to its `faulty_paths` as a test scripts it (`script`, `set_default`, `release`)
before answering them normally. Subclasses answer in `_serve(request)`."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

# Upper bound for a held ("hang") response, so no server thread outlives a test run.
MAX_HANG_SECONDS = 60.0

# What a misconfigured upstream answers instead of JSON.
NOT_JSON_PAGE = b"<html><body><h1>Welcome to nginx!</h1></body></html>"


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased; a repeated header's values joined with ", "
    body: bytes
    target: str = ""  # the request target as sent (path and query)
    received_at: float = field(default_factory=time.monotonic)  # to order requests across servers

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
    """An answer. `body`: dict/list -> JSON; bytes/str -> as is. `pieces` instead streams the body: with
    `length`, under that Content-Length; without, chunked, each piece a chunk of its own, flushed."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    pieces: Iterable[bytes] | None = None
    length: int | None = None

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
#   "ok"                normal answer                       "500"     500 {"error":"server_error"}
#   "404"               404 {"error":"not_found"}           "garbage" (or "html") 200 text/html, not JSON
#   "hang"              hold until release() (or MAX_HANG_SECONDS), then answer normally
#   ("delay", seconds)  wait (or until the server stops), then answer normally
#   ("status", code[, body])  a fixed answer
# Servers add their own in `_special` (the JWKS server: "empty", ("huge", n); the STS: "expires_in_0", ...).
Behaviour = Any


class _Handler(BaseHTTPRequestHandler):
    """Reads a request (Content-Length or chunked), lets the server answer it, writes the answer. Each server
    gets a subclass with a `do_<METHOD>` for the methods it serves only; others are answered 501."""

    protocol_version = "HTTP/1.1"
    # Buffered: the head and a body go out in one write. Written apart (http.server's default), the body
    # waited for the client's delayed ACK of the head (Nagle's algorithm): 40 ms per request on loopback.
    # A streamed answer is still written as before: the head, then piece by piece.
    wbufsize = -1

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        owner: ScriptedServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = Request(self.command, url.path, urllib.parse.parse_qs(url.query), headers, self._read_body(), self.path)
        try:
            resp = owner._serve(req)
        except Exception:  # a bug in a handler (or an unknown behaviour) answers 500, not a dropped connection
            log.exception("%s: handler failed for %s %s", owner.name, req.method, req.path)
            resp = error(500, "server_error", "internal error")
        try:
            self._write(resp, {**owner.default_headers, **resp.headers})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (a callout timeout, a body over its limit): expected in failure tests

    def _write(self, resp: Response, headers: dict[str, str]) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        if resp.pieces is None:
            body = resp.encoded()
            self.send_header("Content-Length", str(len(body)))
        elif resp.length is not None:
            self.send_header("Content-Length", str(resp.length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            self.wfile.flush()
            return
        if resp.pieces is None:
            self.wfile.write(body)
        else:
            self.wfile.flush()  # the head first, on its own, then each piece as it comes
            for piece in resp.pieces:
                self.wfile.write(piece if resp.length is not None else f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            if resp.length is None:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5. A burst released at once (16 requests that waited for
    # one exchange, over 4 workers' fresh upstream connections) overflowed it: the kernel dropped the
    # extra SYNs, and Envoy's 1 s connect timeout ran out before the retransmission (503).
    request_queue_size = 128


class ScriptedServer:
    """A threaded HTTP/1.1 server on host:port that records, counts and answers as scripted (module doc)."""

    name = "server"
    methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
    faulty_paths: tuple[str, ...] = ()
    default_headers: dict[str, str] = {}  # sent with every answer, unless the answer sets them itself
    server_version: str | None = None  # the Server header's product (None: http.server's)

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type(f"{type(self).__name__}Handler", (_Handler,),
                       {f"do_{m}": _Handler._handle for m in self.methods}
                       | ({"server_version": self.server_version} if self.server_version else {}))
        self._httpd = _Server((host, port), handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"{self.name}-{self.port}")
        self._started = False
        self._cond = threading.Condition()
        self._hits: Counter[str] = Counter()
        self._requests: list[Any] = []  # each request as `_record` was given it
        self._queue: deque[Behaviour] = deque()
        self.default: Behaviour = "ok"
        self._release = threading.Event()
        self._stopping = threading.Event()

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
        """Lets every held or delayed answer go, then stops serving and closes the socket."""
        self._stopping.set()
        self._release.set()
        self._on_stop()
        if self._started:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._started = False
        self._httpd.server_close()

    def _on_stop(self) -> None:
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
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
    def requests(self) -> list[Any]:
        """Every request so far: a `Request`, unless the server records another form of it (`_record`)."""
        with self._cond:
            return list(self._requests)

    def wait_for_hits(self, n: int, timeout: float, path: str | None = None) -> bool:
        """Block until at least `n` requests (to `path`, if given) arrived; bounded by `timeout`."""
        return self._wait_until(lambda: (self._hits[path] if path else sum(self._hits.values())) >= n, timeout)

    def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate` (called under the lock) holds; bounded by `timeout`."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

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

    # -- answering --------------------------------------------------------------------------------
    def _serve(self, req: Request) -> Response:
        """The answer to one request (on the server's thread for it). Subclasses override it."""
        raise NotImplementedError

    def _record(self, req: Request, entry: Any = None) -> Behaviour:
        """Counts the request and records it (or `entry`, another form of it); returns the behaviour scripted
        for it ("ok" off `faulty_paths`)."""
        with self._cond:
            self._hits[req.path] += 1
            self._requests.append(req if entry is None else entry)
            behaviour = "ok"
            if req.path in self.faulty_paths:
                behaviour = self._queue.popleft() if self._queue else self.default
            self._cond.notify_all()
        return behaviour

    def _behave(self, behaviour: Behaviour, req: Request) -> Response | None:
        """A scripted answer, or None to answer normally (after any hold or delay)."""
        if behaviour == "ok":
            return None
        if behaviour == "hang":
            self._release.wait(MAX_HANG_SECONDS)
            return None
        if isinstance(behaviour, tuple) and behaviour[0] == "delay":
            self._stopping.wait(float(behaviour[1]))
            return None
        if behaviour == "500":
            return error(500, "server_error", "scripted failure")
        if behaviour == "404":
            return error(404, "not_found", "scripted failure")
        if behaviour in ("garbage", "html"):
            return Response(200, NOT_JSON_PAGE, content_type="text/html")
        if isinstance(behaviour, tuple) and behaviour[0] == "status":
            return Response(int(behaviour[1]), behaviour[2] if len(behaviour) > 2 else {"error": "scripted"})
        special = self._special(behaviour, req)
        if special is not None:
            return special
        raise ValueError(f"{self.name}: unknown behaviour {behaviour!r}")

    def _special(self, behaviour: Behaviour, req: Request) -> Response | None:
        """A server's own behaviours (None: not one of them)."""
        return None
