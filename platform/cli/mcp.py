"""`ember mcp serve`: Ember's collections as an MCP server, over stdio or streamable HTTP.

The served objects come from the command's `Wiring`; over HTTP the one bearer-key check and loopback rule
of the API server (platform/auth.py) guard `/mcp`, with the keys of `ember keys create` and `mcp.api_keys`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ember.model.errors import ConfigError
from ember.platform.cli.common import console, settings_from, wiring_from

if TYPE_CHECKING:
    from ember.platform.auth import Gate

mcp_app = typer.Typer(help="Ember and the Model Context Protocol.", no_args_is_help=True)


def unauthorized(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "unauthorized"}}


def http_app(server: Any, gate: Gate, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app at /mcp behind `gate`."""
    from ember.platform.auth import BearerAuth

    return BearerAuth(server.streamable_http_app(host=host), gate, unauthorized)


@mcp_app.command()
def serve(ctx: typer.Context,
          transport: Annotated[str, typer.Option(help="stdio (for a client that starts Ember) or http "
                                                      "(streamable HTTP at /mcp)")] = "stdio",
          host: Annotated[str | None, typer.Option(help="HTTP bind address (default mcp.host)")] = None,
          port: Annotated[int | None, typer.Option(help="HTTP port (default mcp.port)")] = None,
          model: Annotated[str | None, typer.Option("--model", "-m", help="model for the `ask` tool")] = None,
          ) -> None:
    """Serve Ember's collections over MCP: tools list_collections, search_documents, ask, and every document
    as a resource (ember://COLLECTION/DOCUMENT_ID). Over HTTP, once API keys exist (`ember keys create`, or
    mcp.api_keys in ember.toml) every request needs one as a bearer token; without keys it serves only on
    the loopback address. Once users exist (`ember users create`), each call sees only the collections its
    key's user may read."""
    from ember.agents.mcp_server import Library, build_server

    s = settings_from(ctx)
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, got {transport!r}")
    wiring = wiring_from(ctx, model=model)
    try:
        if transport == "stdio":  # the local user, who can read the data directory anyway
            build_server(Library(wiring, s.data_dir, database=s.database_url)).run("stdio")
            return
        import uvicorn

        from ember.platform.auth import Gate, check_bind
        from ember.platform.server.db import Database
        from ember.platform.server.keys import KeyStore
        from ember.platform.server.users import McpPolicy, UserStore

        db = Database(s.database)
        try:
            policy = McpPolicy(UserStore(db), KeyStore(db))
            server = build_server(Library(wiring, s.data_dir, policy=policy, database=s.database_url))
            gate = Gate(KeyStore(db), s.mcp.api_keys)
            h, p = host or s.mcp.host, port or s.mcp.port
            secured = gate.required()
            check_bind(h, secured)
            auth = "API keys required" if secured else "no authentication (create one with `ember keys create`)"
            console.print(f"Ember MCP server on http://{h}:{p}/mcp · {auth}", soft_wrap=True)
            uvicorn.run(http_app(server, gate, h), host=h, port=p, log_level="warning")
        finally:
            db.close()
    finally:
        wiring.close()
