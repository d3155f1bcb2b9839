"""Prometheus text exposition of request counts, latency, tokens, queue depth and the KV pool."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cancelled = 0
        self.gauges: dict[str, Callable[[], float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, method, status)] += 1
            s = self.seconds[route]
            s[0] += seconds
            s[1] += 1

    def tokens(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def render(self) -> str:
        out = ["# HELP ember_requests_total HTTP requests by route, method and status.",
               "# TYPE ember_requests_total counter"]
        with self.lock:
            for (route, method, status), n in sorted(self.requests.items()):
                out.append(f'ember_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}')
            out += ["# HELP ember_request_seconds Time to serve a request (streams: until the last byte).",
                    "# TYPE ember_request_seconds summary"]
            for route, (total, count) in sorted(self.seconds.items()):
                out.append(f'ember_request_seconds_sum{{route="{route}"}} {total:.6f}')
                out.append(f'ember_request_seconds_count{{route="{route}"}} {count}')
            out += ["# TYPE ember_prompt_tokens_total counter", f"ember_prompt_tokens_total {self.prompt_tokens}",
                    "# TYPE ember_completion_tokens_total counter",
                    f"ember_completion_tokens_total {self.completion_tokens}",
                    "# TYPE ember_generations_cancelled_total counter",
                    f"ember_generations_cancelled_total {self.cancelled}"]
        for name, fn in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {fn():g}"]
        return "\n".join(out) + "\n"
