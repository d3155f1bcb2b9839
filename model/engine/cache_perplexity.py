"""Perplexity read through the paged KV cache: what a narrower cache dtype costs in accuracy.

`ember.model.quantize.perplexity` runs each window in one pass, so no key or value ever goes through the cache.
Here the text goes in `chunk`-token prefills, as a long prompt or a conversation does: every token after the
first chunk attends to keys and values written to and read back from a `PagedKVCache` of the given dtype.
With the model's own dtype the two figures agree (tests check it); the gap for bf16 is the cache's error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ember.model.engine.paged_cache import PagedKVCache, StepLayout
from ember.model.errors import InvalidValueError
from ember.model.llama import Llama


@torch.inference_mode()
def cached_perplexity(model: Llama, ids: list[int], kv_dtype: torch.dtype, chunk: int = 64,
                      block_size: int = 16) -> float:
    """Perplexity of `ids` fed `chunk` tokens at a time through a cache stored in `kv_dtype`."""
    if len(ids) < 2 or chunk < 1:
        raise InvalidValueError("need at least 2 tokens and a positive chunk")
    dev = model.device
    num_blocks = -(-len(ids) // block_size)
    cache = PagedKVCache(model.config, num_blocks, block_size, kv_dtype, dev)
    table = torch.arange(num_blocks, device=dev)  # block i holds positions i*bs..(i+1)*bs-1: slot = position
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, chunk):
        end = min(start + chunk, len(ids) - 1)  # this chunk predicts ids[start + 1 : end + 1]
        cache.layout = StepLayout(slot_mapping=torch.arange(start, end, device=dev), num_decode=0,
                                  decode_tables=None, decode_mask=None, prefills=[(0, end - start, table, end)])
        positions = torch.arange(start, end, device=dev)[None]
        logits = model(torch.tensor([ids[start:end]], device=dev), positions, cache=cache)
        target = torch.tensor(ids[start + 1:end + 1], device=dev)
        nll += float(F.cross_entropy(logits[0].float(), target, reduction="sum"))
        count += end - start
    cache.layout = None
    return float(torch.exp(torch.tensor(nll / count)))
