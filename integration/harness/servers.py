"""In-process HTTP servers on 127.0.0.1: the JWKS endpoint (scriptable failures) and the echo upstream."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .keys import SigningKey, jwks_document

# Upper bound for any handler that blocks ("hang"/"hold"), so no server thread outlives the test run.
MAX_HANG_SECONDS = 60.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5. A burst released at once (16 requests that waited for
    # one exchange, over 4 workers' fresh upstream connections) overflowed it: the kernel dropped the
    # extra SYNs, and Envoy's 1 s connect timeout ran out before the retransmission (503).
    request_queue_size = 128


class _BackgroundServer:
    handler_class: type[BaseHTTPRequestHandler]

    def __init__(self, port: int = 0) -> None:
        self._httpd = _Server(("127.0.0.1", port), self.handler_class)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._started = False

    def start(self):
        self._thread.start()
        self._started = True
        return self

    def stop(self) -> None:
        self._before_stop()
        if self._started:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()

    def _before_stop(self) -> None:
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------
# JWKS server
# ---------------------------------------------------------------------------------------------------

# Behaviours for one JWKS response:
#   "ok"     200 with the current key set          "500"   500 with a JSON error body
#   "html"   200 text/html garbage                 "empty" 200 {"keys": []}
#   "hang"   hold the response until release() (or MAX_HANG_SECONDS), then answer "ok"
#   ("delay", seconds)  wait that long, then answer "ok"
#   ("huge", nbytes)    200 application/json of nbytes: the key set padded with a long string member
Behaviour = Any


class _JwksHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        server: JwksServer = self.server.owner  # type: ignore[attr-defined]
        if self.path.split("?")[0] != server.path:
            self._send(404, b'{"error":"not found"}', "application/json")
            return
        behaviour, body, max_age = server._on_request(dict(self.headers.items()))
        if behaviour == "hang":
            server._release.wait(MAX_HANG_SECONDS)
            body = json.dumps(server.document()).encode()
            behaviour = "ok"
        elif isinstance(behaviour, tuple) and behaviour[0] == "delay":
            server._release.wait(float(behaviour[1]))  # returns early only when the server stops
            behaviour = "ok"
        if behaviour == "ok":
            extra = {"Cache-Control": f"max-age={max_age}"} if max_age is not None else {}
            self._send(200, body, "application/json", extra)
        elif behaviour == "500":
            self._send(500, b'{"error":"internal"}', "application/json")
        elif behaviour == "html":
            self._send(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
        elif behaviour == "empty":
            self._send(200, b'{"keys":[]}', "application/json")
        elif isinstance(behaviour, tuple) and behaviour[0] == "huge":
            self._send_huge(body, int(behaviour[1]))
        else:
            raise ValueError(f"unknown JWKS behaviour {behaviour!r}")

    def _send_huge(self, keys_json: bytes, size: int) -> None:
        """A valid JWKS document of `size` bytes, written in 1 MiB pieces (never held in memory whole)."""
        head, tail = keys_json[:-1] + b',"padding":"', b'"}'
        padding = max(0, size - len(head) - len(tail))
        piece = b"x" * (1 << 20)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(head) + padding + len(tail)))
            self.end_headers()
            self.wfile.write(head)
            while padding > 0:
                n = min(padding, len(piece))
                self.wfile.write(piece[:n])
                padding -= n
            self.wfile.write(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy stopped reading: expected when the answer is over its limit

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy gave up (callout timeout): expected in the timeout tests


class JwksServer(_BackgroundServer):
    """Serves GET /jwks.json with the current key set; counts hits; scriptable failures.

    `script(*behaviours)` queues behaviours for the next requests; after the queue is used up every
    request gets `default` (normally "ok").
    """

    handler_class = _JwksHandler

    def __init__(self, keys: list[SigningKey] | None = None, path: str = "/jwks.json", port: int = 0) -> None:
        super().__init__(port)
        self.path = path
        self._lock = threading.Condition()
        self._keys: list[SigningKey] = list(keys or [])
        self._queue: deque[Behaviour] = deque()
        self.default: Behaviour = "ok"
        self.max_age: int | None = None
        self._hits: list[float] = []
        self.request_headers: list[dict] = []
        self._release = threading.Event()

    # -- test controls ------------------------------------------------------------------------------
    def set_keys(self, keys: list[SigningKey]) -> None:
        """Replace the key set (rotation)."""
        with self._lock:
            self._keys = list(keys)

    def document(self) -> dict:
        with self._lock:
            return jwks_document(self._keys)

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._queue.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        with self._lock:
            self.default = behaviour

    def release(self) -> None:
        """Let every held ("hang") response go, now and from now on."""
        self._release.set()

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self._hits)

    def wait_for_hits(self, n: int, timeout: float) -> bool:
        """Block until at least `n` requests arrived (bounded)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._hits) >= n, timeout=timeout)

    # -- handler side -------------------------------------------------------------------------------
    def _on_request(self, headers: dict):
        with self._lock:
            self._hits.append(time.monotonic())
            self.request_headers.append(headers)
            behaviour = self._queue.popleft() if self._queue else self.default
            body = json.dumps(jwks_document(self._keys)).encode()
            max_age = self.max_age
            self._lock.notify_all()
        return behaviour, body, max_age

    def _before_stop(self) -> None:
        self._release.set()


