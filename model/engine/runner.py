"""`ModelRunner`: flatten a scheduled batch into one forward pass over the paged cache."""

from __future__ import annotations

import torch

from ember.model.engine.paged_cache import PagedKVCache, StepLayout
from ember.model.engine.scheduler import Batch
from ember.model.llama import Llama


class ModelRunner:
    def __init__(self, model: Llama, cache: PagedKVCache) -> None:
        self.model = model
        self.cache = cache
        self.device = model.device
        self.block_size = cache.block_size

    def _slots(self, table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, end)]

    @torch.inference_mode()
    def run(self, batch: Batch) -> torch.Tensor:
        """fp32 logits (len(batch.seqs), V) for the last token of each sequence, in `batch.seqs` order."""
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        for seq in batch.decode:
            p = len(seq) - 1
            ids.append(seq.token_ids[p])
            pos.append(p)
            slots += self._slots(seq.block_table, p, p + 1)
        prefills = []
        select = list(range(len(batch.decode)))
        for seq in batch.prefill:
            start, end = seq.num_computed_tokens, len(seq)
            prefills.append((len(ids), end - start, seq.block_table, end))
            ids += seq.token_ids[start:end]
            pos += range(start, end)
            slots += self._slots(seq.block_table, start, end)
            select.append(len(ids) - 1)
        dev = self.device
        decode_tables = decode_mask = None
        if batch.decode:
            width = max(len(s.block_table) for s in batch.decode)
            decode_tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in batch.decode],
                                         device=dev)
            lengths = torch.tensor([len(s) for s in batch.decode], device=dev)
            decode_mask = (torch.arange(width * self.block_size, device=dev)[None, :] < lengths[:, None])[:, None, None]
        self.cache.layout = StepLayout(
            slot_mapping=torch.tensor(slots, device=dev),
            num_decode=len(batch.decode),
            decode_tables=decode_tables,
            decode_mask=decode_mask,
            prefills=[(s, n, torch.tensor(t, device=dev), ctx) for s, n, t, ctx in prefills],
        )
        x = torch.tensor([ids], device=dev)
        positions = torch.tensor([pos], device=dev)
        logits = self.model(x, positions, cache=self.cache, select=torch.tensor(select, device=dev))
        self.cache.layout = None
        return logits[0].float()
