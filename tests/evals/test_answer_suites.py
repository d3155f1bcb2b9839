"""Issue 15's suites with scripted backends (named so, for exact figures): the tuning split, the grounded reader
through the RAG prompt, refusal scoring on unanswerable questions, and the HotpotQA agent over a real collection
reader (the dataset file) with a scripted searcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ember.evals.datasets import Example, read_hotpot
from ember.evals.grading import grade
from ember.evals.harness import Resources, run_suite
from ember.evals.split import is_tuning, take
from ember.evals.suite import SuiteConfig, TaskConfig
from ember.model import prompts
from tests.scripted import ScriptedBackend

HOTPOT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "agent_tasks" / "hotpot_distractor_50.json"


def test_tuning_split_is_a_stable_quarter_disjoint_from_the_rest() -> None:
    examples = [Example(str(i), "q") for i in range(2000)]
    tune, held = take(examples, "tune"), take(examples, "heldout")
    assert {e.id for e in tune}.isdisjoint(e.id for e in held) and len(tune) + len(held) == 2000
    assert 400 < len(tune) < 600 and take(examples, "all") == examples
    assert take(list(reversed(examples)), "tune") == list(reversed(tune))  # by id, not by position
    assert is_tuning(tune[0].id) and not is_tuning(held[0].id)


def task(metrics: list[str]) -> TaskConfig:
    return TaskConfig(name="t", kind="qa", format="squad", path="x", metrics=metrics)


def test_squad_suites_score_only_articles_the_adapter_never_trained_on() -> None:
    """`unseen_by_training`: the shipped SQuAD suites drop the grounded-QA adapter's training articles (five
    of them are SQuAD v1.1 dev articles too), for every model alike."""
    from ember.evals.harness import select
    from ember.model.train.grounded import TRAIN_TITLES
    from ember.platform.cli.eval import load_suite

    examples = [Example(f"q{i}", "?", ("a",), metadata={"title": t})
                for i, t in enumerate(["Normans", "Warsaw", "Force", "Huguenot"] * 20)]
    task = TaskConfig(name="t", kind="qa", format="squad", path="x", unseen_by_training=True)
    kept = select(examples, task, None, 0)
    assert kept and {ex.metadata["title"] for ex in kept} == {"Warsaw", "Force"}
    assert len(select(examples, task.model_copy(update={"unseen_by_training": False}), None, 0)) == 80
    for name in ("squad-closed", "squad-rag", "squad-unanswerable"):
        assert all(t.unseen_by_training and t.part == "heldout" for t in load_suite(name).tasks), name
    assert {"Normans", "Huguenot"} <= TRAIN_TITLES


def test_refusal_is_scored_on_unanswerable_and_false_refusal_on_answerable() -> None:
    t = task(["refusal", "false_refusal", "f1"])
    unanswerable, answerable = Example("u", "q"), Example("a", "q", ("Denver Broncos",))
    refused = {"text": prompts.REFUSAL, "raw": prompts.REFUSAL, "refused": True}
    answered = {"text": "Denver Broncos", "raw": "Denver Broncos [1]", "refused": False}
    assert grade(t, unanswerable, refused) == {"refusal": 1.0, "false_refusal": None, "f1": None}
    assert grade(t, unanswerable, answered) == {"refusal": 0.0, "false_refusal": None, "f1": None}
    assert grade(t, answerable, refused)["false_refusal"] == 1.0
    assert grade(t, answerable, answered) == {"refusal": None, "false_refusal": 0.0, "f1": 1.0}
    assert grade(t, answerable, {"text": "The documents do not say."})["false_refusal"] == 1.0  # from the text


def squad_file(tmp_path: Path) -> Path:
    data = {"data": [{"title": "Lakes", "paragraphs": [{"context": "Lake Ontario drains into the Saint Lawrence.",
                                                         "qas": [{"id": f"a{i}", "question": f"Q{i}: drains?",
                                                                  "answers": [{"text": "Saint Lawrence"}]}
                                                                 for i in range(6)]
                                                        + [{"id": f"u{i}", "question": f"Q{i}: who found it?",
                                                            "answers": [], "is_impossible": True}
                                                           for i in range(6)]}]}]}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    return path


def test_grounded_target_sends_the_rag_prompt_and_scores_refusals(tmp_path: Path) -> None:
    def reply(messages: list[dict[str, Any]]) -> str:
        return prompts.REFUSAL if "who found" in messages[-1]["content"] else "Saint Lawrence [1]"

    backend = ScriptedBackend([reply])
    suite = SuiteConfig.parse({"name": "u", "target": {"kind": "grounded", "batch_size": 4}, "tasks": [
        {"name": "u", "kind": "qa", "format": "squad", "path": str(squad_file(tmp_path)),
         "metrics": ["refusal", "false_refusal", "f1"]}]})
    result = run_suite(suite, Resources(tmp_path, backend=backend, model_id="scripted"), tmp_path / "run")
    assert result.tasks[0].metrics == {"refusal": 100.0, "false_refusal": 0.0, "f1": 100.0}
    sent = backend.calls[0]
    passage = prompts.PromptPassage("Lake Ontario drains into the Saint Lawrence.", "Lakes")
    assert sent == prompts.rag_messages([passage], sent[-1]["content"].rsplit("Question: ", 1)[1])
    # served with an adapter trained without the worked examples: the reader's prompt has none either
    from ember.model.adapter import ServingHints

    (tmp_path / "lora").mkdir()
    ServingHints(rag_demos=False).save(tmp_path / "lora")
    backend = ScriptedBackend([reply])
    run_suite(suite, Resources(tmp_path, backend=backend, model_id="scripted", adapter=tmp_path / "lora"),
              tmp_path / "run2")
    sent = backend.calls[0]
    assert sent == prompts.rag_messages([passage], sent[-1]["content"].rsplit("Question: ", 1)[1], demos=False)
    assert [m["role"] for m in sent] == ["system", "user"]


def test_hotpot_reader_puts_every_paragraph_in_the_corpus() -> None:
    if not HOTPOT.is_file():
        pytest.skip(f"{HOTPOT} is missing")
    examples, corpus = read_hotpot(HOTPOT)
    assert len(examples) == 50 and 450 <= len(corpus.docs) <= 500
    for ex in examples:
        assert ex.references and len(ex.qrels) == 2 and all(t in corpus.docs for t in ex.qrels)


class TitleSearch:
    """A scripted retriever (named so): the paragraphs whose title appears in the query."""

    collection = None  # read_document is not offered to the hotpot agent

    def __init__(self, docs: dict[str, tuple[str, str]]) -> None:
        from ember.retrieval.retriever import Hit
        from ember.retrieval.store import ChunkRow

        self.hits = {t: Hit(ChunkRow(i, i, 0, text, 0, len(text), 10, None, (), f"eval:{t}", t), 1.0, 1)
                     for i, (t, (_, text)) in enumerate(docs.items())}

    def search(self, query: str, k: int = 3, **_: Any) -> list[Any]:
        return [h for t, h in self.hits.items() if t.lower() in query.lower()][:k]


def test_hotpot_agent_searches_twice_then_answers(tmp_path: Path) -> None:
    docs = {"Alpha Band": ("Alpha Band", "Alpha Band was founded by Jane Roe."),
            "Jane Roe": ("Jane Roe", "Jane Roe was born in Oslo.")}
    rows = [{"_id": "h1", "question": "Where was the founder of Alpha Band born?", "answer": "Oslo",
             "context": [[t, [text]] for t, (_, text) in docs.items()],
             "supporting_facts": [["Alpha Band", 0], ["Jane Roe", 0]]}]
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(rows))

    def oracle(messages: list[dict[str, Any]]) -> str:
        seen = "\n".join(str(m["content"]) for m in messages if m["role"] == "user")
        if "Jane Roe was born" in seen:
            return 'Thought: done.\nFinal Answer: Oslo'
        query = "Jane Roe" if "founded by Jane Roe" in seen else "Alpha Band"
        return f'Thought: search.\nAction: {{"name": "search_collection", "arguments": {{"query": "{query}"}}}}'

    suite = SuiteConfig.parse({"name": "h", "target": {"kind": "agent", "tools": ["search"], "max_steps": 4},
                               "tasks": [{"name": "h", "kind": "qa", "format": "hotpot", "path": str(path),
                                          "metrics": ["exact_match"]}]})
    search = TitleSearch(docs)
    res = Resources(tmp_path, backend=ScriptedBackend([oracle]), model_id="scripted",
                    retriever_for=lambda task, corpus: (search, {"collection": "scripted"}))
    result = run_suite(suite, res, tmp_path / "run")
    assert result.tasks[0].metrics == {"exact_match": 100.0}
    raw = result.tasks[0].records[0]["prediction"]["raw"]
    assert raw.startswith("answered after 3 steps") and raw.count("search_collection") == 2
