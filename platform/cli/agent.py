"""`ember agent "task"`: a ReAct agent with the built-in tools, a collection and MCP servers, step by step."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ember.platform.cli.common import console, start_backend, wiring_from


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
    from ember.agents.react import Agent, AgentConfig
    from ember.agents.tools import Toolbox

    w = wiring_from(ctx, model=model)
    a = w.settings.agents
    # a terminated agent still runs its cleanup below, which stops its MCP server processes
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config = AgentConfig(max_steps=max_steps or a.max_steps, max_seconds=max_seconds or a.max_seconds,
                         max_tokens=a.max_tokens, constrained=a.constrained if constrained is None else constrained)
    hub = w.mcp_hub(mcp or [])
    try:
        tools = [] if no_builtins else basic_tools()
        if collection:
            tools += collection_tools(w.retriever(collection, dense=w.settings.retrieval.mode != "bm25"))
        if hub.configs:
            with console.status(f"Starting MCP servers: {', '.join(c.name for c in hub.configs)}…"):
                hub.start()
            tools += hub.tools()
        box = Toolbox(tools, allow=a.allow_tools)
        if box.refused:
            console.print(f"[yellow]Not offered (they can change things; add them to agents.allow_tools): "
                          f"{', '.join(box.refused)}[/]")
        backend = start_backend(w)
        runner = Agent(backend, box, config)
        console.print(f"[bold]Agent[/] · {backend.name} backend · {runner.format} format"
                      f"{' · constrained' if runner.constrained else ''} · tools: {', '.join(t.name for t in box)}")
        result = runner.run(task, on_step=_show)
    finally:
        hub.close()
        w.close()
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
