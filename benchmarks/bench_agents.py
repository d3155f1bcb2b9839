"""Agent benchmark on ../shared/datasets/agent_tasks: the default model vs a scripted oracle, one run.

GSM8K (calculator tool): success = the last number of the final answer equals the gold `####` number.
HotpotQA distractor (search_collection/read_document over a collection holding every context paragraph of
the questions run, built with the real MiniLM): success = the normalized gold answer (SQuAD normalization)
occurs in the normalized final answer. The oracle is a scripted backend that replays the gold solution
through the same loop and tools (GSM8K: each `<<expr=value>>` step through the calculator; HotpotQA: a
search per supporting-fact title), so it checks the harness and gives the ceiling. Prompts are the agent's
generic ones; nothing is tuned to these tasks. The first N tasks of each file are used (no sampling).

    python benchmarks/bench_agents.py [--gsm8k 20] [--hotpot 10] [--max-steps 8] [--unconstrained] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ember.evals.metrics.qa import last_number, normalize_answer

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO.parent / "shared" / "datasets" / "agent_tasks"
def gsm8k(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (TASKS / "gsm8k_test_200.jsonl").read_text().splitlines()[:n]]
    for r in rows:
        r["gold"] = r["answer"].split("####")[-1].strip().replace(",", "")
        r["steps"] = re.findall(r"<<([^=>]+)=([^>]+)>>", r["answer"])
    return rows


def hotpot(n: int) -> list[dict[str, Any]]:
    return json.loads((TASKS / "hotpot_distractor_50.json").read_text())[:n]


class ScriptedOracle:
    """A scripted backend replaying a gold plan: tool calls in order, then the gold answer."""

    name = "scripted-oracle"

    @property
    def capabilities(self) -> Any:
        from ember.model.backends.base import Capabilities

        return Capabilities()

    def __init__(self, calls: list[tuple[str, dict[str, Any]]], answer: str) -> None:
        self.calls, self.answer, self.n = calls, answer, 0

    def chat(self, messages: list[Any], params: Any) -> Any:
        from ember.model.backends.base import Completion

        if self.n < len(self.calls):
            name, args = self.calls[self.n]
            text = f"Thought: step {self.n + 1}\nAction: {json.dumps({'name': name, 'arguments': args})}"
        else:
            text = f"Thought: done\nFinal Answer: {self.answer}"
        self.n += 1
        return Completion(text=text, token_ids=[0] * len(text.split()), finish_reason="stop", prompt_tokens=0)

    def generate(self, prompts: Any, params: Any) -> Any:
        raise NotImplementedError

    def stream(self, prompt: Any, params: Any) -> Any:
        raise NotImplementedError

    def chat_stream(self, messages: Any, params: Any) -> Any:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def build_collection(tasks: list[dict[str, Any]], root: Path) -> Path:
    """Every context paragraph of `tasks` as a Markdown file, ingested with `ember ingest` (real MiniLM)."""
    docs = root / "paragraphs"
    docs.mkdir(parents=True)
    seen: set[str] = set()
    for t in tasks:
        for title, sentences in t["context"]:
            if title in seen:
                continue
            seen.add(title)
            safe = re.sub(r"[^A-Za-z0-9]+", "_", title)[:80] + f"_{len(seen)}"
            (docs / f"{safe}.md").write_text(f"# {title}\n\n{''.join(sentences).strip()}\n", encoding="utf-8")
    data = root / "data"
    ember = str(Path(sys.executable).parent / "ember")
    subprocess.run([ember, "ingest", str(docs), "--collection", "hotpot"], check=True, capture_output=True,
                   env={"EMBER_DATA_DIR": str(data), "PATH": str(Path(sys.executable).parent)})
    return data


def run_suite(name: str, tasks: list[dict[str, Any]], make_tools: Callable[[], list[Any]],
              backend: Any, oracle_plan: Callable[[dict[str, Any]], tuple[list[Any], str]],
              success: Callable[[dict[str, Any], str | None], bool], max_steps: int,
              constrained: bool = True) -> list[dict[str, Any]]:
    from ember.agents.react import Agent, AgentConfig

    rows = []
    for who in ("oracle", "model") if backend is not None else ("oracle",):
        for i, t in enumerate(tasks):
            b = ScriptedOracle(*oracle_plan(t)) if who == "oracle" else backend
            agent = Agent(b, make_tools(), AgentConfig(max_steps=max_steps, max_tokens=192,
                                                       constrained=constrained if who == "model" else None))
            t0 = time.perf_counter()
            trace = agent.run(t["question"])
            rows.append({"suite": name, "who": who, "task": i, "status": trace.status,
                         "ok": success(t, trace.answer), "steps": len(trace.steps),
                         "parse_failures": trace.parse_failures,
                         "calls": sum(s.kind == "action" for s in trace.steps),
                         "seconds": time.perf_counter() - t0, "answer": trace.answer})
            print(f"{name} {who} {i}: {trace.status} ok={rows[-1]['ok']} steps={len(trace.steps)} "
                  f"{rows[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        for who in ("model", "oracle"):
            rs = [r for r in rows if r["suite"] == suite and r["who"] == who]
            if not rs:
                continue
            steps = sum(r["steps"] for r in rs)
            out.append({"suite": suite, "who": who, "n": len(rs), "success": sum(r["ok"] for r in rs) / len(rs),
                        "mean_steps": steps / len(rs),
                        "parse_failure_rate": sum(r["parse_failures"] for r in rs) / max(steps, 1),
                        "seconds_per_task": sum(r["seconds"] for r in rs) / len(rs),
                        "statuses": {s: sum(r["status"] == s for r in rs) for s in
                                     sorted({r["status"] for r in rs})}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", type=int, default=20)
    ap.add_argument("--hotpot", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--model", default=str(REPO / ".ember" / "models" / "smollm2"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--oracle-only", action="store_true", help="check the harness without the model")
    ap.add_argument("--unconstrained", action="store_true", help="the model without the tool-call grammar")
    args = ap.parse_args()
    from ember.agents.builtins import basic_tools, collection_tools
    from ember.model.backends.ember import EmberBackend
    from ember.model.engine.llm_engine import EngineConfig
    from ember.retrieval.collection import Collection
    from ember.retrieval.embedders import load_embedder
    from ember.retrieval.retriever import Retriever

    backend = None if args.oracle_only else EmberBackend.from_path(
        args.model, config=EngineConfig(kv_cache_bytes=256 << 20, max_model_len=2048))
    rows: list[dict[str, Any]] = []
    try:
        math = gsm8k(args.gsm8k)

        def math_plan(t: dict[str, Any]) -> tuple[list[Any], str]:
            return [("calculator", {"expression": expr}) for expr, _ in t["steps"]], t["gold"]

        def math_ok(t: dict[str, Any], answer: str | None) -> bool:
            got = last_number(answer or "")
            return got is not None and abs(got - float(t["gold"])) < 1e-6

        rows += run_suite("gsm8k", math, basic_tools, backend, math_plan, math_ok, args.max_steps,
                          not args.unconstrained)
        if args.hotpot:
            qa = hotpot(args.hotpot)
            with tempfile.TemporaryDirectory() as tmp:
                data = build_collection(qa, Path(tmp))
                col = Collection.open(data, "hotpot")
                retriever = Retriever(col, load_embedder("all-MiniLM-L6-v2"), mode="hybrid", k=3)

                def qa_tools() -> list[Any]:
                    return collection_tools(retriever)

                def qa_plan(t: dict[str, Any]) -> tuple[list[Any], str]:
                    titles = list(dict.fromkeys(title for title, _ in t["supporting_facts"]))
                    return [("search_collection", {"query": title, "k": 2}) for title in titles], t["answer"]

                def qa_ok(t: dict[str, Any], answer: str | None) -> bool:
                    return bool(answer) and normalize_answer(t["answer"]) in normalize_answer(answer or "")

                rows += run_suite("hotpotqa", qa, qa_tools, backend, qa_plan, qa_ok, args.max_steps,
                                  not args.unconstrained)
                col.close()
    finally:
        if backend is not None:
            backend.close()
    table = summary(rows)
    print("| suite | backend | tasks | success | mean steps | parse failures / step | s / task | final statuses |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for s in table:
        decoding = "unconstrained" if args.unconstrained else "constrained"
        who = f"SmolLM2-135M ({decoding})" if s["who"] == "model" else "scripted oracle"
        statuses = ", ".join(f"{k} {v}" for k, v in s["statuses"].items())
        print(f"| {s['suite']} | {who} | {s['n']} | {s['success']:.0%} | {s['mean_steps']:.2f} | "
              f"{s['parse_failure_rate']:.1%} | {s['seconds_per_task']:.1f} | {statuses} |")
    if args.json:
        args.json.write_text(json.dumps({"summary": table, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
