"""`Sequence`: one request's tokens, blocks and state as it moves through the scheduler."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum, auto

import torch

from ember.model.outputs import FinishReason, TokenLogprob
from ember.model.sampling_params import SamplingParams

_ids = itertools.count()


class Status(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    token_ids: list[int]
    params: SamplingParams
    block_size: int
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # prefix-cache hits of the current admission (tokens not recomputed)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_hashed_blocks: int = 0  # leading blocks already registered in the prefix cache
    finish_reason: FinishReason | None = None
    text: str = ""  # the final output text, set when the sequence finishes
    logprobs: list[TokenLogprob] = field(default_factory=list)
    generator: torch.Generator | None = None
    # timings (perf_counter seconds)
    arrival: float = field(default_factory=time.perf_counter)
    first_scheduled: float | None = None
    first_token: float | None = None
    finished_at: float | None = None
    preemptions: int = 0
    prompt_cached_tokens: int = 0  # prefix-cache hits on first admission, for usage reporting

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_blocks(self) -> int:
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    def block_tokens(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size:(i + 1) * self.block_size]

    @property
    def is_finished(self) -> bool:
        return self.status == Status.FINISHED
