"""Paged KV-cache bookkeeping: a pool of fixed-size blocks, ref counts, and a prefix cache.

A full block is keyed by a chained hash of every token up to its end, so two sequences that share a
prefix (a system prompt, a chat history) share its blocks and compute them once. Blocks whose ref count
drops to zero keep their contents and hash and go to the back of the free list: they are reused by a
later hit, or evicted least-recently-freed-first when a new block is needed.
"""

from __future__ import annotations

from collections import OrderedDict

from ember.model.engine.sequence import Sequence


def block_hash(tokens: list[int], prefix: int) -> int:
    """Chained hash of a block's tokens and everything before it (int hashing is not randomised)."""
    return hash((prefix, *tokens))


class Block:
    __slots__ = ("block_id", "hash", "ref_count", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash = -1  # -1 = not a full, hashed block
        self.token_ids: list[int] = []


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        assert num_blocks > 0 and block_size > 0
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU order
        self.cached: dict[int, int] = {}  # hash -> block id
        self.prefix_caching = enable_prefix_caching
        self.hits = 0  # blocks served from the prefix cache, for stats

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return len(self.blocks) - len(self.free)

    def _take_free(self) -> Block:
        block_id, _ = self.free.popitem(last=False)  # least recently freed first
        block = self.blocks[block_id]
        if block.hash != -1 and self.cached.get(block.hash) == block_id:
            del self.cached[block.hash]  # evicted from the prefix cache
        block.hash, block.token_ids, block.ref_count = -1, [], 1
        return block

    def _lookup(self, h: int, tokens: list[int]) -> Block | None:
        block_id = self.cached.get(h)
        if block_id is None:
            return None
        block = self.blocks[block_id]
        return block if block.token_ids == tokens else None  # guard against hash collisions

    def _matched_prefix(self, seq: Sequence) -> list[Block]:
        """Cached blocks covering a prefix of `seq` (never its last token, which must be computed)."""
        if not self.prefix_caching:
            return []
        out: list[Block] = []
        h = 0
        for i in range((len(seq) - 1) // self.block_size):
            tokens = seq.block_tokens(i)
            h = block_hash(tokens, h)
            block = self._lookup(h, tokens)
            if block is None:
                break
            out.append(block)
        return out

    def can_allocate(self, seq: Sequence) -> bool:
        matched = self._matched_prefix(seq)
        reusable_free = sum(1 for b in matched if b.ref_count == 0)
        return seq.num_blocks - len(matched) <= self.num_free - reusable_free

    def allocate(self, seq: Sequence) -> None:
        """Give `seq` blocks for all its tokens, reusing cached prefix blocks."""
        assert not seq.block_table
        matched = self._matched_prefix(seq)
        for block in matched:
            if block.ref_count == 0:
                del self.free[block.block_id]
            block.ref_count += 1
            seq.block_table.append(block.block_id)
        self.hits += len(matched)
        seq.num_cached_tokens = len(matched) * self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens
        for _ in range(seq.num_blocks - len(matched)):
            seq.block_table.append(self._take_free().block_id)

    def free_seq(self, seq: Sequence) -> None:
        """Return every block of `seq`; hashed blocks stay findable until evicted."""
        for block_id in reversed(seq.block_table):  # the tail is freed first, so evicted first
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.num_computed_tokens = seq.num_cached_tokens = seq.num_hashed_blocks = 0

    def can_append(self, seq: Sequence) -> bool:
        """Room for the KV of `seq`'s last (sampled, not yet computed) token."""
        return len(seq.block_table) >= seq.num_blocks or self.num_free > 0

    def append_slot(self, seq: Sequence) -> None:
        """Called before a decode step writes the KV of `seq`'s last token."""
        if len(seq.block_table) < seq.num_blocks:
            seq.block_table.append(self._take_free().block_id)

    def commit_full_blocks(self, seq: Sequence) -> None:
        """Hash the blocks of `seq` that became full and computed, so later requests can reuse them."""
        if not self.prefix_caching:
            return
        n_full = seq.num_computed_tokens // self.block_size
        for i in range(seq.num_hashed_blocks, n_full):
            block = self.blocks[seq.block_table[i]]
            if block.hash == -1:
                prev = self.blocks[seq.block_table[i - 1]].hash if i else 0
                tokens = seq.block_tokens(i)
                block.hash, block.token_ids = block_hash(tokens, prev), list(tokens)
                self.cached.setdefault(block.hash, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, n_full)
