"""MCP servers as tools, on the official `mcp` SDK (2.x `mcp.Client`), for a synchronous agent loop.

`McpHub` owns one asyncio loop on a daemon thread. Each server gets one `mcp.Client` session that lives in
its own task from `start()` to `close()`, so a stateful server keeps its state for the whole agent run, and
leaving the session (on `close()`, on error, at interpreter exit) terminates a stdio server's process.
Tool calls are sent from the agent's thread into that loop with a timeout; the result (text, structured
content, or `isError`) becomes an observation string.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import tempfile
import threading
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ember.agents.mcp_config import McpServerConfig
from ember.agents.tools import Tool, ToolError
from ember.model.errors import EmberError

T = TypeVar("T")
__all__ = ["McpError", "McpHub", "McpServerConfig", "observation"]


class McpError(EmberError):
    """An MCP server could not be started, reached or used."""

    http_status = 502


def observation(result: Any) -> tuple[str, bool]:
    """(text, is_error) of a `CallToolResult`: text blocks joined, else the structured content as JSON."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            res = block.resource
            parts.append(getattr(res, "text", None) or f"[binary resource {res.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} content]")
    text = "\n".join(parts)
    structured = getattr(result, "structured_content", None)
    if structured is not None and not text:
        text = json.dumps(structured, ensure_ascii=False)
    return text, bool(result.is_error)


class _Session:
    """One server's `mcp.Client`, entered and exited inside its own task on the hub's loop."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.client: Any = None
        self.tools: list[Any] = []
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        # a stdio server's stderr (its logs) goes to a temporary file, quoted when it fails to start; the
        # hub closes it
        self.errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            self.errlog.seek(0)
            return self.errlog.read()[-n:].strip()
        except (OSError, ValueError):
            return ""

    async def run(self) -> None:
        import mcp
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        c = self.config
        try:
            async with contextlib.AsyncExitStack() as stack:
                if c.command is not None:
                    params = mcp.StdioServerParameters(command=c.command, args=c.args, env=c.env or None, cwd=c.cwd)
                    client = mcp.Client(stdio_client(params, errlog=self.errlog), mode="legacy",
                                        read_timeout_seconds=c.startup_timeout_s)
                else:
                    assert c.url is not None
                    headers = dict(c.headers)
                    if c.bearer_token:
                        headers["Authorization"] = f"Bearer {c.bearer_token}"
                    http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
                    client = mcp.Client(streamable_http_client(c.url, http_client=http),
                                        read_timeout_seconds=c.startup_timeout_s)
                self.client = await stack.enter_async_context(client)
                listing = await client.list_tools()
                self.tools = list(listing.tools)
                self.ready.set()
                await self.stop.wait()
        except Exception as e:  # reported to whoever waits on `ready` or calls a tool
            self.error = e
        finally:
            self.client = None
            self.ready.set()


class McpHub:
    """Connects to several MCP servers for one agent run and exposes their tools as `Tool`s."""

    def __init__(self, configs: list[McpServerConfig]) -> None:
        self.configs = configs
        self.sessions: dict[str, _Session] = {}
        self._tasks: dict[str, Future[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ember-mcp", daemon=True)
        self._thread.start()
        self._closed = False
        _live_hubs.add(self)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise

    def start(self) -> McpHub:
        """Start every server and list its tools; a server that fails to start raises `McpError`."""
        for c in self.configs:
            session = _Session(c)
            self.sessions[c.name] = session
            self._tasks[c.name] = asyncio.run_coroutine_threadsafe(session.run(), self._loop)
            try:
                self._run(session.ready.wait(), c.startup_timeout_s)
            except FutureTimeout:
                self.close()
                raise McpError(f"MCP server {c.name!r} did not start within {c.startup_timeout_s:g}s",
                               hint="Check its command line or URL in ember.toml [mcpServers].") from None
            if session.error is not None:
                log = session.stderr_tail()
                self.close()
                raise McpError(f"MCP server {c.name!r} failed to start: {_describe(session.error)}"
                               + (f"\nits stderr:\n{log}" if log else ""),
                               hint="Check its command line or URL in ember.toml [mcpServers].")
        return self

    def tools(self, prefix: bool = False) -> list[Tool]:
        """Every server's tools (`server.tool` names when `prefix`). Read-only tools per the server's
        annotations are plain tools; the rest are marked mutating and need an allow-list entry."""
        out = []
        for name, s in self.sessions.items():
            for t in s.tools:
                ann = t.annotations
                read_only = bool(ann is not None and ann.read_only_hint)
                schema = t.input_schema if isinstance(t.input_schema, dict) else {"type": "object"}
                out.append(Tool(f"{name}.{t.name}" if prefix else t.name, t.description or t.name,
                                dict(schema), self._caller(name, t.name), mutating=not read_only,
                                output_schema=t.output_schema, origin=name))
        return out

    def _caller(self, server: str, tool: str) -> Any:
        def call(**arguments: Any) -> str:
            return self.call_tool(server, tool, arguments)
        return call

    def call_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> str:
        """The observation text of one call. Errors of the call (a tool error, a timeout, a dead server)
        raise `ToolError`, which the agent shows to the model."""
        s = self.sessions[server]
        timeout = s.config.timeout_s
        if s.client is None:
            raise ToolError(f"MCP server {server!r} is not running ({_describe(s.error) if s.error else 'closed'})")
        try:
            result = self._run(s.client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout + 5)
        except (FutureTimeout, TimeoutError):
            raise ToolError(f"{server}.{tool} did not answer within {timeout:g}s") from None
        except Exception as e:
            from mcp import MCPError
            from mcp_types import REQUEST_TIMEOUT

            if isinstance(e, MCPError) and e.code == REQUEST_TIMEOUT:
                raise ToolError(f"{server}.{tool} did not answer within {timeout:g}s") from None
            raise ToolError(f"{server}.{tool} failed: {_describe(e)}") from None
        text, is_error = observation(result)
        if is_error:
            raise ToolError(f"{tool} reported an error: {text}")
        return text

    def close(self) -> None:
        """End every session (stdio servers' processes exit) and stop the loop."""
        if self._closed:
            return
        self._closed = True
        for s in self.sessions.values():
            self._loop.call_soon_threadsafe(s.stop.set)
        for task in self._tasks.values():
            with contextlib.suppress(Exception):
                task.result(10)
        for s in self.sessions.values():
            s.errlog.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()
        _live_hubs.discard(self)

    def __enter__(self) -> McpHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}" if not text.startswith(type(e).__name__) else text


_live_hubs: weakref.WeakSet[McpHub] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # no server process outlives the agent, even on an unhandled exception
    for hub in list(_live_hubs):
        with contextlib.suppress(Exception):
            hub.close()
