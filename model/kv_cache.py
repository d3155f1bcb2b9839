"""The KV-cache seam between the transformer and whatever drives it.

`Llama.forward` calls `cache.attend(layer, q, k, v, mask)` once per layer, handing over this step's
rotated queries/keys and values, and `cache.advance(T)` after the last layer. An implementation decides
where keys and values live and how attention reads them: the engine's `PagedKVCache` stores them in
fixed-size blocks and reads through block tables.
"""

from __future__ import annotations

from typing import Protocol

import torch


class KVCache(Protocol):
    @property
    def length(self) -> int:
        """Tokens already cached (the position of the next token to write)."""
        ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Store this step's (B, n_kv, T, hd) keys/values; return attention output (B, n_heads, T, hd)."""
        ...

    def advance(self, n: int) -> None:
        """Called once per forward, after every layer has stored its `n` new tokens."""
        ...
