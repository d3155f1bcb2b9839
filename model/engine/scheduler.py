"""Continuous batching: which sequences run in the next step.

Every step first keeps all running sequences decoding (one token each). If the pool cannot hold their
next tokens, the most recently admitted sequence is preempted: its blocks are freed and it goes back to
the front of the queue, to be recomputed later (preemption by recompute, as vLLM does). Then waiting
sequences are admitted for prefill while the token budget, the sequence cap and free blocks allow, so one
step mixes prefill and decode. Nothing is ever dropped.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from ember.model.engine.block_manager import BlockManager
from ember.model.engine.sequence import Sequence, Status
from ember.model.errors import InvalidValueError


@dataclass(slots=True)
class SchedulerConfig:
    max_num_seqs: int = 64  # running at once
    max_num_batched_tokens: int = 4096  # tokens computed in one step (prefill + decode)
    max_model_len: int = 8192

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise InvalidValueError("max_num_seqs and max_num_batched_tokens must be >= 1")


@dataclass(slots=True)
class Batch:
    prefill: list[Sequence]  # each computes tokens[num_computed_tokens:]
    decode: list[Sequence]  # each computes its last token

    @property
    def seqs(self) -> list[Sequence]:
        return self.decode + self.prefill

    def __bool__(self) -> bool:
        return bool(self.prefill or self.decode)


class Scheduler:
    def __init__(self, config: SchedulerConfig, blocks: BlockManager) -> None:
        self.config = config
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Batch:
        decode: list[Sequence] = []
        budget = self.config.max_num_batched_tokens
        running = self.running
        self.running = deque()
        preempted = False
        while running:
            seq = running.popleft()
            while not self.blocks.can_append(seq):
                victim = running.pop() if running else seq  # the newest goes back to the queue
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                self.blocks.append_slot(seq)
                decode.append(seq)
                self.running.append(seq)
                budget -= 1
        prefill: list[Sequence] = []
        while self.waiting and len(self.running) < self.config.max_num_seqs and not preempted:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq):
                break
            self.blocks.allocate(seq)
            todo = len(seq) - seq.num_computed_tokens
            if todo > budget and (prefill or decode):  # too big for this step: wait for the next one
                self.blocks.free_seq(seq)
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            if seq.first_scheduled is None:
                seq.first_scheduled = time.perf_counter()
                seq.prompt_cached_tokens = seq.num_cached_tokens
            budget -= todo
            prefill.append(seq)
            self.running.append(seq)
        if not prefill and not decode and self.waiting and not self.running:
            seq = self.waiting[0]
            raise MemoryError(f"a {len(seq)}-token sequence does not fit in the KV pool "
                              f"({len(self.blocks.blocks)} blocks of {self.blocks.block_size})")
        return Batch(prefill, decode)

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free_seq(seq)
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Called when `seq` is done: it leaves the running set and returns its blocks."""
        seq.status = Status.FINISHED
        if seq in self.running:
            self.running.remove(seq)
        self.blocks.free_seq(seq)

    def abort(self, seq: Sequence) -> None:
        if seq in self.waiting:
            self.waiting.remove(seq)
        self.finish(seq)
