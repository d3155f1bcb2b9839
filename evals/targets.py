"""What a suite evaluates: a closed-book model, retrieval alone, a RAG pipeline, a grounded reader, or an agent.

"grounded" answers each question from its own gold paragraph with the RAG prompt (`ember.model.prompts`, the
one the server sends, with the paragraph as the only passage): the reader alone, without retrieval.

Every target turns a batch of `Example`s into `Prediction`s and describes itself as a dict, which goes into
the results-cache key so a changed model, prompt or k re-runs instead of reusing stale answers.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ember.evals.datasets import Example
from ember.evals.scoring import Scorer
from ember.evals.suite import TargetConfig, TaskConfig, fingerprint
from ember.model.backends.base import Backend
from ember.model.errors import EmberError
from ember.model.sampling_params import SamplingParams

CITE_MARK = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


@dataclass(slots=True)
class Passage:
    id: str  # the corpus document id (several passages may share one)
    text: str
    score: float = 0.0


@dataclass(slots=True)
class Prediction:
    text: str = ""  # generated answer or summary
    choice: int | None = None  # the option picked by letter
    choice_logprobs: list[float] | None = None  # log-likelihood of each option (loglikelihood mode)
    logprob: float | None = None  # perplexity tasks: total log-likelihood of the text...
    tokens: int | None = None  # ...over this many tokens
    retrieved: list[Passage] = field(default_factory=list)  # ranked, best first
    cited: list[Passage] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the batch divided by its size
    raw: str | None = None  # the reply before scoring clean-up (RAG: with its [n] citation marks)
    refused: bool | None = None  # rag, grounded: the answer is "the documents do not say"


class Target(Protocol):
    def describe(self) -> dict[str, Any]:
        ...

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        ...


class Searcher(Protocol):
    """Ranked passages for a query: an Ember Retriever over a collection, mapped to corpus ids."""

    def describe(self) -> dict[str, Any]:
        ...

    def search(self, query: str, k: int) -> list[Passage]:
        ...


class RagLike(Protocol):
    """`ember.retrieval.rag.RagPipeline`'s shape: `answer(question) -> RagAnswer(text, citations, ...)`."""

    def answer(self, question: str, history: Any = None, params: Any = None) -> Any:
        ...


def render(template: str, example: Example) -> str:
    options = "\n".join(f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(example.choices))
    fields = {"input": example.input, "context": example.context or "", "choices": options,
              "title": str(example.metadata.get("title", ""))}
    try:
        return template.format_map(fields)
    except (KeyError, ValueError) as e:
        raise EmberError(f"prompt template {template!r} is invalid: {e}",
                         hint="Use {input}, {context}, {choices} and {title}; write {{ and }} for braces.") from None


def _timed(preds: list[Prediction], t0: float) -> list[Prediction]:
    each = (time.perf_counter() - t0) / max(len(preds), 1)
    for p in preds:
        p.seconds = each
    return preds


