"""The KV-cache seam between the transformer and whatever drives it.

`Llama.forward` calls `cache.attend(layer, q, k, v)` once per layer, handing over this step's rotated
queries/keys and values at the positions the caller gave. An implementation decides
where keys and values live and how attention reads them: the engine's `PagedKVCache` stores them in
fixed-size blocks and reads through block tables.
"""

from __future__ import annotations

from typing import Protocol

import torch


class KVCache(Protocol):
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store this step's (B, n_kv, T, hd) keys/values; return attention output (B, n_heads, T, hd)."""
        ...
