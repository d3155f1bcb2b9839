"""`ember eval run|compare|check`: run evaluation suites, compare two runs, gate on regressions.

This is where settings become the harness's resources (backend, scorer, embedder, collections, RAG
pipeline); ember.evals itself reads no settings.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ember.platform.cli.common import console, settings_from, wiring_from

if TYPE_CHECKING:
    from ember.evals.datasets import Corpus
    from ember.evals.harness import Resources
    from ember.evals.suite import SuiteConfig, TaskConfig
    from ember.evals.targets import RagLike, Searcher
    from ember.platform.wiring import Wiring
    from ember.retrieval.retriever import Retriever

app = typer.Typer(help="Evaluate models, retrieval and RAG on suites of tasks; compare runs; gate regressions.",
                  no_args_is_help=True)
DEFAULT_DATA = Path("../shared/datasets")


def shipped_suites() -> dict[str, Path]:
    folder = resources.files("ember.evals") / "suites"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def load_suite(spec: str) -> SuiteConfig:
    """A path to a suite TOML, or the name of a shipped suite (`squad-rag`, `squad-closed`, ...)."""
    from ember.evals.suite import SuiteConfig
    from ember.model.errors import ConfigError

    path = Path(spec)
    if not path.is_file():
        known = shipped_suites()
        if spec not in known:
            raise ConfigError(f"no suite file {spec!r} and no shipped suite of that name",
                              hint=f"Shipped suites: {', '.join(sorted(known))}.")
        path = known[spec]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return SuiteConfig.parse(data, str(path))


def build_resources(w: Wiring, suite: SuiteConfig, data_root: Path) -> Resources:
    """The harness's resources from the wiring: the backend (and its scorer) and the suite's corpora."""
    from ember.evals.harness import Resources

    res = Resources(data_root=data_root, model_id=w.model_name, adapter=w.adapter())
    t = suite.target
    if t.kind in ("model", "rag", "agent", "grounded"):
        with console.status(f"Loading {res.model_id} ({w.settings.backend})…", spinner="dots"):
            res.backend = w.backend()
        needs_ll = any(task.kind == "perplexity" or (task.kind == "choice" and task.choice_mode == "loglikelihood")
                       for task in suite.tasks)
        if t.kind == "model" and needs_ll and res.backend.capabilities.scoring_model is not None:
            from ember.evals.scoring import LlamaScorer

            res.scorer = LlamaScorer.from_backend(res.backend)
    corpora = EvalCorpora(w, suite)
    if t.kind in ("retrieval", "rag"):
        res.searcher_for = corpora.searcher
    if t.kind == "rag":
        res.rag_for = corpora.rag
    if t.kind == "agent" and "search" in t.tools:
        res.retriever_for = corpora._retriever
    return res


class EvalCorpora:
    """A task's corpus as an eval collection (built once), searched or answered from through the wiring."""

    def __init__(self, wiring: Wiring, suite: SuiteConfig) -> None:
        self.wiring, self.suite = wiring, suite

    def _retriever(self, task: TaskConfig, corpus: Corpus) -> tuple[Retriever, dict[str, Any]]:
        from rich.progress import Progress

        from ember.evals.corpus_index import build_collection, collection_name

        embedder = self.wiring.embedder()
        name = collection_name(Path(task.path).stem, corpus, embedder.info.model_id)
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task(f"Indexing {len(corpus.docs)} passages into {name}", total=len(corpus.docs))
            col = build_collection(self.wiring.settings.data_dir, name, corpus, embedder,
                                   lambda done, total: bar.update(job, completed=done))
        t = self.suite.target
        retriever = self.wiring.retriever_for(col, embedder, mode=t.mode, k=t.k)
        return retriever, {"collection": name, "embedder": embedder.info.model_id}

    def searcher(self, task: TaskConfig, corpus: Corpus) -> Searcher:
        from ember.evals.searcher import RetrieverSearcher

        retriever, describe = self._retriever(task, corpus)
        return RetrieverSearcher(retriever, describe)

    def rag(self, task: TaskConfig, corpus: Corpus) -> tuple[RagLike, dict[str, Any]]:
        from dataclasses import asdict, replace

        retriever, describe = self._retriever(task, corpus)
        t = self.suite.target
        config = self.wiring.rag_config(mode=t.mode, k=t.k, max_tokens=t.max_tokens, rewrite=False)
        if t.refusal_bias is not None:
            config = replace(config, refusal_bias=t.refusal_bias)
        from ember.evals.suite import fingerprint
        from ember.model import prompts

        return self.wiring.rag_on(retriever, config), {**describe, "model": self.wiring.model_name,
                                                       "rag": asdict(config),
                                                       "prompt": fingerprint(prompts.RAG_SYSTEM, prompts.DEMOS)[:12]}


