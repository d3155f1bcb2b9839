"""Chat (SFT) data: conversations rendered with the model's own chat template, loss only on assistant turns.

A conversation is tokenised segment by segment: the text the template adds for each message is the
difference between rendering the first k and the first k+1 messages, so every token is attributed to
exactly one message. Labels are the token ids inside assistant segments (the reply and its end-of-turn
marker) and IGNORE everywhere else: the system prompt, the user turns and the template's role headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ember.model.chat_template import Message
from ember.model.errors import ConfigError
from ember.model.tokenizer import Tokenizer

IGNORE = -100  # F.cross_entropy's default ignore_index


def tokenize_conversation(tokenizer: Tokenizer, messages: Sequence[Message],
                          last_turn_only: bool = False) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation; labels are IGNORE outside assistant turns (outside the last
    one with `last_turn_only`: earlier turns are then context, e.g. a prompt's worked examples)."""
    if not any(m.get("role") == "assistant" for m in messages):
        raise ConfigError("a training conversation needs at least one assistant message")
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    last = max(k for k, m in enumerate(messages) if m.get("role") == "assistant")
    for k, message in enumerate(messages):
        if message["role"] == "assistant":
            # the generation prompt ("<|im_start|>assistant\n") belongs to the prompt, not to the answer
            head = tokenizer.apply_chat_template(list(messages[:k]), add_generation_prompt=True)
            rendered = _append(tokenizer, rendered, head, ids, labels, train=False)
        full = tokenizer.apply_chat_template(list(messages[:k + 1]), add_generation_prompt=False)
        rendered = _append(tokenizer, rendered, full, ids, labels,
                           train=message["role"] == "assistant" and (k == last or not last_turn_only))
    return ids, labels


def _append(tokenizer: Tokenizer, rendered: str, text: str, ids: list[int], labels: list[int],
            train: bool) -> str:
    if not text.startswith(rendered):
        raise ConfigError("the chat template does not render conversations incrementally (a prefix changes "
                          "when a message is added), so assistant turns cannot be located")
    new = tokenizer.encode(text[len(rendered):], add_special_tokens=False)
    ids.extend(new)
    labels.extend(new if train else [IGNORE] * len(new))
    return text


def read_conversations(path: str | Path) -> list[list[Message]]:
    """A JSONL file with one `{"messages": [{"role": ..., "content": ...}, ...]}` per line."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            expected = f"{path}:{n}: expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}}"
            try:
                messages = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(expected) from e
            # checked explicitly, not with assert: python -O would skip it
            if not isinstance(messages, list) or not all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in messages):
                raise ConfigError(expected)
            out.append(messages)
    if not out:
        raise ConfigError(f"{path}: no conversations")
    return out


@dataclass
class SFTDataset:
    """Padded (x, y) micro-batches of tokenised conversations; y holds IGNORE where no loss is taken."""

    examples: list[tuple[list[int], list[int]]]
    batch_size: int
    max_len: int
    pad_id: int
    seed: int = 0
    shuffle: bool = True

    @classmethod
    def from_conversations(cls, tokenizer: Tokenizer, conversations: Sequence[Sequence[Message]],
                           batch_size: int, max_len: int, seed: int = 0, shuffle: bool = True,
                           last_turn_only: bool = False) -> SFTDataset:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError("the tokenizer has no pad or EOS token to pad batches with")
        examples = []
        for messages in conversations:
            ids, labels = tokenize_conversation(tokenizer, messages, last_turn_only)
            # predict token t+1 from tokens <= t; keep the end (the answer) if the example is too long
            x, y = ids[:-1][-max_len:], labels[1:][-max_len:]
            if any(t != IGNORE for t in y):
                examples.append((x, y))
        if not examples:
            raise ConfigError(f"no example keeps an assistant token within max_len={max_len}")
        return cls(examples, batch_size, max_len, pad, seed, shuffle)

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.examples)
        rows = []
        for slot in range(index * self.batch_size, (index + 1) * self.batch_size):
            epoch, k = divmod(slot, n)
            order = np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
            rows.append(self.examples[int(order[k])])
        width = max(len(x) for x, _ in rows)
        x = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (xi, yi) in enumerate(rows):  # right padding: causal attention never looks at the pads
            x[i, :len(xi)] = torch.tensor(xi)
            y[i, :len(yi)] = torch.tensor(yi)
        return x, y

    @property
    def batches_per_epoch(self) -> int:
        return max(1, len(self.examples) // self.batch_size)
