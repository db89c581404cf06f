"""In-process HTTP servers on 127.0.0.1: the JWKS endpoint (scriptable failures) and the echo upstream.
Both are `ScriptedServer`s (harness/scripted_http.py), as are the stack's servers."""

from __future__ import annotations

import json
import threading

from .keys import SigningKey, jwks_document
from .scripted_http import MAX_HANG_SECONDS, Behaviour, Request, Response, ScriptedServer

# ---------------------------------------------------------------------------------------------------
# JWKS server
# ---------------------------------------------------------------------------------------------------

PIECE = b"x" * (1 << 20)


class JwksServer(ScriptedServer):
    """Serves GET /jwks.json with the current key set; counts hits (requests for the key set only); scriptable
    failures.

    `script(*behaviours)` queues behaviours for the next requests; after the queue is used up every
    request gets `default` (normally "ok"). Behaviours: those of `harness.scripted_http` ("ok", "500",
    "html", "hang" (until `release()`), ("delay", s), ...) plus "empty" (200 {"keys": []}) and
    ("huge", nbytes) (200 application/json of nbytes: the key set padded with a long string member).
    `max_age`, when set, is sent as `Cache-Control: max-age=<max_age>`.
    """

    name = "jwks"
    methods = ("GET",)

    def __init__(self, keys: list[SigningKey] | None = None, path: str = "/jwks.json", port: int = 0) -> None:
        super().__init__(port=port)
        self.path = path
        self.faulty_paths = (path,)
        self._keys: list[SigningKey] = list(keys or [])
        self.max_age: int | None = None

    # -- test controls ------------------------------------------------------------------------------
    def set_keys(self, keys: list[SigningKey]) -> None:
        """Replace the key set (rotation)."""
        with self._cond:
            self._keys = list(keys)

    def document(self) -> dict:
        with self._cond:
            return jwks_document(self._keys)

    @property
    def hits(self) -> int:
        return self.hits_for(self.path)

    def wait_for_hits(self, n: int, timeout: float, path: str | None = None) -> bool:
        """Block until at least `n` requests for the key set arrived (bounded)."""
        return super().wait_for_hits(n, timeout, path or self.path)

    # -- answering ----------------------------------------------------------------------------------
    def _serve(self, req: Request) -> Response:
        if req.path != self.path:
            return Response(404, b'{"error":"not found"}')  # not a JWKS hit: neither counted nor recorded
        scripted = self._behave(self._record(req), req)
        if scripted is not None:
            return scripted
        with self._cond:
            body, max_age = json.dumps(jwks_document(self._keys)).encode(), self.max_age
        return Response(200, body, headers={"Cache-Control": f"max-age={max_age}"} if max_age is not None else {})

    def _special(self, behaviour: Behaviour, req: Request) -> Response | None:
        if behaviour == "empty":
            return Response(200, b'{"keys":[]}')
        if isinstance(behaviour, tuple) and behaviour[0] == "huge":
            return self._huge(int(behaviour[1]))
        return None

    def _huge(self, size: int) -> Response:
        """A valid JWKS document of `size` bytes, written in 1 MiB pieces (never held in memory whole)."""
        keys_json = json.dumps(self.document()).encode()
        head, tail = keys_json[:-1] + b',"padding":"', b'"}'
        padding = max(0, size - len(head) - len(tail))

        def pieces():
            yield head
            left = padding
            while left > 0:
                n = min(left, len(PIECE))
                yield PIECE[:n]
                left -= n
            yield tail

        return Response(200, pieces=pieces(), length=len(head) + padding + len(tail))


# ---------------------------------------------------------------------------------------------------
# Echo upstream
# ---------------------------------------------------------------------------------------------------


class EchoServer(ScriptedServer):
    """Answers every request 200 with JSON {method, path, headers (lower-cased), body}; records them.

    `hold(test_id)` makes requests carrying that `x-test-id` wait, after being recorded, until
    `release(test_id)` (or MAX_HANG_SECONDS): a request kept in flight without sleeping.
    `answer(test_id, content_type, pieces)` scripts the answer to requests carrying that `x-test-id`
    instead: status 200, chunked, each piece a chunk of its own (an upstream that answers whatever it
    likes, e.g. a `tools/list` result to another request); a `None` piece waits, if `hold(f"{test_id}/gate")`
    was called, until `release(f"{test_id}/gate")`.
    """

    name = "echo"
    methods = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")

    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self._held: dict[str, threading.Event] = {}
        self._answers: dict[str, tuple[str, list[bytes | None]]] = {}

    def answer(self, test_id: str, content_type: str, pieces: list[bytes | None]) -> None:
        with self._cond:
            self._answers[test_id] = (content_type, pieces)

    def hold(self, test_id: str) -> None:
        with self._cond:
            self._held[test_id] = threading.Event()

    def release(self, test_id: str | None = None) -> None:
        """Let the requests held under `test_id` go (no `test_id`: every scripted "hang", as for any server)."""
        if test_id is None:
            super().release()
            return
        with self._cond:
            gate = self._held.pop(test_id, None)
        if gate is not None:
            gate.set()

    def wait_for(self, test_id: str, timeout: float) -> bool:
        """Block until a request with this `x-test-id` has arrived (bounded)."""
        return self._wait_until(lambda: any(r["headers"].get("x-test-id") == test_id for r in self._requests), timeout)

    def seen(self, test_id: str) -> list[dict]:
        """Requests that carried `x-test-id: <test_id>` (how tests find their own requests)."""
        return [r for r in self.requests if r["headers"].get("x-test-id") == test_id]

    def clear(self) -> None:
        self.reset_counters()

    # -- answering ----------------------------------------------------------------------------------
    def _serve(self, req: Request) -> Response:
        # `requests` holds what the echo answers: the path as sent (with the query), the body as text.
        echoed = {"method": req.method, "path": req.target, "headers": req.headers,
                  "body": req.body.decode("utf-8", errors="replace")}
        self._record(req, echoed)
        test_id = req.headers.get("x-test-id")
        self._hold(test_id)
        with self._cond:
            scripted = self._answers.get(test_id) if test_id else None
        if scripted is None:
            return Response(200, echoed)
        content_type, pieces = scripted

        def chunks():
            for piece in pieces:
                if piece is None:  # wait for `release(f"{test_id}/gate")` before the next piece
                    self._hold(f"{test_id}/gate")
                    continue
                yield piece

        return Response(200, content_type=content_type, pieces=chunks())

    def _hold(self, test_id: str | None) -> None:
        with self._cond:
            gate = self._held.get(test_id) if test_id else None
        if gate is not None:
            gate.wait(MAX_HANG_SECONDS)

    def _on_stop(self) -> None:
        with self._cond:
            gates, self._held = list(self._held.values()), {}
        for gate in gates:
            gate.set()


def upstream_bearer(seen: dict) -> str:
    """The bearer token in a request the echo upstream recorded (`EchoServer.seen`)."""
    value = seen["headers"]["authorization"]
    assert value.startswith("Bearer ")
    return value[len("Bearer "):]
