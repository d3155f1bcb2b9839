"""A small MCP server (official SDK) that misbehaves on request: crashes mid-call, hangs, keeps state."""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("misbehaving", log_level="ERROR")
ro = ToolAnnotations(read_only_hint=True)
count = 0


@server.tool(annotations=ro)
def crash(reason: str) -> str:
    """Exit the whole server process in the middle of this call."""
    print(f"crashing: {reason}", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool(annotations=ro)
def hang(seconds: float = 3600) -> str:
    """Never answer (sleeps)."""
    time.sleep(seconds)
    return "woke up"


@server.tool(annotations=ro)
def counter() -> str:
    """Count calls in this session: state lives as long as the server process."""
    global count
    count += 1
    return str(count)


@server.tool(annotations=ro)
def pid() -> dict[str, int]:
    """The server's process id (structured output)."""
    return {"pid": os.getpid()}


@server.tool(annotations=ro)
def fail(message: str) -> str:
    """Fail with a tool error."""
    raise ToolError(message)


if __name__ == "__main__":
    if sys.argv[1:] == ["--silent"]:  # a process that never speaks MCP: reads stdin, answers nothing
        sys.stdin.read()
    else:
        server.run("stdio")
