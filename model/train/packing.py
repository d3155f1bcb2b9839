"""Pre-training data: documents tokenised once into flat token files, read back through `np.memmap`.

`pack_corpus` streams documents, appends their ids (plus a separator) to `train.bin` or `val.bin` and never
holds the corpus in memory; a document goes to the held-out split by a hash of its text, so the split is
stable when the corpus grows. `PackedDataset` cuts the token stream into fixed-length sequences and serves
micro-batch number `i` deterministically (a seeded permutation per epoch), so a run resumes exactly from
a step count alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer
from ember.model.train.tokenizer_train import document_separator

META = "meta.json"


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def is_held_out(text: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h / 2**64 < val_fraction


def pack_corpus(documents: Iterable[str], tokenizer: Tokenizer, out_dir: str | Path,
                val_fraction: float = 0.05, chunk_docs: int = 256) -> dict[str, Any]:
    """Tokenise `documents` into `out_dir/{train,val}.bin` (+ meta.json). Atomic: built beside, then renamed."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction} must be between 0 and 1")
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    sep = document_separator(tokenizer)
    counts = {"train": [0, 0], "val": [0, 0]}  # documents, tokens
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        for batch in _batched(documents, chunk_docs):
            for text, enc in zip(batch, tokenizer.backend.encode_batch(batch, add_special_tokens=False),
                                 strict=True):
                split = "val" if is_held_out(text, val_fraction) else "train"
                ids = np.asarray([*enc.ids, sep], dtype=dtype)
                ids.tofile(fval if split == "val" else ftrain)
                counts[split][0] += 1
                counts[split][1] += len(ids)
    for split, (docs, _) in counts.items():
        if docs == 0:
            shutil.rmtree(tmp)
            raise ConfigError(f"the {split} split is empty ({counts['train'][0] + counts['val'][0]} documents "
                              f"in all)", hint="Use a larger corpus or change val_fraction.")
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size, "separator": sep,
            "val_fraction": val_fraction,
            **{f"{s}_documents": c[0] for s, c in counts.items()},
            **{f"{s}_tokens": c[1] for s, c in counts.items()}}
    (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


@dataclass
class PackedDataset:
    """Fixed-length (x, y) sequences from a memory-mapped token file; y is x shifted by one."""

    path: Path
    seq_len: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self) -> None:
        meta_path = self.path.parent / META
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"{meta_path}: not found", hint="Pack the corpus first (pack_corpus).") from e
        self.tokens = np.memmap(self.path, dtype=np.dtype(meta["dtype"]), mode="r")
        self.num_sequences = (len(self.tokens) - 1) // self.seq_len
        if self.num_sequences < 1:
            raise ConfigError(f"{self.path}: {len(self.tokens)} tokens is less than one sequence of "
                              f"{self.seq_len} + 1", hint="Use a shorter seq_len or a larger corpus.")
        self._epoch, self._order = -1, np.arange(self.num_sequences)

    def _order_for(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = (np.random.default_rng(self.seed + epoch).permutation(self.num_sequences)
                           if self.shuffle else np.arange(self.num_sequences))
        return self._order

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch number `index` of the endless, epoch-by-epoch shuffled stream: x, y of (B, T) int64."""
        rows = []
        for slot in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, k = divmod(slot, self.num_sequences)
            start = int(self._order_for(epoch)[k]) * self.seq_len
            rows.append(np.asarray(self.tokens[start:start + self.seq_len + 1], dtype=np.int64))
        data = torch.from_numpy(np.stack(rows))
        return data[:, :-1], data[:, 1:]

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.num_sequences // self.batch_size)
