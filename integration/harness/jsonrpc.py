"""JSON-RPC messages out of MCP Streamable HTTP traffic: an answer, whichever way the server sent it, or
the requests the sample MCP server recorded (its `GET /_received`)."""

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


def received_messages(received: list[dict]) -> list[dict]:
    """Every JSON-RPC message in the MCP server's `GET /_received` list (batches flattened; unparseable
    bodies skipped)."""
    out: list[dict] = []
    for r in received:
        try:
            doc = json.loads(r["body"]) if r["method"] == "POST" else None
        except ValueError:
            continue
        out.extend(m for m in (doc if isinstance(doc, list) else [doc]) if isinstance(m, dict))
    return out
