"""Readers on the real shared data and on bad input (clear errors with file and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ember.evals import datasets
from ember.evals.datasets import DatasetError


def test_squad(shared: Path) -> None:
    examples, corpus = datasets.read_squad(shared / "squad" / "dev-v1.1.json")
    assert len(examples) == 6586  # README: 32 of the 48 articles
    ex = examples[0]
    assert ex.references and ex.context and list(ex.qrels) == [ex.metadata["paragraph"]]
    assert corpus.docs[ex.metadata["paragraph"]][1] == ex.context
    assert all(len(set(e.references)) == len(e.references) for e in examples)


def test_beir(shared: Path) -> None:
    examples, corpus = datasets.read_beir(shared / "retrieval" / "msmarco-subset50")
    assert len(examples) == 43 and len(corpus.docs) == 5000  # 50 queries, 43 of them judged (BEIR skips the rest)
    assert all(e.qrels for e in examples)
    assert all(d in corpus.docs for e in examples for d in e.qrels)


def test_choice_and_scitldr(shared: Path) -> None:
    arc = datasets.read_choice_jsonl(shared / "multiple_choice" / "arc_easy.jsonl")
    assert len(arc) == 2376 and all(e.choices[e.gold] == e.references[0] for e in arc if e.gold is not None)
    tldr = datasets.read_scitldr(shared / "summarization" / "scitldr" / "dev.jsonl")
    assert len(tldr) == 619 and all(e.references and e.input for e in tldr)


def test_jsonl_and_mmlu_csv(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": "a", "input": "2+2?", "references": "4", "choices": ["3", "4"], "gold": 1,
                             "metadata": {"src": "x"}}) + "\n\n" + json.dumps({"input": "ü?"}) + "\n")
    a, b = datasets.read_jsonl(f)
    assert a.references == ("4",) and a.choices == ("3", "4") and a.gold == 1 and a.metadata == {"src": "x"}
    assert b.id == "3" and b.references == ()
    csv = tmp_path / "abstract_algebra_test.csv"
    csv.write_text('"Find 1+1, ""quoted""",1,2,3,4,B\nQ2,x,y,B\n')
    m = datasets.read_mmlu_csv(csv)
    assert m[0].gold == 1 and m[0].choices == ("1", "2", "3", "4") and m[0].input == 'Find 1+1, "quoted"'
    assert m[1].choices == ("x", "y") and m[1].gold == 1 and m[1].references == ("y",)


@pytest.mark.parametrize(("content", "message"), [
    ('{"input": 3}\n', r"t.jsonl:1: needs a string 'input'"),
    ('{"input": "a"}\n[1]\n', r"t.jsonl:2: expected a JSON object"),
    ('{"input": "a", "choices": ["x"], "gold": 4}\n', r"t.jsonl:1: .*not an index"),
])
def test_bad_jsonl(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "t.jsonl").write_text(content)
    with pytest.raises(DatasetError, match=message):
        datasets.read_jsonl(tmp_path / "t.jsonl")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset not found"):
        datasets.load("jsonl", tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        datasets.load("parquet", tmp_path)
    (tmp_path / "q.csv").write_text("Q,a,b,E\n")
    with pytest.raises(DatasetError, match=r"q\.csv:1: answer .E."):
        datasets.read_mmlu_csv(tmp_path / "q.csv")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(DatasetError, match="not a SQuAD JSON"):
        datasets.read_squad(tmp_path / "s.json")
