"""Fixed benchmark workloads, shared by every side of a comparison (ours, transformers, vLLM).

Importing this module imports nothing heavy; prompts are token-id lists built with our tokenizer so
every engine sees exactly the same tokens.
"""

from __future__ import annotations

import random
from pathlib import Path

STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]
FILLER = ("Ember is a self-hosted LLM stack. It serves its own Llama engine with a paged KV cache, continuous "
          "batching and prefix caching, retrieves passages with FAISS and BM25, and runs agents over MCP. ")


def _tokenizer(folder: Path):  # -> ember.model.tokenizer.Tokenizer
    from ember.model.tokenizer import Tokenizer

    return Tokenizer.load(folder)


def chat_prompt(folder: Path) -> list[int]:
    tok = _tokenizer(folder)
    return tok.encode(tok.apply_chat_template(STORY), add_special_tokens=False)


def mixed_prompts(folder: Path, n: int = 32, seed: int = 0, low: int = 16, high: int = 512) -> list[list[int]]:
    """`n` prompts of random lengths in [low, high] tokens, cut from a fixed text."""
    tok = _tokenizer(folder)
    base = tok.encode(FILLER * 60, add_special_tokens=False)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length, start = rng.randint(low, high), rng.randint(0, 100)
        out.append(base[start:start + length])
    return out


def shared_prefix_prompts(folder: Path, prefix_tokens: int = 1000) -> tuple[list[int], list[int]]:
    """Two prompts sharing a `prefix_tokens`-token system prompt, with different questions."""
    tok = _tokenizer(folder)
    prefix = tok.encode(FILLER * 40, add_special_tokens=False)[:prefix_tokens]
    a = prefix + tok.encode(" Question: what does Ember serve?", add_special_tokens=False)
    b = prefix + tok.encode(" Question: how does Ember retrieve?", add_special_tokens=False)
    return a, b
