"""Tool-call parse rate of the default model with and without grammar-constrained decoding, one run.

N tool-call prompts (built from templates over four tools: calculator, current_time, convert_time with the
schema `mcp-server-time` publishes, search_collection; seeded, not tuned) go to SmolLM2-135M on our engine,
asking for the call as JSON alone (tool choice "required"). A reply counts when the tolerant parser finds
a call whose tool exists and whose arguments validate against that tool's schema. Same prompts, same greedy
decoding, constrained by the llguidance grammar (`ember.agents.grammar`, mode "call") or not.

    python benchmarks/bench_tool_calls.py [-n 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CITIES = [("Tokyo", "Asia/Tokyo"), ("Paris", "Europe/Paris"), ("New York", "America/New_York"),
          ("Sydney", "Australia/Sydney"), ("London", "Europe/London"), ("Mumbai", "Asia/Kolkata"),
          ("São Paulo", "America/Sao_Paulo"), ("Cairo", "Africa/Cairo"), ("Los Angeles", "America/Los_Angeles"),
          ("Berlin", "Europe/Berlin")]
TOPICS = ["CORS middleware", "dependency injection", "path parameters", "background tasks", "OAuth2 scopes",
          "request bodies", "testing with pytest", "async database access", "response models", "file uploads"]


def tools() -> list[Any]:
    from ember.agents.builtins import basic_tools
    from ember.agents.tools import Tool

    def convert_time(source_timezone: str, time: str, target_timezone: str) -> str:
        """Convert time between timezones.

        Args:
            source_timezone: Source IANA timezone name (e.g., 'America/New_York', 'Europe/London').
            time: Time to convert in 24-hour format (HH:MM)
            target_timezone: Target IANA timezone name (e.g., 'Asia/Tokyo', 'America/San_Francisco').
        """
        return ""

    def search_collection(query: str, k: int = 3) -> str:
        """Search the document collection; returns the best matching passages with their source.

        Args:
            query: what to look for, in a few words.
            k: how many passages to return (1-10).
        """
        return ""

    return [*basic_tools(), Tool.from_function(convert_time), Tool.from_function(search_collection)]


def convert_request(rng: random.Random) -> str:
    a, b = rng.sample(CITIES, 2)
    hhmm = f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}"
    return f"It is {hhmm} in {a[0]}. What time is it in {b[0]}?"


def prompts(n: int, seed: int = 0) -> list[str]:
    """n user requests, each answerable by one call of one of the four tools."""
    rng = random.Random(seed)
    makers = [
        lambda: f"What is {rng.randint(12, 999)} * {rng.randint(2, 99)}?",
        lambda: f"Compute {rng.randint(100, 9999)} + {rng.randint(1, 999)} - {rng.randint(1, 99)}.",
        lambda: f"How much is {rng.randint(1, 99)}% of {rng.randint(100, 5000)}?",
        lambda: f"What time is it now in {rng.choice(CITIES)[0]}?",
        lambda: f"Tell me the current date and time in {rng.choice(CITIES)[1]}.",
        lambda: convert_request(rng),
        lambda: f"Find documents about {rng.choice(TOPICS)}.",
        lambda: f"Search the docs for the {rng.randint(2, 5)} best passages on {rng.choice(TOPICS)}.",
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def system_prompt(tool_list: list[Any]) -> str:
    from ember.agents.react import describe_tools

    return ("You call tools. Tools:\n" + describe_tools(tool_list) +
            '\n\nReply with one tool call as JSON and nothing else: {"name": "<tool name>", "arguments": {...}}')


def valid_call(text: str, by_name: dict[str, Any]) -> bool:
    from ember.agents.parsing import as_call, extract_object
    from ember.agents.tools import ToolError

    call = as_call(extract_object(text))
    if call is None or call[0] not in by_name:
        return False
    try:
        by_name[call[0]].validate(call[1])
    except ToolError:
        return False
    return True


def measure(backend: Any, requests: list[str], constrained: bool, max_tokens: int = 160) -> dict[str, Any]:
    """Parse+validate rate of one pass over `requests` on an EmberBackend."""
    from ember.agents.grammar import ToolGrammar
    from ember.model.sampling_params import SamplingParams

    tool_list = tools()
    by_name = {t.name: t for t in tool_list}
    c = backend.capabilities
    grammar = ToolGrammar(tool_list, c.tokenizer, c.vocab_size, c.eos_ids, mode="call") if constrained else None
    system = system_prompt(tool_list)
    chats = [backend._chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": r}])
             for r in requests]
    params = [SamplingParams(max_tokens=max_tokens, temperature=0,
                             logits_processors=[grammar.processor()] if grammar else []) for _ in chats]
    t0 = time.perf_counter()
    outs = backend.generate(chats, params)
    seconds = time.perf_counter() - t0
    ok = [valid_call(o.text, by_name) for o in outs]
    return {"constrained": constrained, "n": len(ok), "valid": sum(ok), "rate": sum(ok) / len(ok),
            "seconds": seconds, "tokens": sum(o.completion_tokens for o in outs),
            "cut_at_max_tokens": sum(o.finish_reason == "length" for o in outs),
            "failures": [o.text[:160] for o, good in zip(outs, ok, strict=True) if not good][:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--model", default=str(REPO / ".ember" / "models" / "smollm2"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from ember.model.backends.ember import EmberBackend
    from ember.model.engine.llm_engine import EngineConfig

    backend = EmberBackend.from_path(args.model, config=EngineConfig(kv_cache_bytes=1 << 30, max_model_len=2048))
    requests = prompts(args.n)
    try:
        results = [measure(backend, requests, constrained) for constrained in (False, True)]
    finally:
        backend.close()
    print(f"{args.n} tool-call prompts, SmolLM2-135M-Instruct on our engine, greedy")
    print("| decoding | parse + validate | rate | cut at max_tokens | seconds | completion tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        name = "constrained (llguidance grammar)" if r["constrained"] else "unconstrained"
        print(f"| {name} | {r['valid']}/{r['n']} | {r['rate']:.1%} | {r['cut_at_max_tokens']} | {r['seconds']:.1f} "
              f"| {r['tokens']} |")
    for r in results:
        if r["failures"]:
            print(f"examples of failures ({'constrained' if r['constrained'] else 'unconstrained'}):",
                  *(f"  {t!r}" for t in r["failures"]), sep="\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