class ModelTarget:
    """A model answering from its weights (plus whatever context the prompt template puts in)."""

    def __init__(self, backend: Backend, config: TargetConfig, model_id: str, scorer: Scorer | None = None,
                 seed: int = 0) -> None:
        self.backend, self.config, self.model_id, self.scorer, self.seed = backend, config, model_id, scorer, seed

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"kind": "model", "model": self.model_id, "backend": self.backend.name, "chat": c.chat,
                "max_tokens": c.max_tokens, "temperature": c.temperature, "stop": c.stop, "seed": self.seed}

    def _params(self, task: TaskConfig) -> SamplingParams:
        c = self.config
        max_tokens = 8 if task.kind == "choice" else c.max_tokens
        return SamplingParams(max_tokens=max_tokens, temperature=c.temperature, stop=list(c.stop), seed=self.seed)

    def generate(self, task: TaskConfig, examples: Sequence[Example]) -> list[str]:
        prompts = [render(task.prompt, ex) for ex in examples]
        params = self._params(task)
        if not self.config.chat:
            return [c.text for c in self.backend.generate(list(prompts), params)]
        convs = [([{"role": "system", "content": task.system}] if task.system else [])
                 + [{"role": "user", "content": p}] for p in prompts]
        tokenizer = self.backend.capabilities.tokenizer
        if tokenizer is not None:  # one batched generate call
            texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True) for m in convs]
            ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
            return [c.text for c in self.backend.generate(ids, params)]
        from concurrent.futures import ThreadPoolExecutor  # a remote backend: concurrent chat requests

        with ThreadPoolExecutor(max_workers=self.config.batch_size) as pool:
            return [c.text for c in pool.map(lambda m: self.backend.chat(m, params), convs)]

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        t0 = time.perf_counter()
        if task.kind in ("qa", "summarize") or (task.kind == "choice" and task.choice_mode == "letter"):
            texts = self.generate(task, examples)
            if task.kind != "choice":
                return _timed([Prediction(text=t.strip()) for t in texts], t0)
            from ember.evals.metrics.choice import parse_letter

            return _timed([Prediction(text=t, choice=parse_letter(t, len(ex.choices)))
                           for t, ex in zip(texts, examples, strict=True)], t0)
        if self.scorer is None:
            raise EmberError(f"task {task.name!r} needs log-likelihood scoring, which this backend does not offer",
                             hint='Use backend = "ember", or choice_mode = "letter" for multiple choice.')
        if task.kind == "choice":
            pairs = [(render(task.prompt, ex), task.continuation.format(choice=c))
                     for ex in examples for c in ex.choices]
            lls = iter(self.scorer.loglikelihood(pairs))
            preds = [Prediction(choice_logprobs=[next(lls).logprob for _ in ex.choices]) for ex in examples]
            return _timed(preds, t0)
        if task.kind == "perplexity":
            lls_p = self.scorer.loglikelihood([("", ex.input) for ex in examples])
            return _timed([Prediction(logprob=ll.logprob, tokens=ll.tokens) for ll in lls_p], t0)
        raise EmberError(f"a model target cannot run {task.kind} task {task.name!r}",
                         hint='Retrieval tasks need [target] kind = "retrieval" or "rag".')


class RetrievalTarget:
    def __init__(self, searcher: Searcher, config: TargetConfig) -> None:
        self.searcher, self.config = searcher, config

    def describe(self) -> dict[str, Any]:
        return {"kind": "retrieval", "k": self.config.k, **self.searcher.describe()}

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        t0 = time.perf_counter()
        return _timed([Prediction(retrieved=self.searcher.search(ex.input, self.config.k)) for ex in examples], t0)


class RagTarget:
    """Questions through `RagPipeline.answer`. Its citations are the passages it put in the prompt, in rank
    order (what recall@k is computed on); those the answer refers to as [n] are the cited ones. The [n]
    markers are removed from the answer before it is scored (the raw reply is kept too)."""

    def __init__(self, pipeline: RagLike, config: TargetConfig, describe: dict[str, Any], seed: int = 0) -> None:
        self.pipeline, self.config, self._describe, self.seed = pipeline, config, describe, seed

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"kind": "rag", "max_tokens": c.max_tokens, "temperature": c.temperature, "seed": self.seed,
                **self._describe}

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        from concurrent.futures import ThreadPoolExecutor

        from ember.evals.corpus_index import doc_id

        c = self.config
        params = SamplingParams(max_tokens=c.max_tokens, temperature=c.temperature, stop=list(c.stop), seed=self.seed)

        def one(ex: Example) -> Prediction:
            ans = self.pipeline.answer(ex.input, params=params)
            used = [Passage(doc_id(x.source), x.text, float(x.score)) for x in ans.citations]
            cited = [p for p, x in zip(used, ans.citations, strict=True) if getattr(x, "cited", True)]
            return Prediction(text=CITE_MARK.sub("", ans.text).strip(), raw=ans.text, retrieved=used, cited=cited,
                              refused=bool(getattr(ans, "refused", False)))

        t0 = time.perf_counter()
        # the pipeline is synchronous; concurrent calls let the engine batch their generations
        with ThreadPoolExecutor(max_workers=c.batch_size) as pool:
            return _timed(list(pool.map(one, examples)), t0)


