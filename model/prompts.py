"""Every prompt Ember sends a model for a product task: RAG answers, the agent, and grounded-QA fine-tuning.

One module so that serving and training cannot drift: the RAG pipeline (`ember.retrieval.rag`), the ReAct
agent (`ember.agents.react`), the eval harness and the grounded-QA SFT data (`ember.model.train.grounded`)
all build their messages here, and tests compare what each sends with these functions.

RAG layout: a system message with the rules, then (after any history) one user message with the numbered
passages and the question last. The answer comes first and short, cites passages as [n], and a question the
passages do not answer gets exactly `REFUSAL`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Message = dict[str, Any]

# ---- RAG (serving) and grounded QA (training) ---------------------------------------------------------------

REFUSAL = "The documents do not say."
RAG_SYSTEM = (
    "You are Ember. You answer questions using only the numbered passages in the user's message.\n"
    "- Put the answer first. Keep it short: a few words when a phrase answers the question, one to three "
    "sentences for how-to questions. Copy names, numbers, commands and settings exactly as the passages write "
    "them; never invent any.\n"
    "- After the answer, cite the passage it comes from, like [1].\n"
    f"- If the passages do not contain the answer, reply exactly: {REFUSAL}"
)
# The refusal bias per model (`ember.model.refusal.RefusalBias`, our engine): tuned for Qwen2.5-Coder-0.5B on the
# tuning split of squad-unanswerable (evals/RESULTS.md) and used as is for the 1.5B; SmolLM2-135M refuses nearly
# every question with any bias, so it gets none. Other models: none.
REFUSAL_BIAS: dict[str, float] = {"qwen2.5-coder-0.5b": 1.0, "qwen2.5-coder-1.5b": 1.0}


def refusal_bias(model: str, adapter: Path | None = None) -> float:
    """The refusal bias of `model` served with `adapter` (a LoRA folder merged at load, or None): an adapter's
    comes with it (`ember.model.adapter.ServingHints`, tuned for the one Ember ships; none for others)."""
    if adapter is None:
        return REFUSAL_BIAS.get(model, 0.0)
    from ember.model.adapter import serving_hints

    return serving_hints(adapter).refusal_bias


def rag_demos(adapter: Path | None = None) -> bool:
    """Whether the RAG prompt of a model served with `adapter` carries the worked examples: yes without an
    adapter; an adapter says how it was trained (`ServingHints.rag_demos`)."""
    from ember.model.adapter import serving_hints

    return serving_hints(adapter).rag_demos


_CITE = re.compile(r"\[(\d{1,3})(?:\s*,\s*\d{1,3})*\]")
_CITE_ALL = re.compile(r"\d{1,3}")
_REFUSAL_WORDS = re.compile(r"\b(documents?|passages?|context)\s+(do|does)\s+not\s+(say|contain|mention)|"
                            r"\bnot\s+(in|mentioned in)\s+the\s+(documents?|passages?|context)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PromptPassage:
    text: str
    label: str = ""  # where it comes from, shown after its number: "server.md › API keys", an article title


def passages_block(passages: Sequence[PromptPassage]) -> str:
    """`[1] (label)\\ntext` per passage, numbered from 1 in the order given (the retriever's rank)."""
    parts = []
    for n, p in enumerate(passages, 1):
        head = f"[{n}] ({p.label})" if p.label else f"[{n}]"
        parts.append(f"{head}\n{p.text.strip()}")
    return "\n\n".join(parts)


def rag_user(passages: Sequence[PromptPassage], question: str) -> str:
    return f"Passages:\n\n{passages_block(passages)}\n\nQuestion: {question.strip()}"


# Two worked turns before the real question: small models follow a shown format far better than a described
# one. Invented text, so no evaluation example leaks into the prompt.
_DEMO_PASSAGES = (
    PromptPassage("Lake Ontario is the smallest of the Great Lakes by surface area, 18,960 square kilometres. Its "
                  "main outlet is the Saint Lawrence River.", "Lake Ontario"),
    PromptPassage("To stop the service, run `svc stop --all`. Logs are kept for 30 days in `/var/log/svc`.",
                  "svc.md › Operations"),
)
DEMOS: tuple[tuple[str, str], ...] = (
    ("What river drains Lake Ontario?", "The Saint Lawrence River [1]"),
    ("How long are the logs kept?", "30 days [2]"),
    ("How do I stop the service?", "Run `svc stop --all` [2]"),
    ("Who discovered Lake Ontario?", REFUSAL),
)


def demo_messages() -> list[Message]:
    out: list[Message] = []
    for question, answer in DEMOS:
        out += [{"role": "user", "content": rag_user(_DEMO_PASSAGES, question)},
                {"role": "assistant", "content": answer}]
    return out


def rag_messages(passages: Sequence[PromptPassage], question: str, history: Iterable[Message] = (),
                 system: str = RAG_SYSTEM, demos: bool = True) -> list[Message]:
    """The whole RAG prompt: system rules, the worked examples, earlier turns, then passages and the question."""
    return [{"role": "system", "content": system}, *(demo_messages() if demos else []), *history,
            {"role": "user", "content": rag_user(passages, question)}]


def grounded_answer(answer: str | None, cite: int | None) -> str:
    """The reply grounded SFT teaches: the answer and its passage's number, or `REFUSAL` (answer None)."""
    if answer is None:
        return REFUSAL
    return f"{answer.strip()} [{cite}]" if cite is not None else answer.strip()


def cited_numbers(text: str) -> set[int]:
    """Passage numbers the answer cites: [2], [1, 3]."""
    return {int(n) for m in _CITE.finditer(text) for n in _CITE_ALL.findall(m.group(0))}


def strip_citations(text: str) -> str:
    return re.sub(r"\s*" + _CITE.pattern, "", text).strip()


def is_refusal(text: str) -> bool:
    """The answer says the documents do not hold the answer (the exact `REFUSAL`, or close wording of it)."""
    t = " ".join(text.split())
    return t.lower().startswith(REFUSAL.lower()[:-1]) or bool(_REFUSAL_WORDS.search(t[:200]))


# ---- agents -------------------------------------------------------------------------------------------------

AGENT_REACT_SYSTEM = """You solve the user's task step by step, using tools.

Tools (call one at a time; "arguments" must follow the tool's JSON schema):
{tools}

Each reply is one Thought line and then one Action line with a JSON tool call, or one Final Answer.
Example with a weather tool:
Thought: I need the weather in Paris, so I call the weather tool.
Action: {{"name": "get_weather", "arguments": {{"city": "Paris"}}}}
Observation: {{"temperature_c": 18}}
Thought: The observation answers the question.
Final Answer: It is 18 °C in Paris."""

AGENT_NATIVE_SYSTEM = (
    "You solve the user's task with the tools. Call one tool at a time and read its result before you go on.\n"
    "- Facts: call search_collection with a short query (a name or a few keywords); when a result names another "
    "person, place or thing you need, search for that next.\n"
    "- When you know the answer, call final_answer with the answer alone, as short as possible (a name, a number, "
    "yes or no)."
)
# With the calculator, natively: arithmetic as a code action (`ember.agents.react`), the calculator's own program
# form (assignments, then the answer's expression).
AGENT_CODE_RULE = (
    "\n- Arithmetic: reply with a short Python program in a ```python block that solves the problem step by step: "
    "for each step a `# comment` saying what it computes and a line `name = expression`, and the answer's "
    "expression last. The calculator runs it (numbers, + - * / // % **, round, min, max; no loops) and returns the "
    "value; then call final_answer with that number."
)
CODE_RESULT = "Result of the code: {result}"

OBSERVATION = "Observation: {result}\n(If this answers the task, reply with a Thought and the Final Answer.)"
CORRECTION = ('Your reply could not be parsed ({error}). Reply with "Thought: ..." and then either '
              '"Action: {{\\"name\\": \\"<tool>\\", \\"arguments\\": {{...}}}}" or "Final Answer: ...".')


def describe_tools(tools: Iterable[Any]) -> str:
    """The tool list of the text ReAct prompt (objects with name, description and parameters)."""
    return "\n".join(f"- {t.name}: {t.description}\n  arguments schema: {json.dumps(t.parameters)}" for t in tools)


# Worked runs shown before the task in the native format, one per kind of tool the agent has (invented tasks, so
# no evaluation example leaks in): a small model follows a shown step far better than a described one. A step is
# (tool, arguments, result); tool "code" is a code action (the calculator runs arguments["code"]).
DEMO_RUNS: dict[str, tuple[str, tuple[tuple[str, dict[str, Any], str], ...], str]] = {
    "code": (
        "Tom has 3 boxes with 25 marbles in each. He gives 18 marbles to his sister, then buys 2 bags of 10 marbles. "
        "How many marbles does he have now?",
        (("code", {"code": "# marbles in the boxes\nboxes = 3 * 25\n# after he gives 18 away\nleft = boxes - 18\n"
                            "# the marbles he buys\nbought = 2 * 10\n# marbles he has now\nleft + bought"}, "77"),),
        "77"),
    "search_collection": (
        "In which country is the company that makes the Zorin X2 camera based?",
        (("search_collection", {"query": "Zorin X2 camera"},
          "[1] Zorin X2 (chunk 7):\nThe Zorin X2 is a rangefinder camera made by Halvik Optics since 1998."),
         ("search_collection", {"query": "Halvik Optics"},
          "[1] Halvik Optics (chunk 12):\nHalvik Optics is a camera maker based in Bergen, Norway.")),
        "Norway"),
}


def agent_demos(kinds: Iterable[str]) -> list[Message]:
    """The worked runs (native format) for these tools ("code": code actions): steps, results, final_answer."""
    out: list[Message] = []
    for kind in kinds:
        if kind not in DEMO_RUNS:
            continue
        task, steps, answer = DEMO_RUNS[kind]
        out.append({"role": "user", "content": task})
        for i, (tool, args, result) in enumerate((*steps, ("final_answer", {"answer": answer}, "")), 1):
            if tool == "code":
                out += [{"role": "assistant", "content": f"```python\n{args['code']}\n```"},
                        {"role": "user", "content": CODE_RESULT.format(result=result)}]
                continue
            call_id = f"demo_{kind}_{i}"
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": args}}]})
            if tool != "final_answer":
                out.append({"role": "tool", "tool_call_id": call_id, "name": tool, "content": result})
    return out


def agent_messages(task: str, tools: Iterable[Any], native: bool, code: bool = False) -> list[Message]:
    """The first messages of an agent run: natively the chat template lists the tools itself, and worked runs
    for the tools that have one come before the task; `code`: arithmetic comes as code actions."""
    tools = list(tools)
    if not native:
        return [{"role": "system", "content": AGENT_REACT_SYSTEM.format(tools=describe_tools(tools))},
                {"role": "user", "content": task}]
    kinds = ["code"] * code + [t.name for t in tools]
    return [{"role": "system", "content": AGENT_NATIVE_SYSTEM + (AGENT_CODE_RULE if code else "")},
            *agent_demos(kinds), {"role": "user", "content": task}]
