"""`RefusalBias`: the calibration knob of "the documents do not say" (`ember.model.prompts.REFUSAL`).

Small models answer almost every question, even one the passages do not answer (SQuAD v2's unanswerable
questions name things the paragraph almost says). The bias adds `bias` to the logits of the refusal's first
`prefix` tokens while the reply so far is that refusal's beginning: the model then refuses when log P(refusal
prefix) + prefix * bias beats its best answer, a threshold tuned on a held-out tuning split (evals/RESULTS.md).
It runs only on backends that run logits processors (our engine); elsewhere the prompt alone decides.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.model.prompts import REFUSAL


class RefusalBias:
    def __init__(self, tokenizer: Any, bias: float, prefix: int = 2) -> None:
        self.ids: list[int] = tokenizer.encode(REFUSAL, add_special_tokens=False)[:prefix]
        self.bias = bias

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        n = len(output_ids)
        if n < len(self.ids) and output_ids == self.ids[:n]:
            logits[self.ids[n]] += self.bias
        return logits
