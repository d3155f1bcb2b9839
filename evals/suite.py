"""A suite file (TOML): which tasks to run, how to prompt, what to score, against which target.

Validated with pydantic (`extra="forbid"`) because it is a file a person writes. Paths are relative to the
data folder the CLI is given (`--data-dir`, default `../shared/datasets`). Example:

    name = "squad-closed"
    [target]
    kind = "model"            # model | rag | retrieval | agent | grounded
    max_tokens = 32
    [[tasks]]
    name = "squad"
    kind = "qa"               # qa | summarize | choice | retrieval | perplexity
    format = "squad"          # jsonl | squad | beir | mmlu_csv | choice_jsonl | scitldr
    path = "squad/dev-v1.1.json"
    prompt = "{context}\n\nQuestion: {input}\nAnswer:"
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ember.evals.datasets import FORMATS
from ember.model.errors import ConfigError

TaskKind = Literal["qa", "summarize", "choice", "retrieval", "perplexity"]
AgentTool = Literal["calculator", "current_time", "search"]
TargetKind = Literal["model", "rag", "retrieval", "agent", "grounded"]
DEFAULT_METRICS: dict[str, list[str]] = {
    "qa": ["exact_match", "f1"],
    "summarize": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "choice": ["acc", "acc_norm"],
    "retrieval": ["recall@5", "mrr@10", "ndcg@10"],
    "perplexity": ["perplexity"],
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Strict):
    name: str
    kind: TaskKind
    format: str
    path: str
    split: str = "test"
    prompt: str = "{input}"  # fields: {input}, {context}, {choices} (lettered), {title}
    system: str | None = None
    metrics: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)  # the suite's own cap; --limit caps further
    shuffle: bool = False  # sample with the run's seed instead of taking the first examples
    part: Literal["all", "tune", "heldout"] = "all"  # the tuning split (ember.evals.split) or the held-back rest
    # drop examples from the articles the grounded-QA adapter trains on (ember.model.train.grounded.TRAIN_TITLES)
    unseen_by_training: bool = False
    stem: bool = True  # ROUGE with Porter stemming
    choice_mode: Literal["loglikelihood", "letter"] = "loglikelihood"
    continuation: str = " {choice}"  # what is scored after the prompt in loglikelihood mode

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r}; use one of {', '.join(FORMATS)}")
        return v

    @property
    def metric_names(self) -> list[str]:
        return self.metrics or DEFAULT_METRICS[self.kind]


class TargetConfig(_Strict):
    kind: TargetKind = "model"
    chat: bool = True  # format prompts with the model's chat template
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    stop: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=16, ge=1)  # requests handed to the backend at once
    k: int = Field(default=5, ge=1)  # passages retrieved (retrieval, rag)
    max_steps: int = Field(default=8, ge=1)  # agent: model replies per task
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    refusal_bias: float | None = None  # rag, grounded: RagConfig.refusal_bias; None = the model's own (prompts)
    # agent: "search" = search_collection over the task's corpus as a collection
    tools: list[AgentTool] = Field(default_factory=lambda: list[AgentTool](["calculator", "current_time"]))


class SuiteConfig(_Strict):
    name: str
    description: str = ""
    target: TargetConfig = Field(default_factory=TargetConfig)
    tasks: list[TaskConfig] = Field(min_length=1)

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "suite") -> SuiteConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"{source}: {problems}") from None


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (cache keys, run ids)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
