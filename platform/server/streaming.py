"""A synchronous iterator (a backend stream) consumed from async code without blocking the event loop.

A worker thread pulls items and hands them to the loop. When the async consumer stops (the client
disconnected, so Starlette cancelled the response), the worker stops at the next item and closes the
iterator, which cancels the engine request and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]], on_cancel: Callable[[], None] | None = None
                            ) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server shutting down)
            stop.set()

    def work() -> None:
        it: Iterator[T] | None = None
        try:
            it = make()
            for item in it:
                if stop.is_set():
                    break
                put("item", item)
            else:
                put("done", None)
        except BaseException as e:
            put("error", e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's finally runs here: the backend aborts the request

    threading.Thread(target=work, name="ember-stream", daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                finished = True
                raise value
            else:
                finished = True
                return
    finally:
        stop.set()
        if not finished and on_cancel is not None:
            on_cancel()
