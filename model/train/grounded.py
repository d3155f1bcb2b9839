"""Grounded-QA SFT examples from SQuAD: retrieved passages + question -> short answer, or a fixed refusal.

The prompt is the RAG prompt: numbered passages, then the question, under a system message that asks
for the shortest answer found in the passages. Unanswerable SQuAD v2 questions (their paragraph does not
hold the answer) teach the fixed reply `NOT_IN_CONTEXT`. Distractor paragraphs from the same article are
mixed in, shuffled, so the model must find the right passage, as it must after retrieval.

NOTE: this prompt does NOT yet match the RAG pipeline's (ember.retrieval.rag.RagPipeline.build_prompt, merged
since: passages go in the system message after its own SYSTEM_PROMPT, as "[n] (source, where)\ntext", the
user message is the bare question, and its refusal wording differs). model/ cannot import retrieval/, so the
next step is to mirror that layout here, test the equality in tests/ (which may import both), and retrain.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.model.chat_template import Message
from ember.model.errors import ConfigError

NOT_IN_CONTEXT = "The answer is not in the context."
SYSTEM = ("Answer the question using only the numbered context passages. Reply with the shortest exact answer "
          f"copied from the passages, not a sentence. If the passages do not contain the answer, reply exactly: "
          f"{NOT_IN_CONTEXT}")


def grounded_messages(passages: Sequence[str], question: str) -> list[Message]:
    """System + user messages of a grounded question (the prompt, without the answer)."""
    context = "\n\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(passages, 1))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question.strip()}"}]


@dataclass(frozen=True, slots=True)
class QAItem:
    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]  # empty = unanswerable from this context


def read_squad(path: str | Path) -> list[QAItem]:
    """Every question of a SQuAD v1.1 or v2.0 file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
        return [QAItem(qa["id"], article["title"], paragraph["context"], qa["question"],
                       tuple(a["text"] for a in qa.get("answers", [])) if not qa.get("is_impossible") else ())
                for article in data for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a readable SQuAD file ({e})") from e


def grounded_examples(items: Iterable[QAItem], max_distractors: int = 1, unanswerable_share: float = 0.3,
                      exclude_titles: Iterable[str] = (), seed: int = 0) -> list[list[Message]]:
    """SFT conversations. `unanswerable_share` caps the fraction of refusals; `exclude_titles` keeps
    articles used for evaluation out of training."""
    if not 0 <= unanswerable_share < 1:
        raise ConfigError(f"unanswerable_share={unanswerable_share} must be in [0, 1)")
    rng = random.Random(seed)
    excluded = set(exclude_titles)
    items = [it for it in items if it.title not in excluded]
    by_title: dict[str, list[str]] = {}
    for it in items:
        contexts = by_title.setdefault(it.title, [])
        if it.context not in contexts:
            contexts.append(it.context)
    answerable = [it for it in items if it.answers]
    unanswerable = [it for it in items if not it.answers]
    rng.shuffle(unanswerable)
    cap = int(len(answerable) * unanswerable_share / (1 - unanswerable_share))
    chosen = answerable + unanswerable[:cap]
    rng.shuffle(chosen)
    out = []
    for it in chosen:
        # no distractors for refusals: another paragraph of the article might hold the answer after all
        others = [c for c in by_title[it.title] if c != it.context] if it.answers else []
        passages = [it.context, *rng.sample(others, min(len(others), rng.randint(0, max_distractors)))]
        rng.shuffle(passages)
        answer = it.answers[0] if it.answers else NOT_IN_CONTEXT
        out.append([*grounded_messages(passages, it.question), {"role": "assistant", "content": answer}])
    return out


def squad_titles(path: str | Path) -> set[str]:
    data: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    return {a["title"] for a in data}
