"""Log-likelihood scoring of continuations: what multiple-choice accuracy and perplexity need.

The `Backend` Protocol returns log-probabilities of generated tokens only, so scoring a given text goes
through a `Scorer`. `LlamaScorer` runs our `Llama` directly (teacher forcing, one batched forward per
group of requests, no KV cache). Tokenisation follows lm-evaluation-harness: the continuation's tokens are
those of `encode(context + continuation)` after `encode(context)`, with trailing spaces of the context
moved onto the continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ember.model.backends.base import Backend
from ember.model.errors import InvalidValueError


@dataclass(frozen=True, slots=True)
class LogLikelihood:
    logprob: float  # sum over the continuation's tokens (natural log)
    tokens: int  # number of continuation tokens scored
    greedy: bool  # every continuation token was the model's argmax
    token_logprobs: tuple[float, ...] = ()


class Scorer(Protocol):
    name: str

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]:
        """log P(continuation | context) for each (context, continuation) pair."""
        ...


class LlamaScorer:
    name = "llama"

    def __init__(self, model: Any, tokenizer: Any, max_batch_tokens: int = 4096) -> None:
        self.model, self.tokenizer, self.max_batch_tokens = model, tokenizer, max_batch_tokens
        self.max_len = int(model.config.max_position_embeddings)

    @classmethod
    def from_backend(cls, backend: Backend) -> LlamaScorer:
        """The model inside a backend that scores in process (shares its weights; no second copy)."""
        c = backend.capabilities
        if c.scoring_model is None or c.tokenizer is None:
            from ember.model.errors import EmberError

            raise EmberError(f"the {backend.name} backend cannot score given text",
                             hint="log-likelihood scoring (multiple choice, perplexity) needs backend = \"ember\"")
        return cls(c.scoring_model, c.tokenizer)

    def _pair(self, context: str, continuation: str) -> tuple[list[int], int]:
        n_space = len(context) - len(context.rstrip())
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context) if context else []
        if not ctx:  # nothing to condition on: start from the EOS token, as lm-eval does
            eos = self.tokenizer.eos_token_id
            whole, ctx = ([eos, *whole], [eos]) if eos is not None else (whole, whole[:1])
        n_cont = len(whole) - len(ctx)
        if n_cont < 1:
            raise InvalidValueError(f"continuation {continuation!r} has no tokens of its own")
        return whole[-(self.max_len + 1):], n_cont

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]:
        import torch

        pairs = [self._pair(c, x) for c, x in requests]
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))
        out: list[LogLikelihood | None] = [None] * len(pairs)
        start = 0
        while start < len(order):
            width = len(pairs[order[start]][0]) - 1
            size = max(1, self.max_batch_tokens // max(width, 1))
            batch = order[start:start + size]
            start += len(batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                seq = pairs[i][0][:-1]
                ids[row, :len(seq)] = torch.tensor(seq)  # right padding: causal attention never sees it
            with torch.inference_mode():
                logits = self.model(ids.to(self.model.device)).float().log_softmax(-1).cpu()  # (B, T, V)
            for row, i in enumerate(batch):
                seq, n = pairs[i]
                targets = torch.tensor(seq[-n:])
                lp = logits[row, len(seq) - 1 - n:len(seq) - 1]  # (n, V): positions predicting the continuation
                chosen = lp.gather(1, targets[:, None])[:, 0]
                out[i] = LogLikelihood(float(chosen.sum()), n, bool((lp.argmax(-1) == targets).all()),
                                       tuple(float(x) for x in chosen))
        return [x for x in out if x is not None]
