"""Bounded concurrency: `max_concurrent` generations run, `max_queued` wait, the rest get 429 + Retry-After.

The engine batches whatever it is given, so this bound is what keeps latency and memory in check under load.
A slot is released exactly once, whether the response finished, failed or the client went away.
"""

from __future__ import annotations

import asyncio

from ember.platform.server.errors import ApiError


class Slot:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter, self.released = limiter, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter.active -= 1
            self.limiter.sem.release()


class Limiter:
    def __init__(self, max_concurrent: int, max_queued: int, retry_after_s: int) -> None:
        self.max_concurrent, self.max_queued, self.retry_after_s = max_concurrent, max_queued, retry_after_s
        self.sem = asyncio.Semaphore(max_concurrent)
        self.active = 0
        self.waiting = 0
        self.rejected = 0

    async def acquire(self) -> Slot:
        if self.active + self.waiting >= self.max_concurrent + self.max_queued:
            self.rejected += 1
            raise ApiError(429, f"the server is busy ({self.active} generations running, {self.waiting} queued); "
                                f"retry in {self.retry_after_s} s", code="server_busy",
                           headers={"Retry-After": str(self.retry_after_s)})
        self.waiting += 1
        try:
            await self.sem.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        return Slot(self)