@app.command()
def run(ctx: typer.Context,
        suite: Annotated[str, typer.Argument(help="a suite TOML file, or a shipped suite's name")],
        limit: Annotated[int | None, typer.Option(help="at most N examples per task")] = None,
        seed: Annotated[int, typer.Option(help="seed for sampling examples and for generation")] = 0,
        model: Annotated[str | None, typer.Option(help="model to evaluate (default: settings.model)")] = None,
        data: Annotated[Path, typer.Option(help="folder that suite dataset paths are relative to")] = DEFAULT_DATA,
        out: Annotated[Path | None, typer.Option(
            help="run folder (default DATA_DIR/evals/<suite>-<hash of suite, model, seed>): rerunning resumes")] = None,
        part: Annotated[str | None, typer.Option(
            help="tune | heldout | all: the tuning split, the held-back rest (what is reported), or both "
                 "(default: each task's own part)")] = None,
        ) -> None:
    """Run a suite and write results.jsonl, report.json and report.html into the run folder.

    Finished examples are cached in the run folder, so an interrupted run picks up where it stopped and a
    rerun only re-scores. Shipped suites: squad-closed, squad-rag, squad-unanswerable, squad-retrieval,
    msmarco-retrieval, scitldr, arc-easy, gsm8k-agent, hotpot-agent, gate."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ember.evals import report
    from ember.evals.harness import default_run_dir, run_suite

    s = settings_from(ctx)
    cfg = load_suite(suite)
    if part is not None:
        from ember.model.errors import InvalidValueError

        if part not in ("tune", "heldout", "all"):
            raise InvalidValueError(f"--part must be tune, heldout or all, got {part!r}")
        cfg = cfg.model_copy(update={"tasks": [t.model_copy(update={"part": part}) for t in cfg.tasks]})
    w = wiring_from(ctx, model=model)
    key: dict[str, Any] = {"model": w.model_name, "backend": s.backend, "dtype": s.dtype,
                           "quantization": s.engine.quantization}
    if (adapter := w.adapter()) is not None:  # the run folder's key holds the adapter's hash
        from ember.model.registry import sha256_file

        key["adapter"] = sha256_file(adapter / "adapter_model.safetensors")[:12]
    run_dir = out or default_run_dir(s.data_dir / "evals", cfg, key, seed)
    res = build_resources(w, cfg, data)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as bar:
            jobs: dict[str, Any] = {}

            def progress(task: str, done: int, total: int) -> None:
                if task not in jobs:
                    jobs[task] = bar.add_task(task, total=total)
                bar.update(jobs[task], completed=done, total=total)

            result = run_suite(cfg, res, run_dir, limit=limit, seed=seed, progress=progress)
    finally:
        w.close()
    json_path, html_path = report.write(result)
    for t in result.tasks:
        figures = ", ".join(f"{k} {v:.2f}" for k, v in t.metrics.items())
        console.print(f"[bold]{t.name}[/] ({t.examples} examples, {t.seconds_per_example:.3f} s each): {figures}")
    console.print(f"Report: {html_path}\nJSON:   {json_path}")


@app.command()
def compare(a: Annotated[Path, typer.Argument(help="first run folder or report.json")],
            b: Annotated[Path, typer.Argument(help="second run folder or report.json")],
            out: Annotated[Path | None, typer.Option(help="HTML file to write (default: compare.html in B's folder)")]
            = None) -> None:
    """Side-by-side figures of two runs and the examples whose score changed (HTML)."""
    from ember.evals import report

    ra, rb = report.load(a), report.load(b)
    for task, m, va, vb in report.metric_rows(ra, rb):
        fa = "–" if va is None else f"{va:.2f}"
        fb = "–" if vb is None else f"{vb:.2f}"
        delta = f"{vb - va:+.2f}" if va is not None and vb is not None else ""
        console.print(f"{task:<20} {m:<20} {fa:>8} {fb:>8} {delta:>8}")
    target = out or ((b if b.is_dir() else b.parent) / "compare.html")
    target.write_text(report.compare_html(ra, rb, str(a), str(b)), encoding="utf-8")
    console.print(f"Comparison: {target}")


@app.command()
def check(run_: Annotated[Path, typer.Argument(metavar="RUN", help="run folder or report.json")],
          baseline: Annotated[Path, typer.Option(help="baseline report.json (or a run folder)")],
          margin: Annotated[float, typer.Option(help="allowed drop, in metric points (EM 80.0 -> 79.0 is 1.0)")] = 1.0,
          ) -> None:
    """Exit 1 when any baseline metric dropped by more than MARGIN points (perplexity: rose), else 0."""
    from ember.evals import report

    problems = report.regressions(report.load(run_), report.load(baseline), margin)
    if problems:
        for p in problems:
            console.print(f"[red]regression[/] {p}")
        raise typer.Exit(1)
    console.print(f"No metric dropped by more than {margin} points against {baseline}.")
