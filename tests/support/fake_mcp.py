"""A minimal MCP server on stdio for tests: one tool, ``lookup``, that answers what it was asked.

Agents start it as configured (Codex's ``[mcp_servers.NAME]``, Claude Code's ``--mcp-config``):
``python -m tests.support.fake_mcp``. It speaks JSON-RPC 2.0, one message per line, and answers
``initialize``, ``tools/list`` and ``tools/call``; ``lookup`` with ``{"query": "fail"}`` returns an
error result (``isError``), and with ``{"query": "ask"}`` first asks its client to fill in a form
(``elicitation/create``: a shade to choose and a number of coats) and answers with what came back;
with ``{"query": "link"}`` it asks its client to open a link instead (URL mode). Two forms tether
cannot put as questions: ``{"query": "nested"}`` asks one with a field that is itself an object
(outside MCP's flat forms), ``{"query": "walls"}`` one with a field of several choices (an array,
which MCP allows since 2025-11-25).
Every call is appended to ``$FAKE_MCP_LOG`` when set, so a test can see that the call really reached
the server.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TOOL = {
    "name": "lookup",
    "description": "Look up notes about a topic.",
    "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


FORM = {
    "type": "object",
    "properties": {
        "shade": {"type": "string", "title": "Shade", "description": "Which blue?", "enum": ["sky", "navy"]},
        "coats": {"type": "integer", "title": "Coats", "description": "How many coats?"},
    },
    "required": ["shade", "coats"],
}


# Forms tether's question cards do not put (agents/forms.py): a field that is an object (MCP's
# forms are flat, so a client may refuse it itself), and a field of several choices (an array).
NESTED = {
    "type": "object",
    "properties": {
        "shade": {"type": "string", "title": "Shade", "enum": ["sky", "navy"]},
        "wall": {"type": "object", "title": "Wall",
                 "properties": {"width": {"type": "number"}, "height": {"type": "number"}}},
    },
    "required": ["shade", "wall"],
}
WALLS = {
    "type": "object",
    "properties": {
        "shade": {"type": "string", "title": "Shade", "enum": ["sky", "navy"]},
        "walls": {"type": "array", "title": "Walls", "items": {"type": "string", "enum": ["north", "south"]}},
    },
    "required": ["shade", "walls"],
}
FORMS = {"ask": FORM, "nested": NESTED, "walls": WALLS}


# A link to open instead of a form (MCP's URL-mode elicitation): a sign-in page, say.
LINK = {"mode": "url", "message": "Sign in to the paint shop", "url": "https://paint.example/login",
        "elicitationId": "link-1"}


def ask_client(params: dict[str, Any]) -> dict[str, Any]:
    """Send an elicitation to the client and wait for its answer (nothing else comes meanwhile:
    the client waits for this tool call)."""
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": "form-1", "method": "elicitation/create",
                                 "params": params}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("id") == "form-1" and "method" not in message:
            result: dict[str, Any] = message.get("result") or {"action": "error", "error": message.get("error")}
            return result
    return {"action": "cancel"}


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification (initialized, cancelled)
    if method == "initialize":
        result: dict[str, Any] = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                                  "capabilities": {"tools": {}}, "serverInfo": {"name": "fake-mcp", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        query = str((params.get("arguments") or {}).get("query", ""))
        if os.environ.get("FAKE_MCP_LOG"):
            with open(os.environ["FAKE_MCP_LOG"], "a") as f:
                f.write(json.dumps(params) + "\n")
        if query in FORMS or query == "link":
            filled = ask_client(LINK if query == "link" else {
                "message": "The painter needs to know", "requestedSchema": FORMS[query]})
            result = {"content": [{"type": "text", "text": f"the form came back: {json.dumps(filled)}"}],
                      "isError": False}
        elif query == "fail":
            result = {"content": [{"type": "text", "text": "no notes: the lookup failed"}], "isError": True}
        else:
            result = {"content": [{"type": "text", "text": f"3 notes about {query}"}], "isError": False}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": f"no method {method}"}}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
