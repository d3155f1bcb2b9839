"""A synchronous iterator (a backend stream) consumed from async code without blocking the event loop.

`iterate_in_thread`: a worker thread pulls items and hands them to the loop. When the async consumer stops (the client
disconnected, so Starlette cancelled the response), the worker stops at the next item and closes the
iterator, which cancels the engine request and frees its KV blocks. `run_until_disconnect` does the same for a
non-streamed answer: the whole generation runs in one worker call, and the route polls for a disconnect.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its (non-streamed) answer was ready; the generation was cancelled."""


async def run_until_disconnect(request: Request, work: Callable[[threading.Event], T], poll_s: float = 0.25) -> T:
    """Run `work(cancel)` on a worker thread; if the client goes away meanwhile, set `cancel` (the work stops
    at its next token and closes its stream, which frees the KV blocks) and raise `ClientGone`."""
    cancel = threading.Event()
    task = asyncio.ensure_future(run_in_threadpool(work, cancel))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                cancel.set()
                await asyncio.wait({task})
                raise ClientGone()
    finally:
        cancel.set()


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