# ---------------------------------------------------------------------------------------------------
# Echo upstream
# ---------------------------------------------------------------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

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

    def _handle(self):
        server: EchoServer = self.server.owner  # type: ignore[attr-defined]
        body = self._read_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
        }
        server._record(record)
        server._hold(headers.get("x-test-id"))
        scripted = server._answer_for(headers.get("x-test-id"))
        if scripted is not None:
            content_type, pieces = scripted
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in pieces:  # each piece its own chunk, flushed: Envoy sees them as separate frames
                if piece is None:  # wait for `release(f"{test_id}/gate")` before the next piece
                    server._hold(f"{headers.get('x-test-id')}/gate")
                    continue
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _handle


class EchoServer(_BackgroundServer):
    """Answers every request 200 with JSON {method, path, headers (lower-cased), body}; records them.

    `hold(test_id)` makes requests carrying that `x-test-id` wait, after being recorded, until
    `release(test_id)` (or MAX_HANG_SECONDS): a request kept in flight without sleeping.
    `answer(test_id, content_type, pieces)` scripts the answer to requests carrying that `x-test-id`
    instead: status 200, chunked, each piece a chunk of its own (an upstream that answers whatever it
    likes, e.g. a `tools/list` result to another request); a `None` piece waits, if `hold(f"{test_id}/gate")`
    was called, until `release(f"{test_id}/gate")`.
    """

    handler_class = _EchoHandler

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._lock = threading.Condition()
        self._requests: list[dict] = []
        self._held: dict[str, threading.Event] = {}
        self._answers: dict[str, tuple[str, list[bytes | None]]] = {}

    def answer(self, test_id: str, content_type: str, pieces: list[bytes | None]) -> None:
        with self._lock:
            self._answers[test_id] = (content_type, pieces)

    def _answer_for(self, test_id: str | None) -> tuple[str, list[bytes | None]] | None:
        with self._lock:
            return self._answers.get(test_id) if test_id else None

    def _record(self, record: dict) -> None:
        with self._lock:
            self._requests.append(record)
            self._lock.notify_all()

    def _hold(self, test_id: str | None) -> None:
        with self._lock:
            gate = self._held.get(test_id) if test_id else None
        if gate is not None:
            gate.wait(MAX_HANG_SECONDS)

    def hold(self, test_id: str) -> None:
        with self._lock:
            self._held[test_id] = threading.Event()

    def release(self, test_id: str) -> None:
        with self._lock:
            gate = self._held.pop(test_id, None)
        if gate is not None:
            gate.set()

    def wait_for(self, test_id: str, timeout: float) -> bool:
        """Block until a request with this `x-test-id` has arrived (bounded)."""
        with self._lock:
            return self._lock.wait_for(lambda: any(r["headers"].get("x-test-id") == test_id for r in self._requests),
                                       timeout=timeout)

    def _before_stop(self) -> None:
        with self._lock:
            gates, self._held = list(self._held.values()), {}
        for gate in gates:
            gate.set()

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    def seen(self, test_id: str) -> list[dict]:
        """Requests that carried `x-test-id: <test_id>` (how tests find their own requests)."""
        return [r for r in self.requests if r["headers"].get("x-test-id") == test_id]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
