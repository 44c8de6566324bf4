#!/usr/bin/env python3
"""A tiny stdio MCP server for the tests: the kind of server an operator names in a mode.

Its one tool, ``shout(text)``, answers ``<TEXT> FROM ECHO SERVER`` (with
``ECHO_SUFFIX`` from its environment, if set), so a test can tell that the answer
came from this process, started by Claude Code with the environment the mode gave it.
"""
from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("echo", log_level="WARNING")


@server.tool(structured_output=False)  # plain text content, as most servers answer
def shout(text: str) -> str:
    """Say `text` in capitals."""
    return f"{text.upper()} FROM ECHO SERVER{os.environ.get('ECHO_SUFFIX', '')}"


if __name__ == "__main__":
    server.run("stdio")
