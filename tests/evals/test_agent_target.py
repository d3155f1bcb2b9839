"""The agent target: GSM8K problems through the real ReAct loop and the real calculator tool, with a scripted
LLM (named so: an oracle that replays each problem's gold `<<expr=value>>` steps), scored by numeric_match."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from ember.evals import datasets
from ember.evals.datasets import DatasetError
from ember.evals.harness import Resources, run_suite
from ember.evals.metrics.qa import last_number, numeric_match
from ember.evals.suite import SuiteConfig
from ember.model.backends.base import Message
from tests.scripted import ScriptedBackend

SUITE = Path(__file__).resolve().parents[2] / "evals" / "suites" / "gsm8k-agent.toml"


def gsm_oracle(solutions: dict[str, str]) -> Callable[[list[Message]], str]:
    """A stateless reply (the agent runs examples concurrently), a function of the conversation: each gold step
    with the calculator, then the last observation as the answer, except for problems that mention 'ducks',
    where it answers a wrong number on purpose."""

    def reply(messages: list[Message]) -> str:
        task = str(messages[1]["content"])
        steps = re.findall(r"<<([^=>]+)=", solutions[task])
        done = sum(1 for m in messages[2:] if m["role"] == "user")
        if done < len(steps):
            call = {"name": "calculator", "arguments": {"expression": steps[done]}}
            return f"Thought: step {done + 1}\nAction: {json.dumps(call)}"
        value = last_number(str(messages[-1]["content"]))
        return f"Thought: done\nFinal Answer: {'-1' if 'ducks' in task else value} dollars"

    return reply


def test_numeric_match_and_the_gsm8k_reader(tmp_path: Path) -> None:
    assert numeric_match("So she makes $1,018.00 a day", "1018") == 1.0
    assert numeric_match("18 then 20", "18") == 0.0 and numeric_match("no number", "3") == 0.0
    assert numeric_match("-4.5", "-4.5") == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DatasetError, match="not a GSM8K row"):
        datasets.load("gsm8k", bad)


def test_gsm8k_agent_suite_with_a_scripted_oracle(shared: Path, tmp_path: Path) -> None:
    suite = SuiteConfig.parse(tomllib.loads(SUITE.read_text()), str(SUITE))
    examples, _ = datasets.load("gsm8k", shared / "agent_tasks" / "gsm8k_test_200.jsonl")
    chosen = examples[:4]
    assert chosen[0].references == ("18",) and "ducks" in chosen[0].input
    backend = ScriptedBackend([gsm_oracle({ex.input: ex.metadata["solution"] for ex in chosen})])
    run = run_suite(suite, Resources(data_root=shared, backend=backend, model_id="scripted"), tmp_path / "run",
                    limit=4)
    t = run.tasks[0]
    assert t.examples == 4 and t.metrics["numeric_match"] == pytest.approx(75.0)  # the ducks answer is wrong
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all(r["prediction"]["raw"].startswith("answered after ") for r in records)
    assert sorted(r["scores"]["numeric_match"] for r in records) == [0.0, 1.0, 1.0, 1.0]