class GroundedTarget:
    """The reader alone: each question with its gold paragraph as passage [1], through the RAG prompt."""

    def __init__(self, backend: Backend, config: TargetConfig, model_id: str, seed: int = 0,
                 adapter: Path | None = None) -> None:
        self.backend, self.config, self.model_id, self.seed = backend, config, model_id, seed
        self.adapter = adapter

    def _bias(self) -> float:
        from ember.model import prompts

        c = self.config
        return prompts.refusal_bias(self.model_id, self.adapter) if c.refusal_bias is None else c.refusal_bias

    def describe(self) -> dict[str, Any]:
        from ember.model import prompts

        c = self.config
        return {"kind": "grounded", "model": self.model_id, "backend": self.backend.name, "max_tokens": c.max_tokens,
                "temperature": c.temperature, "refusal_bias": self._bias(), "seed": self.seed,
                "prompt": fingerprint(prompts.RAG_SYSTEM, prompts.DEMOS)[:12],
                "demos": prompts.rag_demos(self.adapter)}

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        from ember.model import prompts

        c = self.config
        params = SamplingParams(max_tokens=c.max_tokens, temperature=c.temperature, stop=list(c.stop), seed=self.seed)
        caps = self.backend.capabilities
        bias = self._bias()
        if bias and caps.logits_processors and caps.tokenizer is not None:
            from ember.model.refusal import RefusalBias

            params = replace(params, logits_processors=[RefusalBias(caps.tokenizer, bias)])
        demos = prompts.rag_demos(self.adapter)
        convs = [prompts.rag_messages([prompts.PromptPassage(ex.context or "", str(ex.metadata.get("title", "")))],
                                      ex.input, demos=demos) for ex in examples]
        t0 = time.perf_counter()
        tokenizer = caps.tokenizer
        if tokenizer is not None:  # one batched generate call
            ids = [tokenizer.encode(tokenizer.apply_chat_template(m, add_generation_prompt=True),
                                    add_special_tokens=False) for m in convs]
            texts = [x.text for x in self.backend.generate(ids, params)]
        else:
            texts = [self.backend.chat(m, params).text for m in convs]
        return _timed([Prediction(text=prompts.strip_citations(t), raw=t, refused=prompts.is_refusal(t))
                       for t in texts], t0)


class AgentTarget:
    """Each example's prompt as the task of an `ember.agents` agent with the built-in tools (`tools`: calculator,
    current_time, and "search": search_collection over the task's corpus as a collection, whose hits are whole
    paragraphs, so reading a document adds nothing);
    its final answer is the prediction, scored like any qa answer. The run's status, step count and calls are
    kept in `raw`. Examples run concurrently so the engine batches their replies."""

    def __init__(self, backend: Backend, config: TargetConfig, model_id: str, seed: int = 0,
                 search: tuple[Any, dict[str, Any]] | None = None) -> None:
        self.backend, self.config, self.model_id, self.seed = backend, config, model_id, seed
        self.search = search  # (retriever, its description)

    def describe(self) -> dict[str, Any]:
        from ember.model import prompts

        c = self.config
        return {"kind": "agent", "model": self.model_id, "max_steps": c.max_steps, "max_tokens": c.max_tokens,
                "temperature": c.temperature, "tools": list(c.tools), "seed": self.seed,
                "search": self.search[1] if self.search else None,
                "prompt": fingerprint(prompts.AGENT_NATIVE_SYSTEM, prompts.AGENT_REACT_SYSTEM, prompts.AGENT_CODE_RULE,
                                      prompts.CODE_RESULT, prompts.DEMO_RUNS)[:12]}

    def predict(self, task: TaskConfig, examples: Sequence[Example]) -> list[Prediction]:
        from concurrent.futures import ThreadPoolExecutor

        from ember.agents.builtins import calculator_tool, collection_tools, current_time
        from ember.agents.react import Agent, AgentConfig
        from ember.agents.tools import Tool

        c = self.config
        tools: list[Tool] = []
        if "calculator" in c.tools:
            tools.append(calculator_tool())
        if "current_time" in c.tools:
            tools.append(Tool.from_function(current_time))
        if "search" in c.tools and self.search is not None:
            tools += collection_tools(self.search[0], max_chars=800)[:1]  # search_collection: hits are whole paragraphs
        agent = Agent(self.backend, tools, AgentConfig(max_steps=c.max_steps, max_tokens=c.max_tokens,
                                                       temperature=c.temperature))

        def one(ex: Example) -> Prediction:
            trace = agent.run(render(task.prompt, ex))
            calls = "; ".join(f"{s.tool} {json.dumps(s.arguments, ensure_ascii=False)}" for s in trace.steps
                              if s.kind == "action")
            return Prediction(text=trace.answer or "",
                              raw=f"{trace.status} after {len(trace.steps)} steps: {calls}"[:2000])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=c.batch_size) as pool:
            return _timed(list(pool.map(one, examples)), t0)
