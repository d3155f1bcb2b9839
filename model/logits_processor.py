"""`LogitsProcessor`: a per-request hook on the next-token logits, run by our engine before sampling.

Constrained decoding (a grammar matcher that masks tokens the grammar forbids) plugs in here; model/ knows
only this Protocol, the grammars live in ember.agents.grammar. A processor is stateful per request: it is
called once per generated token with every output token so far (it may consume the new ones) and returns
the logits to sample from. Only the `ember` backend runs processors; the others refuse requests that carry
them rather than ignore them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LogitsProcessor(Protocol):
    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        """logits: (V,) fp32 of one sequence's next token; may be modified in place and returned."""
        ...
