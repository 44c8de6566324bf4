#!/usr/bin/env python3
"""A tiny stdio MCP server for the tests: the kind of server an operator names in a mode.

Its one tool, ``shout(text)``, answers ``<TEXT> FROM ECHO SERVER`` followed by
``ECHO_SUFFIX`` from its environment, so a test can tell the answer came from this
process, started by Claude Code with the environment the mode gave it.

It speaks MCP's JSON-RPC over stdio with the standard library only, on purpose:
Claude Code gives a server a limited time to come up before a task's first turn,
and importing the `mcp` package costs over a second of CPU, which on a loaded test
machine was sometimes more than that (`scout mcp` itself uses the real package).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

TOOL = {
    "name": "shout",
    "description": "Say `text` in capitals.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "echo", "version": "1"}}
    if method == "tools/list":
        return {"tools": [TOOL]}
    if method == "tools/call":
        if params.get("name") != "shout":
            return {"content": [{"type": "text", "text": f"no tool {params.get('name')}"}], "isError": True}
        text = str((params.get("arguments") or {}).get("text", ""))
        return {"content": [{"type": "text", "text": f"{text.upper()} FROM ECHO SERVER"
                                                     f"{os.environ.get('ECHO_SUFFIX', '')}"}]}
    if method == "ping":
        return {}
    raise LookupError(method)


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "id" not in message:
            continue  # a notification (notifications/initialized, cancellations): nothing to say
        try:
            reply = {"jsonrpc": "2.0", "id": message["id"],
                     "result": answer(message.get("method", ""), message.get("params") or {})}
        except LookupError:
            reply = {"jsonrpc": "2.0", "id": message["id"],
                     "error": {"code": -32601, "message": f"method not found: {message.get('method')}"}}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
