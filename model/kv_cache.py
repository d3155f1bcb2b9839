"""The KV-cache seam between the transformer and whatever drives it.

`Llama.forward` calls `cache.update(layer, k, v)` once per layer and `cache.advance(T)` after the last
layer; an implementation decides where keys and values live. `StaticKVCache` is one preallocated
contiguous buffer (gpt-fast style) for the plain generation path; the engine brings a paged one.
"""

from __future__ import annotations

from typing import Protocol

import torch
from ember.model.config import LlamaConfig


class KVCache(Protocol):
    @property
    def length(self) -> int:
        """Tokens already cached (the position of the next token to write)."""
        ...

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, n_kv, T, hd) keys/values; return all keys/values (B, n_kv, S, hd)."""
        ...

    def advance(self, n: int) -> None:
        """Called once per forward, after every layer has stored its `n` new tokens."""
        ...


class StaticKVCache:
    """Preallocated (layers, B, n_kv, max_len, hd) buffers; rows of the batch share one length."""

    def __init__(self, config: LlamaConfig, batch_size: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (config.num_hidden_layers, batch_size, config.n_kv_heads, max_len, config.dim_head)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self._length, self._length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} tokens > max_len={self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self._length += n

    def reset(self) -> None:
        self._length = 0
