"""Tokenizer training, packing into memory-mapped token files, the held-out split, deterministic batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer
from ember.model.train.packing import PackedDataset, is_held_out, pack_corpus
from ember.model.train.tokenizer_train import ENDOFTEXT, IM_END, IM_START, train_tokenizer


def test_bpe_is_byte_level_with_special_tokens(bpe: Tokenizer, tmp_path: Path) -> None:
    assert bpe.vocab_size == 512
    assert [bpe.token_id(t) for t in (ENDOFTEXT, IM_START, IM_END)] == [0, 1, 2]
    text = "Déjà vu: 東京 — emoji 🔥 and <|im_end|>"
    ids = bpe.encode(text)
    assert bpe.decode(ids, skip_special_tokens=False) == text  # any string round-trips: no unknown tokens
    assert IM_END in [bpe.backend.id_to_token(i) for i in ids]  # a special token stays one token
    bpe.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.encode(text) == ids and again.eos_token_id == 2


def test_saved_tokenizer_loads_in_transformers(bpe: Tokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    bpe.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = "The Normans were in Normandy in the 10th and 11th centuries."
    assert hf(text, add_special_tokens=True)["input_ids"] == bpe.encode(text)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert hf.apply_chat_template(messages, tokenize=False) == bpe.apply_chat_template(messages, False)
    assert hf.eos_token == IM_END


def test_too_small_vocab_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small"):
        train_tokenizer(iter(["abc"]), vocab_size=100)


def test_pack_writes_memmapped_splits(bpe: Tokenizer, paragraphs: list[str], tmp_path: Path) -> None:
    meta = pack_corpus(iter(paragraphs), bpe, tmp_path / "data", val_fraction=0.1)
    train = np.memmap(tmp_path / "data" / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(tmp_path / "data" / "val.bin", dtype=np.uint16, mode="r")
    assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    assert meta["train_documents"] + meta["val_documents"] == len(paragraphs)
    held = [p for p in paragraphs if is_held_out(p, 0.1)]
    assert meta["val_documents"] == len(held) > 0
    # the held-out file is exactly the held-out documents, each followed by the separator
    docs = bpe.decode([int(t) for t in val], skip_special_tokens=False).split(ENDOFTEXT)
    assert docs[:-1] == held
    assert not (tmp_path / "data.partial").exists()


def test_pack_refuses_an_empty_split(bpe: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split is empty"):
        pack_corpus(iter(["just one document"]), bpe, tmp_path / "data", val_fraction=0.01)
    assert not (tmp_path / "data").exists()


def test_packed_batches_are_deterministic_and_cover_an_epoch(bpe: Tokenizer, paragraphs: list[str],
                                                             tmp_path: Path) -> None:
    pack_corpus(iter(paragraphs), bpe, tmp_path / "data", val_fraction=0.1)
    ds = PackedDataset(tmp_path / "data" / "train.bin", seq_len=32, batch_size=4, seed=7)
    x, y = ds.batch(3)
    assert x.shape == y.shape == (4, 32)
    assert (x[:, 1:] == y[:, :-1]).all()  # y is x shifted by one
    again = PackedDataset(tmp_path / "data" / "train.bin", seq_len=32, batch_size=4, seed=7)
    assert (again.batch(3)[0] == x).all()  # micro-batch i depends on i alone: exact resume
    tokens = np.asarray(ds.tokens)
    starts = set()
    for i in range(ds.num_sequences // 4):
        for row in ds.batch(i)[0]:
            start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(tokens, 32)[::32]
                                              == row.numpy(), axis=1))[0])
            starts.add(start)
    assert len(starts) == (ds.num_sequences // 4) * 4  # no sequence twice within an epoch
