"""Grammar-constrained decoding with llguidance: a lark grammar compiled for a tokenizer, run as a `LogitsProcessor`.

The grammars themselves come from their users: the agent's ReAct format (`ember.agents.grammar`) and the OpenAI
API's tool calls and structured outputs (`ember.model.tool_calls`). `GrammarProcessor` feeds the tokens sampled
so far to an `LLMatcher` and masks every token the grammar forbids, so a small model's output always parses.
llguidance is an optional dependency (the `agents` extra), imported on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ember.model.errors import EmberError


class GrammarError(EmberError):
    """A grammar could not be built (llguidance missing, or a schema it cannot compile)."""


def llg() -> Any:
    """The `llguidance` module, or a `GrammarError` that says how to install it."""
    try:
        import llguidance
    except ImportError:
        raise GrammarError("constrained decoding needs llguidance",
                           hint="pip install 'ember[agents]' (or llguidance>=1.0)") from None
    return llguidance


_tokenizers: dict[int, tuple[Any, Any]] = {}  # id(tokenizer) -> (tokenizer, LLTokenizer); keeps the id valid
_lock = threading.Lock()


def ll_tokenizer(tokenizer: Any, vocab_size: int, eos_ids: Iterable[int]) -> Any:
    """The llguidance tokenizer of an ember `Tokenizer` (built once per tokenizer: ~0.2 s)."""
    module = llg()
    with _lock:
        hit = _tokenizers.get(id(tokenizer))
        if hit is None:
            hit = tokenizer, module.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size,
                                                eos_token=sorted(eos_ids))
            _tokenizers[id(tokenizer)] = hit
        return hit[1]


def compile_lark(lark: str, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int], what: str = "grammar"
                 ) -> tuple[Any, Any]:
    """(grammar, LLTokenizer) for `lark`, checked against the tokenizer; a grammar llguidance refuses (a JSON
    schema feature it does not support, say) is a `GrammarError` naming the reason."""
    module = llg()
    tok = ll_tokenizer(tokenizer, vocab_size, eos_ids)
    grammar = module.LLMatcher.grammar_from_lark(lark)
    failed, messages = module.LLMatcher.validate_grammar_with_warnings(grammar, tok)
    if failed:
        reason = messages[0].splitlines()[0] if messages else "unknown reason"
        raise GrammarError(f"cannot build a {what}: {reason.removeprefix('at 1(8): ')}")
    return grammar, tok


class GrammarProcessor:
    """Masks the logits to what the grammar allows after the tokens generated so far."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self.matcher, self.vocab_size = matcher, vocab_size
        self.consumed = 0
        self.mask = np.full(((vocab_size + 31) // 32,), -1, dtype=np.int32)

    @classmethod
    def of(cls, grammar: Any, tok: Any, vocab_size: int) -> GrammarProcessor:
        return cls(llg().LLMatcher(tok, grammar), vocab_size)

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        new = output_ids[self.consumed:]
        if new:
            self.matcher.consume_tokens(new)
            self.consumed = len(output_ids)
        if self.matcher.is_error():
            raise GrammarError(f"the grammar matcher failed: {self.matcher.get_error()}")
        self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        v = logits.shape[-1]
        forbidden = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[:v] == 0  # bit i = token i allowed
        if v > forbidden.size:  # a model vocabulary larger than the tokenizer's
            forbidden = np.concatenate([forbidden, np.ones(v - forbidden.size, dtype=bool)])
        if logits.device.type == "cpu" and logits.is_contiguous():  # numpy: no torch thread-pool round trip
            logits.numpy()[forbidden] = -np.inf
            return logits
        return logits.masked_fill_(torch.from_numpy(forbidden).to(logits.device), float("-inf"))
