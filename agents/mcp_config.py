"""`McpServerConfig`: one MCP server an agent can use, the one class for it.

It is the `[mcpServers.<name>]` entry of ember.toml (the shape other MCP clients use; pydantic validates it
there, unknown keys refused) and what `McpHub` connects to. Cheap to import: settings load it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ember.model.errors import InvalidValueError


@dataclass(slots=True)
class McpServerConfig:
    """Either a stdio command line or a streamable-HTTP URL. `name` is the key of its ember.toml entry."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    name: str = ""
    command: str | None = None  # the program that runs a stdio server
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    cwd: str | None = None  # its working directory
    url: str | None = None  # a streamable-HTTP server's URL (e.g. http://127.0.0.1:8001/mcp)
    headers: dict[str, str] = field(default_factory=dict)  # extra HTTP headers
    bearer_token: str | None = None  # sent as Authorization: Bearer <token>
    timeout_s: float = 30.0  # per tool call
    startup_timeout_s: float = 30.0
    type: Literal["stdio", "http", "streamable-http"] | None = None  # default: from command/url

    def __post_init__(self) -> None:
        who = f"MCP server {self.name!r}: " if self.name else ""
        if (self.command is None) == (self.url is None):
            raise InvalidValueError(f"{who}give exactly one of command (stdio) or url (streamable HTTP)")
        wants_url = self.type in ("http", "streamable-http")
        if (self.type == "stdio" and self.command is None) or (wants_url and self.url is None):
            raise InvalidValueError(f"{who}type={self.type!r} does not match the command/url given")
        if self.timeout_s <= 0 or self.startup_timeout_s <= 0:
            raise InvalidValueError(f"{who}timeouts must be positive")
