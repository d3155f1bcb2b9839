"""Tool calls through the OpenAI API: validity and argument accuracy of each local model, one run.

A real `ember serve` app (uvicorn on a loopback port, our engine, greedy) gets N requests through the official
`openai` client, each with the same four tools (get_weather, add, convert_currency, search_docs) and a
templated question whose correct call is known (seeded, not tuned). Per tool_choice ("required", "auto"):

- valid: replies whose every call parses as JSON, names an offered tool and validates against its schema
  (under "auto": of the replies that call);
- called: replies with at least one call; tool: the first call names the expected tool;
- arguments: the first call's arguments equal the expected ones (strings compared case-insensitively);
- seconds: wall time of the mode's requests (8 at a time, so the engine batches them).

    python benchmarks/bench_api_tools.py [--models smollm2 qwen2.5-coder-0.5b] [-n 24] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CITIES = ["Paris", "Tokyo", "Berlin", "Cairo", "Sydney", "Lima", "Oslo", "Madrid"]
TOPICS = ["API keys", "CORS", "collections", "streaming", "rate limits", "uploads"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP"]


def fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


TOOLS = [
    fn("get_weather", "The current weather in a city.",
       {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city", "unit"]),
    fn("add", "Add two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"]),
    fn("convert_currency", "Convert an amount of money from one currency to another.",
       {"amount": {"type": "number"}, "source": {"type": "string", "enum": CURRENCIES},
        "target": {"type": "string", "enum": CURRENCIES}}, ["amount", "source", "target"]),
    fn("search_docs", "Search the documentation.", {"query": {"type": "string"}}, ["query"]),
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def tasks(n: int, seed: int = 0) -> list[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit"])
            out.append((f"What is the weather in {city} right now, in {unit}?", "get_weather",
                        {"city": city, "unit": unit}))
        elif kind == 1:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            out.append((f"What is {a} plus {b}?", "add", {"a": a, "b": b}))
        elif kind == 2:
            amount, (src, dst) = rng.randint(5, 500), rng.sample(CURRENCIES, 2)
            out.append((f"How much is {amount} {src} in {dst}?", "convert_currency",
                        {"amount": amount, "source": src, "target": dst}))
        else:
            topic = rng.choice(TOPICS)
            out.append((f"Search the documentation for {topic}.", "search_docs", {"query": topic}))
    return out


def same(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and got.strip().lower() == want.lower()
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], v) for k, v in want.items())
    return bool(got == want)


def score(reply: Any, tool: str, args: dict[str, Any]) -> dict[str, bool]:
    import jsonschema

    calls = reply.tool_calls or []
    valid = bool(calls)
    for c in calls:
        try:
            jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
        except (ValueError, KeyError, jsonschema.ValidationError):
            valid = False
    first = calls[0] if calls else None
    right_tool = first is not None and first.function.name == tool
    right_args = False
    if first is not None and right_tool:
        with contextlib.suppress(ValueError):
            right_args = same(json.loads(first.function.arguments), args)
    return {"called": bool(calls), "valid": valid, "tool": right_tool, "arguments": right_args}


def run_model(name: str, n: int) -> dict[str, Any]:
    import socket
    import tempfile

    import openai
    import uvicorn

    from ember.model.backends.ember import EmberBackend
    from ember.platform.server.app import create_app
    from ember.platform.server.run import build_state
    from ember.platform.settings import Settings

    backend = EmberBackend.from_path(REPO / ".ember" / "models" / name)
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), server={"max_tokens": 128, "max_concurrent": 8})
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(build_state(settings, backend, name)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
    out: dict[str, Any] = {"model": name, "native_tools": backend.capabilities.native_tools}
    try:
        for mode in ("required", "auto"):
            def one(task: tuple[str, str, dict[str, Any]], mode: str = mode) -> dict[str, Any]:
                question, tool, args = task
                body: dict[str, Any] = {"model": name, "messages": [{"role": "user", "content": question}],
                                        "tools": TOOLS, "tool_choice": mode, "temperature": 0, "max_tokens": 128}
                r: Any = client.chat.completions.create(**body)
                return {**score(r.choices[0].message, tool, args), "finish": r.choices[0].finish_reason,
                        "tokens": r.usage.completion_tokens if r.usage else 0}
            t0 = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                rows = list(pool.map(one, tasks(n)))
            called = [r for r in rows if r["called"]]
            out[mode] = {"n": n, "seconds": round(time.perf_counter() - t0, 1),
                         "called": len(called), "valid": sum(r["valid"] for r in called),
                         "tool": sum(r["tool"] for r in rows), "arguments": sum(r["arguments"] for r in rows),
                         "length": sum(r["finish"] == "length" for r in rows),
                         "tokens": sum(r["tokens"] for r in rows)}
            print(name, mode, out[mode], flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        backend.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "qwen2.5-coder-0.5b"])
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = [run_model(m, args.n) for m in args.models]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
