"""Evaluation data: one `Example` shape, read from the JSONL task format or from the field's own layouts.

JSONL task format, one object per line:
    {"id": "...", "input": "question or text", "references": ["gold", ...],
     "context": "optional passage", "choices": ["optional", "options"], "gold": 0, "metadata": {...}}
Readers: SQuAD JSON, BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), MMLU-style CSV (question,
options..., answer letter; no header), multiple-choice JSONL (query, choices, gold) and SciTLDR. Every
reader raises `DatasetError` naming the file and line for bad input. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.model.errors import EmberError, InvalidValueError


class DatasetError(EmberError):
    """A dataset file that is missing or does not have the expected layout."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    input: str
    references: tuple[str, ...] = ()
    context: str | None = None
    choices: tuple[str, ...] = ()
    gold: int | None = None  # index into choices
    qrels: dict[str, int] = field(default_factory=dict)  # retrieval judgements: doc id -> grade
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.choices and (self.gold is None or not 0 <= self.gold < len(self.choices)):
            raise InvalidValueError(f"example {self.id}: gold={self.gold} is not an index into its "
                             f"{len(self.choices)} choices")


@dataclass(frozen=True, slots=True)
class Corpus:
    """Passages a retrieval or RAG task searches: id -> (title, text)."""

    docs: dict[str, tuple[str, str]]


def _open(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"dataset not found: {path}", hint="paths in a suite are relative to --data-dir")
    return path


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object")
            yield n, row


def read_jsonl(path: Path) -> list[Example]:
    out = []
    for n, row in _jsonl(path):
        if not isinstance(row.get("input"), str):
            raise DatasetError(f"{path}:{n}: needs a string 'input'")
        refs = row.get("references", [])
        if isinstance(refs, str):
            refs = [refs]
        try:
            out.append(Example(str(row.get("id", n)), row["input"], tuple(refs), row.get("context"),
                               tuple(row.get("choices", ())), row.get("gold"), {}, row.get("metadata", {})))
        except ValueError as e:
            raise DatasetError(f"{path}:{n}: {e}") from None
    return out


def read_squad(path: Path) -> tuple[list[Example], Corpus]:
    """Questions with their gold paragraph as context; the paragraphs as a corpus (`title/index` ids)."""
    try:
        data = json.loads(_open(path).read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a SQuAD JSON file ({e})") from None
    examples, docs = [], {}
    for article in data:
        for p, para in enumerate(article["paragraphs"]):
            pid = f"{article['title']}/{p}"
            docs[pid] = (article["title"], para["context"])
            for qa in para["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))  # distinct, in order
                examples.append(Example(qa["id"], qa["question"], answers, para["context"], qrels={pid: 1},
                                        metadata={"title": article["title"], "paragraph": pid}))
    return examples, Corpus(docs)


def read_beir(folder: Path, split: str = "test") -> tuple[list[Example], Corpus]:
    """Judged queries only (as BEIR evaluates): a query with no qrels line has nothing to score."""
    docs = {str(r["_id"]): (r.get("title", ""), r["text"]) for _, r in _jsonl(folder / "corpus.jsonl")}
    queries = {str(r["_id"]): r["text"] for _, r in _jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with _open(folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if n == 1 and row[:1] == ["query-id"]:
                continue  # BEIR's optional header
            if len(row) != 3 or not row[2].lstrip("-").isdigit():
                raise DatasetError(f"{folder}/qrels/{split}.tsv:{n}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise DatasetError(f"{folder}: qrels name queries not in queries.jsonl: {missing[:5]}")
    return [Example(q, queries[q], qrels=rel) for q, rel in qrels.items()], Corpus(docs)


def read_mmlu_csv(path: Path) -> list[Example]:
    """MMLU's layout: question, option A..D (any count), answer letter; no header row."""
    out = []
    with _open(path).open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if len(row) < 4:
                raise DatasetError(f"{path}:{n}: expected question, at least two options and an answer letter")
            question, options, answer = row[0], tuple(row[1:-1]), row[-1].strip().upper()
            gold = ord(answer) - ord("A") if len(answer) == 1 else -1
            if not 0 <= gold < len(options):
                raise DatasetError(f"{path}:{n}: answer {row[-1]!r} is not one of the option letters")
            out.append(Example(f"{path.stem}-{n}", question, (options[gold],), choices=options, gold=gold))
    return out


def read_choice_jsonl(path: Path) -> list[Example]:
    """llm-foundry's multiple-choice layout (ARC, BoolQ, OpenBookQA): query, choices, gold."""
    out = []
    for n, row in _jsonl(path):
        try:
            choices = tuple(row["choices"])
            out.append(Example(f"{path.stem}-{n}", row["query"], (choices[row["gold"]],), choices=choices,
                               gold=row["gold"]))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}:{n}: expected query, choices and a gold index ({e})") from None
    return out


def read_scitldr(path: Path) -> list[Example]:
    """SciTLDR: the abstract (`source` sentences) as input, the TL;DRs (`target`) as references."""
    out = []
    for n, row in _jsonl(path):
        if not row.get("source") or not row.get("target"):
            raise DatasetError(f"{path}:{n}: expected non-empty 'source' and 'target' lists")
        out.append(Example(str(row.get("paper_id", n)), " ".join(row["source"]), tuple(row["target"]),
                           metadata={"title": row.get("title", "")}))
    return out


def read_gsm8k(path: Path) -> list[Example]:
    """GSM8K JSONL ({"question", "answer"}): the reference is the number after the answer's `####`."""
    out = []
    for i, row in _jsonl(path):
        answer = str(row.get("answer", ""))
        if "question" not in row or "####" not in answer:
            raise DatasetError(f"{path}: line {i + 1} is not a GSM8K row (question, answer with ####)")
        gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
        out.append(Example(id=str(row.get("id", i)), input=str(row["question"]), references=(gold,),
                           metadata={"solution": answer}))
    return out


def read_hotpot(path: Path) -> tuple[list[Example], Corpus]:
    """HotpotQA (official JSON list: question, answer, context [[title, sentences]], supporting_facts): the
    questions, and every context paragraph of the file as the corpus (id = its title), for an agent to search."""
    try:
        rows = json.loads(_open(path).read_text(encoding="utf-8"))
        examples: list[Example] = []
        docs: dict[str, tuple[str, str]] = {}
        for row in rows:
            for title, sentences in row["context"]:
                docs.setdefault(title, (title, "".join(sentences).strip()))
            gold = {title: 1 for title, _ in row.get("supporting_facts", [])}
            examples.append(Example(str(row["_id"]), row["question"], (row["answer"],), qrels=gold,
                                    metadata={"type": row.get("type", ""), "level": row.get("level", "")}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not a HotpotQA JSON file ({e})") from None
    return examples, Corpus(docs)


FORMATS = ("jsonl", "squad", "beir", "mmlu_csv", "choice_jsonl", "scitldr", "gsm8k", "hotpot")


def load(format: str, path: Path, split: str = "test") -> tuple[list[Example], Corpus | None]:
    """Examples and, for squad and beir, the corpus they are judged against."""
    if format == "jsonl":
        return read_jsonl(path), None
    if format == "squad":
        return read_squad(path)
    if format == "beir":
        return read_beir(path, split)
    if format == "mmlu_csv":
        return read_mmlu_csv(path), None
    if format == "choice_jsonl":
        return read_choice_jsonl(path), None
    if format == "scitldr":
        return read_scitldr(path), None
    if format == "gsm8k":
        return read_gsm8k(path), None
    if format == "hotpot":
        return read_hotpot(path)
    raise DatasetError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
