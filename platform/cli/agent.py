"""`ember agent "task"`: a ReAct agent with the built-in tools, a collection and MCP servers, step by step.

`ember mcp serve`: Ember's collections as an MCP server (stdio, or streamable HTTP with API keys).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ember.model.errors import ConfigError
from ember.platform.cli.common import console, settings_from
from ember.platform.settings import Settings

mcp_app = typer.Typer(help="Ember and the Model Context Protocol.", no_args_is_help=True)


def mcp_configs(settings: Settings, names: list[str]) -> list[Any]:
    """The `[mcpServers]` entries named (all of them for ["all"])."""
    from ember.agents.mcp_client import McpServerConfig

    servers = settings.mcpServers
    if names == ["all"]:
        names = list(servers)
    unknown = [n for n in names if n not in servers]
    if unknown:
        known = ", ".join(servers) or "none"
        raise ConfigError(f"no MCP server named {', '.join(map(repr, unknown))} in [mcpServers] (configured: {known})",
                          hint='Add e.g. [mcpServers.time] command = "mcp-server-time" to ember.toml.')
    return [McpServerConfig(n, command=servers[n].command, args=servers[n].args, env=servers[n].env,
                            cwd=servers[n].cwd, url=servers[n].url, headers=servers[n].headers,
                            bearer_token=servers[n].bearer_token, timeout_s=servers[n].timeout_s) for n in names]


def _show(step: Any) -> None:
    from ember.agents.trace import render_step

    style = "red" if step.error else ("green" if step.kind == "final" else "")
    text = escape(render_step(step))
    console.print(f"[{style}]{text}[/]" if style else text, soft_wrap=True)


def agent(ctx: typer.Context,
          task: Annotated[str, typer.Argument(help="what the agent should do or find out")],
          collection: Annotated[str | None, typer.Option("--collection", "-c",
                                                         help="give the agent search_collection/read_document "
                                                              "over this collection")] = None,
          mcp: Annotated[list[str] | None, typer.Option(
              "--mcp", help="a server from mcpServers in ember.toml (repeatable; 'all' for every one)")] = None,
          max_steps: Annotated[int | None,
                               typer.Option(help="model replies at most (default agents.max_steps)")] = None,
          max_seconds: Annotated[float | None, typer.Option(help="wall-clock cap (default agents.max_seconds)")] = None,
          trace: Annotated[Path | None, typer.Option(help="save the full trace as JSON here")] = None,
          constrained: Annotated[bool | None, typer.Option(
              "--constrained/--unconstrained", help="grammar-constrained tool calls (default: on with our engine)")
          ] = None,
          model: Annotated[str | None, typer.Option("--model", "-m", help="model name or path")] = None,
          no_builtins: Annotated[bool, typer.Option("--no-builtins",
                                                    help="leave out the calculator and current_time")] = False,
          ) -> None:
    """Run a ReAct agent on TASK: it thinks, calls tools, reads the results and answers. Each step is shown
    as it happens; the exit code is 0 when the agent answered and 1 otherwise (step cap, time cap, loop)."""
    from ember.agents.builtins import basic_tools, collection_tools
    from ember.agents.mcp_client import McpHub
    from ember.agents.react import Agent, AgentConfig
    from ember.agents.tools import Toolbox
    from ember.platform.backends import make_backend

    s = settings_from(ctx)
    a = s.agents
    # a terminated agent still runs its cleanup below, which stops its MCP server processes
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = AgentConfig(max_steps=max_steps or a.max_steps, max_seconds=max_seconds or a.max_seconds,
                         max_tokens=a.max_tokens, constrained=a.constrained if constrained is None else constrained)
    hub = McpHub(mcp_configs(s, mcp or []))
    col = backend = None
    try:
        tools = [] if no_builtins else basic_tools()
        if collection:
            from ember.platform.cli.collections import embedder_from
            from ember.retrieval.collection import Collection
            from ember.retrieval.retriever import Retriever

            col = Collection.open(s.data_dir, collection)
            embedder = embedder_from(s, col.row.embedder_spec) if s.retrieval.mode != "bm25" else None
            tools += collection_tools(Retriever(col, embedder, mode=s.retrieval.mode, k=s.retrieval.k))
        if hub.configs:
            with console.status(f"Starting MCP servers: {', '.join(c.name for c in hub.configs)}…"):
                hub.start()
            tools += hub.tools()
        box = Toolbox(tools, allow=a.allow_tools)
        if box.refused:
            console.print(f"[yellow]Not offered (they can change things; add them to agents.allow_tools): "
                          f"{', '.join(box.refused)}[/]")
        with console.status(f"Starting the {s.backend} backend…", spinner="dots"):
            backend = make_backend(s, model)
        runner = Agent(backend, box, config)
        console.print(f"[bold]Agent[/] · {backend.name} backend · {runner.format} format"
                      f"{' · constrained' if runner.constrained else ''} · tools: {', '.join(t.name for t in box)}")
        result = runner.run(task, on_step=_show)
    finally:
        hub.close()
        if col is not None:
            col.close()
        if backend is not None:
            backend.close()
    if trace is not None:
        result.save(trace)
    colour = "green" if result.status == "answered" else "red"
    console.print(f"[bold {colour}]{result.status}[/]" + (f" ({escape(result.detail)})" if result.detail else "")
                  + f" · {len(result.steps)} steps · {result.total_s:.1f}s · "
                    f"{result.prompt_tokens}+{result.completion_tokens} tokens"
                  + (f" · trace: {trace}" if trace else ""))
    if result.answer is not None:
        console.print(f"[bold]Answer:[/] {escape(result.answer)}", soft_wrap=True)
    if result.status != "answered":
        raise typer.Exit(1)


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
    the loopback address."""
    from ember.agents.mcp_server import Library, build_server, serve_http
    from ember.platform.backends import make_backend
    from ember.platform.cli.common import device_for

    s = settings_from(ctx)
    if transport not in ("stdio", "http"):
        raise ConfigError(f"--transport must be stdio or http, got {transport!r}")

    def embedder(spec: str) -> Any:
        from ember.retrieval.embedders import load_embedder

        r = s.retrieval
        return load_embedder(spec, device=device_for(s), batch_size=r.embed_batch_size, api_key=r.embedder_api_key)

    library = Library(s.data_dir, embedder, backend=lambda: make_backend(s, model), mode=s.retrieval.mode,
                      k=s.retrieval.k)
    server = build_server(library)
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            from ember.platform.server.db import Database
            from ember.platform.server.keys import AuthError, KeyStore

            keys = KeyStore(Database(s.db_path))

            class Store:  # the server's hashed keys (`ember keys create`), checked on every request
                def configured(self) -> bool:
                    return keys.configured()

                def valid(self, key: str) -> bool:
                    try:
                        keys.check(key)
                        return True
                    except AuthError:
                        return False

            h, p = host or s.mcp.host, port or s.mcp.port
            secured = bool(s.mcp.api_keys) or keys.configured()
            if not secured and h not in ("127.0.0.1", "localhost", "::1"):
                raise ConfigError(f"refusing to serve without API keys on {h}",
                                  hint="Create a key with `ember keys create NAME` or set mcp.api_keys.")
            auth = "API keys required" if secured else "no authentication (create one with `ember keys create`)"
            console.print(f"Ember MCP server on http://{h}:{p}/mcp · {auth}", soft_wrap=True)
            serve_http(server, h, p, s.mcp.api_keys, Store())
    finally:
        library.close()
