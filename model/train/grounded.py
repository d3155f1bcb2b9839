"""Grounded-QA SFT examples from SQuAD: retrieved passages + question -> short cited answer, or the refusal.

The prompt is the RAG prompt, built by the same function the serving pipeline uses
(`ember.model.prompts.rag_messages`: system rules, worked examples, numbered passages with their labels, the
question last), so training and serving cannot drift; tests/model/train/test_grounded_prompt.py checks that a
served prompt and a training prompt are the same messages. The answer is the shortest gold span and its
passage's number ("Denver Broncos [2]"); unanswerable SQuAD v2 questions (their paragraph does not hold the
answer) teach `prompts.REFUSAL`. Distractor paragraphs from the same article are mixed in, shuffled, so the
model must find the right passage, as it must after retrieval.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.model import prompts
from ember.model.chat_template import Message
from ember.model.errors import ConfigError

NOT_IN_CONTEXT = prompts.REFUSAL

# The articles of squad/v2-train-source.json the grounded-QA adapter trains on; the SQuAD eval suites
# (`unseen_by_training = true`) score every model on the other articles only. Five of these also appear in
# SQuAD v1.1 dev (the same paragraphs and questions), so without the split the evals would test on training data.
TRAIN_TITLES = frozenset({"Normans", "Huguenot", "Steam_engine", "1973_oil_crisis", "Harvard_University",
                          "Packet_switching", "Imperialism", "French_and_Indian_War"})


def grounded_messages(passages: Sequence[str], question: str, title: str = "", demos: bool = True) -> list[Message]:
    """System + user messages of a grounded question (the prompt, without the answer): the serving prompt,
    with or without its worked examples (an adapter trained without them is served without them)."""
    return prompts.rag_messages([prompts.PromptPassage(p, title) for p in passages], question, demos=demos)


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
                      exclude_titles: Iterable[str] = (), seed: int = 0,
                      titles: Iterable[str] | None = None, demos: bool = True) -> list[list[Message]]:
    """SFT conversations. `unanswerable_share` caps the fraction of refusals; `exclude_titles` keeps
    articles used for evaluation out of training; `titles`, when given, keeps only those articles; `demos`
    keeps the prompt's worked examples (without them an example is half as long, and trains twice as fast)."""
    if not 0 <= unanswerable_share < 1:
        raise ConfigError(f"unanswerable_share={unanswerable_share} must be in [0, 1)")
    rng = random.Random(seed)
    excluded = set(exclude_titles)
    kept = None if titles is None else set(titles)
    items = [it for it in items if it.title not in excluded and (kept is None or it.title in kept)]
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
        answer = prompts.grounded_answer(min(it.answers, key=len) if it.answers else None,
                                         passages.index(it.context) + 1 if it.answers else None)
        prompt = grounded_messages(passages, it.question, it.title, demos)
        out.append([*prompt, {"role": "assistant", "content": answer}])
    return out


def squad_titles(path: str | Path) -> set[str]:
    data: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    return {a["title"] for a in data}
