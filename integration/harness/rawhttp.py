"""HTTP/1.1 requests written byte for byte, for what ordinary clients will not send: repeated headers,
chunked bodies cut into frames of a chosen size, bodies on GET."""

from __future__ import annotations

import socket
from dataclasses import dataclass

TIMEOUT = 20.0


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes


def chunked(body: bytes, frame: int) -> list[bytes]:
    """The chunked encoding of `body` in frames of `frame` bytes, as separate writes, then the last chunk."""
    return [f"{len(body[i:i + frame]):x}\r\n".encode() + body[i:i + frame] + b"\r\n"
            for i in range(0, len(body), frame)] + [b"0\r\n\r\n"]


def send(port: int, method: str, path: str, headers: list[tuple[str, str]], pieces: list[bytes] = (),
         host: str = "127.0.0.1") -> RawResponse:
    """Sends the request head, then each piece of body as its own write (TCP_NODELAY), and reads the
    response until the server closes the connection (`Connection: close` is added). A single piece goes
    in the same write as the head: Envoy may answer from the headers and close at once, and a body still
    in flight would then make the kernel reset the connection, which can discard the answer unread."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"] + [f"{n}: {v}" for n, v in headers]
    head.append("Connection: close")
    head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode()
    writes = [head_bytes + pieces[0]] if len(pieces) == 1 else [head_bytes, *pieces]
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for write in writes:
                s.sendall(write)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole request was sent: read the answer
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            if b"\r\n\r\n" not in data:
                raise  # the reset came before any answer
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        parsed[key] = f"{parsed[key]}, {value.strip()}" if key in parsed else value.strip()
    if parsed.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(int(lines[0].split(" ", 2)[1]), parsed, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out
