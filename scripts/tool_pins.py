#!/usr/bin/env python3
"""Prints the tool pins of a running MCP server, ready for the filter's `mcp.tool_pins.pins`.

    scripts/tool_pins.py http://127.0.0.1:8000/mcp
    scripts/tool_pins.py https://mcp.example.com/mcp -H "Authorization: Bearer $TOKEN"

It opens a session (`initialize`, MCP 2025-06-18), reads every page of `tools/list`, and prints one JSON
object: tool name -> "sha256:<hex>", the SHA-256 of the tool's definition (its `name`, `title`,
`description`, `inputSchema`, `outputSchema` and `annotations`) in the JSON Canonicalization Scheme
(RFC 8785), exactly as the filter computes it (src/mcp/pins.rs). Ask the server directly (or through the
filter with a token allowed to list every tool): a list the filter trimmed lacks the hidden tools.
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import urllib.request

PINNED_MEMBERS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def number(x: float | int) -> str:
    """ECMAScript's Number::toString (RFC 8785 section 3.2.2.3) of the double nearest to x."""
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        raise ValueError("JSON has no NaN or infinity")
    if x == 0:
        return "0"
    # repr gives the shortest digits that read back to the same double: '1.5', '1e+100', '1.5e-07'.
    mantissa, _, exponent = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    significant = all_digits.lstrip("0")
    n = len(int_part) + int(exponent or 0) - (len(all_digits) - len(significant))  # digits before the point
    digits = significant.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("-" if e < 0 else "+") + str(abs(e))
    return ("-" if x < 0 else "") + text


def string(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def canonical(value) -> str:
    """RFC 8785 (JCS): keys sorted by UTF-16 code units, no whitespace."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(string(k) + ":" + canonical(value[k]) for k in keys) + "}"
    raise TypeError(f"not JSON: {value!r}")


def pin(tool: dict) -> str:
    pinned = {m: tool[m] for m in PINNED_MEMBERS if m in tool}
    return "sha256:" + hashlib.sha256(canonical(pinned).encode()).hexdigest()


def post(url: str, headers: dict, body: dict) -> tuple[dict, list[dict]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream", **headers})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
        answer_headers = {k.lower(): v for k, v in response.headers.items()}
    if answer_headers.get("content-type", "").startswith("text/event-stream"):
        messages = []
        for event in text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if data:
                messages.append(json.loads(data))
        return answer_headers, messages
    return answer_headers, ([json.loads(text)] if text.strip() else [])


def tools(url: str, headers: dict) -> list[dict]:
    init = {"jsonrpc": "2.0", "id": "init", "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "tool_pins", "version": "1"}}}
    answer_headers, _ = post(url, headers, init)
    session = dict(headers, **{"mcp-protocol-version": "2025-06-18"})
    if "mcp-session-id" in answer_headers:
        session["mcp-session-id"] = answer_headers["mcp-session-id"]
    post(url, session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    found: list[dict] = []
    cursor = None
    for page in range(1000):  # bounded: a server that pages forever stops here
        params = {"cursor": cursor} if cursor else {}
        _, messages = post(url, session, {"jsonrpc": "2.0", "id": f"list-{page}", "method": "tools/list",
                                          "params": params})
        result = next((m["result"] for m in messages if m.get("id") == f"list-{page}" and "result" in m), None)
        if result is None:
            raise SystemExit(f"tools/list failed: {messages}")
        found.extend(result.get("tools", []))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the MCP endpoint, e.g. http://127.0.0.1:8000/mcp")
    parser.add_argument("-H", "--header", action="append", default=[], help="a request header, 'Name: value'")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    pins = {t["name"]: pin(t) for t in tools(args.url, headers) if isinstance(t.get("name"), str)}
    json.dump(pins, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
