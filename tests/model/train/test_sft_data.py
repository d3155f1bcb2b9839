"""Loss masking: only the assistant turns (reply + end-of-turn) carry labels, with our template and SmolLM2's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer
from ember.model.train.grounded import NOT_IN_CONTEXT, grounded_examples, read_squad
from ember.model.train.sft_data import IGNORE, SFTDataset, read_conversations, tokenize_conversation

from .conftest import ROOT, SQUAD_TRAIN

SMOLLM2 = ROOT / ".ember" / "models" / "smollm2"
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, since 1871."},
]


def tokenizers(bpe: Tokenizer) -> list[Tokenizer]:
    out = [bpe]
    if (SMOLLM2 / "ember-source.json").is_file():
        out.append(Tokenizer.load(SMOLLM2))
    return out


def test_labels_cover_exactly_the_assistant_turns(bpe: Tokenizer) -> None:
    for tok in tokenizers(bpe):
        ids, labels = tokenize_conversation(tok, CONVERSATION)
        assert len(ids) == len(labels)
        # the tokens are those of the whole rendered conversation
        assert tok.decode(ids, skip_special_tokens=False) == tok.apply_chat_template(CONVERSATION, False)
        trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
        assert all(label in (IGNORE, i) for i, label in zip(ids, labels, strict=True))
        assert tok.decode(trained, skip_special_tokens=False) == "Paris.<|im_end|>\nRome, since 1871.<|im_end|>\n"
        # the spans are contiguous runs: two assistant turns, two runs
        runs = sum(1 for k in range(len(labels)) if labels[k] != IGNORE and (k == 0 or labels[k - 1] == IGNORE))
        assert runs == 2


def test_a_conversation_without_an_assistant_turn_is_refused(bpe: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="assistant"):
        tokenize_conversation(bpe, CONVERSATION[:2])


def test_batches_shift_and_pad(bpe: Tokenizer) -> None:
    ds = SFTDataset.from_conversations(bpe, [CONVERSATION, CONVERSATION[:3]], batch_size=2, max_len=512, seed=0)
    x, y = ds.batch(0)
    ids, labels = tokenize_conversation(bpe, CONVERSATION)
    row = next(i for i in range(2) if (y[i] != IGNORE).sum() > 10)
    n = len(ids) - 1
    assert x[row, :n].tolist() == ids[:-1] and y[row, :n].tolist() == labels[1:]  # predict token t+1
    other = 1 - row
    short = len(tokenize_conversation(bpe, CONVERSATION[:3])[0]) - 1
    assert (y[other, short:] == IGNORE).all() and (x[other, short:] == bpe.pad_token_id).all()


def test_read_conversations_reports_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}]}\n{"text": "oops"}\n')
    with pytest.raises(ConfigError, match=":2:"):
        read_conversations(path)


def test_grounded_examples_from_squad_v2() -> None:
    if not SQUAD_TRAIN.is_file():
        pytest.skip(f"{SQUAD_TRAIN} is missing")
    items = read_squad(SQUAD_TRAIN)
    examples = grounded_examples(items, unanswerable_share=0.25, seed=0)
    replies = [conv[-1]["content"] for conv in examples]
    refusals = sum(r == NOT_IN_CONTEXT for r in replies)
    assert 0.2 < refusals / len(examples) <= 0.25
    for conv in examples[:200]:  # every answer is in the passage it cites, numbered as in the prompt
        reply = conv[-1]["content"]
        if reply != NOT_IN_CONTEXT:
            answer, n = reply.rsplit(" [", 1)
            passage = conv[-2]["content"].split(f"[{n[:-1]}] (", 1)[1].split("\n\n[", 1)[0]
            assert answer in passage
    assert all(conv[0]["role"] == "system" and conv[-2]["content"].rsplit("\n\n", 1)[1].startswith("Question: ")
               for conv in examples)
    held_out = grounded_examples(items, exclude_titles={items[0].title})
    assert all(items[0].context not in conv[-2]["content"] for conv in held_out)


def test_last_turn_only_leaves_worked_examples_unlabelled(bpe: Tokenizer) -> None:
    """The grounded prompt's worked examples are assistant turns too; with `last_turn_only` only the real
    answer carries labels."""
    for tok in tokenizers(bpe):
        ids, labels = tokenize_conversation(tok, CONVERSATION, last_turn_only=True)
        assert ids == tokenize_conversation(tok, CONVERSATION)[0]
        trained = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
        assert tok.decode(trained, skip_special_tokens=False) == "Rome, since 1871.<|im_end|>\n"


def test_grounded_examples_keep_to_the_training_articles() -> None:
    """`titles=TRAIN_TITLES` (what `ember train sft` uses on SQuAD): only those articles, and each of them."""
    from ember.model.train.grounded import TRAIN_TITLES

    if not SQUAD_TRAIN.is_file():
        pytest.skip(f"{SQUAD_TRAIN} is missing")
    items = read_squad(SQUAD_TRAIN)
    assert {it.title for it in items} >= TRAIN_TITLES
    kept = grounded_examples(items, titles=TRAIN_TITLES, seed=0)
    contexts = {it.context: it.title for it in items}
    seen = {contexts[p] for conv in kept[:300] for p in contexts if p in conv[-2]["content"]}
    assert seen and seen <= TRAIN_TITLES
