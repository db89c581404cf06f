"""JSON-RPC messages out of an MCP Streamable HTTP answer, whichever way the server sent them."""

from __future__ import annotations

import json

import httpx


def messages(r: httpx.Response) -> list[dict]:
    """The messages of one answer: each `data:` event of an SSE body, or the JSON body (a batch flattened)."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        out = []
        for event in r.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if data:
                out.append(json.loads(data))
        return out
    doc = r.json()
    return doc if isinstance(doc, list) else [doc]
