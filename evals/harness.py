"""Run a suite: load each task's data, pick the examples, predict what is not cached, score, aggregate.

The harness owns no model or collection: the caller (the CLI) hands it `Resources` built from settings.
Work goes to the target in batches (the engine batches each one); every finished batch is appended to
the run's results cache before the next starts, so a killed run resumes where it stopped and a rerun
with the same suite and target only scores.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ember.evals import datasets
from ember.evals.cache import ResultsCache, example_key
from ember.evals.datasets import Corpus, Example
from ember.evals.grading import aggregate, check_metrics, grade
from ember.evals.scoring import Scorer
from ember.evals.split import take
from ember.evals.suite import SuiteConfig, TaskConfig, fingerprint
from ember.evals.targets import (
    AgentTarget,
    GroundedTarget,
    ModelTarget,
    RagLike,
    RagTarget,
    RetrievalTarget,
    Searcher,
    Target,
)
from ember.model.backends.base import Backend
from ember.model.errors import EmberError

ProgressFn = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class Resources:
    """What targets run on. Only what a suite's target kind needs must be set."""

    data_root: Path
    backend: Backend | None = None
    model_id: str = ""
    adapter: Path | None = None  # the LoRA merged into the model (refusal_bias depends on it)
    scorer: Scorer | None = None
    searcher_for: Callable[[TaskConfig, Corpus], Searcher] | None = None
    rag_for: Callable[[TaskConfig, Corpus], tuple[RagLike, dict[str, Any]]] | None = None
    retriever_for: Callable[[TaskConfig, Corpus], tuple[Any, dict[str, Any]]] | None = None  # agent search tools


@dataclass
class TaskResult:
    name: str
    kind: str
    metrics: dict[str, float]
    examples: int
    seconds_per_example: float
    records: list[dict[str, Any]] = field(repr=False)


@dataclass
class RunResult:
    suite: str
    run_dir: Path
    target: dict[str, Any]
    seed: int
    limit: int | None
    tasks: list[TaskResult]
    started: float
    finished: float


def select(examples: list[Example], task: TaskConfig, limit: int | None, seed: int) -> list[Example]:
    """The task's part (tuning split, held-back rest, or all) in a seed-fixed order, cut at the smaller cap. A
    larger cap extends a smaller one. `unseen_by_training` first drops the articles fine-tuning trained on."""
    if task.unseen_by_training:
        from ember.model.train.grounded import TRAIN_TITLES

        examples = [ex for ex in examples if ex.metadata.get("title") not in TRAIN_TITLES]
    examples = take(examples, task.part)
    if task.shuffle:
        examples = examples[:]
        random.Random(seed).shuffle(examples)
    caps = [c for c in (task.limit, limit) if c is not None]
    return examples[:min(caps)] if caps else examples


def make_target(suite: SuiteConfig, task: TaskConfig, corpus: Corpus | None, res: Resources, seed: int) -> Target:
    t = suite.target
    if t.kind == "model":
        if res.backend is None:
            raise EmberError("a model target needs a backend")
        return ModelTarget(res.backend, t, res.model_id, res.scorer, seed)
    if t.kind == "agent":
        if res.backend is None:
            raise EmberError("an agent target needs a backend")
        search = None
        if "search" in t.tools:
            if corpus is None or res.retriever_for is None:
                raise EmberError(f"task {task.name!r}: the search tool needs a corpus and a retriever")
            search = res.retriever_for(task, corpus)
        return AgentTarget(res.backend, t, res.model_id, seed, search)
    if t.kind == "grounded":
        if res.backend is None:
            raise EmberError("a grounded target needs a backend")
        return GroundedTarget(res.backend, t, res.model_id, seed, res.adapter)
    if corpus is None:
        raise EmberError(f"task {task.name!r} has no corpus to search",
                         hint="Retrieval and RAG targets need a squad or beir dataset.")
    if t.kind == "retrieval":
        if res.searcher_for is None:
            raise EmberError("a retrieval target needs a searcher")
        return RetrievalTarget(res.searcher_for(task, corpus), t)
    if res.rag_for is None:
        raise EmberError("a rag target needs a RAG pipeline")
    pipeline, describe = res.rag_for(task, corpus)
    return RagTarget(pipeline, t, describe, seed)


def default_run_dir(evals_dir: Path, suite: SuiteConfig, target: dict[str, Any], seed: int) -> Path:
    """Same suite, target and seed -> same folder, so running again resumes or re-reports."""
    return evals_dir / f"{suite.name}-{fingerprint(suite.model_dump(), target, seed)[:10]}"


def run_task(suite: SuiteConfig, task: TaskConfig, res: Resources, cache: ResultsCache, *, limit: int | None,
             seed: int, progress: ProgressFn | None) -> tuple[TaskResult, dict[str, Any]]:
    check_metrics(task)
    path = Path(task.path) if Path(task.path).is_absolute() else res.data_root / task.path
    examples, corpus = datasets.load(task.format, path, task.split)
    chosen = select(examples, task, limit, seed)
    target = make_target(suite, task, corpus, res, seed)
    described = target.describe()
    task_key = task.model_dump(exclude={"limit", "shuffle", "metrics", "part"})
    keys = [example_key(task_key, ex.id, described) for ex in chosen]
    todo = [(k, ex) for k, ex in zip(keys, chosen, strict=True) if k not in cache]
    done = len(chosen) - len(todo)
    if progress:
        progress(task.name, done, len(chosen))
    step = suite.target.batch_size
    for start in range(0, len(todo), step):
        batch = todo[start:start + step]
        preds = target.predict(task, [ex for _, ex in batch])
        records = []
        for (key, ex), pred in zip(batch, preds, strict=True):
            p = asdict(pred)
            records.append({"key": key, "task": task.name, "id": ex.id, "input": ex.input,
                            "references": list(ex.references), "context": ex.context, "choices": list(ex.choices),
                            "gold": ex.gold, "qrels": ex.qrels, "prediction": p, "scores": grade(task, ex, p)})
        cache.append(records)
        done += len(batch)
        if progress:
            progress(task.name, done, len(chosen))
    records = [r for r in (cache.get(k) for k in keys) if r is not None]
    for r, ex in zip(records, chosen, strict=True):  # rescore: metrics may have been added since
        r["scores"] = grade(task, ex, r["prediction"])
    seconds = [r["prediction"].get("seconds", 0.0) for r in records]
    result = TaskResult(task.name, task.kind, aggregate(task, chosen, records), len(records),
                        sum(seconds) / len(seconds) if seconds else 0.0, records)
    return result, described


def run_suite(suite: SuiteConfig, res: Resources, run_dir: Path, *, limit: int | None = None, seed: int = 0,
              progress: ProgressFn | None = None) -> RunResult:
    started = time.time()
    cache = ResultsCache(run_dir / "results.jsonl")
    results: list[TaskResult] = []
    target: dict[str, Any] = {}
    for task in suite.tasks:
        result, target = run_task(suite, task, res, cache, limit=limit, seed=seed, progress=progress)
        results.append(result)
    return RunResult(suite.name, run_dir, target, seed, limit, results, started, time.time())
