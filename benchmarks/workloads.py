"""The generation workloads every engine benchmark runs, so Ember and vLLM are measured on identical tokens.

Imports only Ember's tokenizer (no torch, no vllm), so it loads in the main `.venv` and in `.venv-vllm`
alike. Prompts are token-id lists built with our `Tokenizer`; engines take them as ids, untouched.

- `chat_prompt()`: batch-1 decode: one chat request (the same conversation as bench_generate.py).
- `mixed_prompts(n=32, seed=0)`: offline throughput: n prompts of mixed lengths (16..512 tokens), cut
  from a fixed text at distinct seeded offsets (no shared prefixes); each request then generates
  NEW_TOKENS tokens with eos ignored.
"""

from __future__ import annotations

import random
from pathlib import Path

from ember.model.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO / ".ember" / "models" / "smollm2"
NEW_TOKENS = 128
THROUGHPUT_REQUESTS = 32
PROMPT_LENGTHS = (16, 512)  # inclusive range of the mixed prompts' lengths, in tokens
CHAT = [{"role": "user",
         "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]
TEXT = (
    "The lighthouse stood at the end of a long spit of rock, and for forty years its keeper had climbed the "
    "hundred and twelve steps each evening to light the lamp. He kept a log of every ship that passed, the "
    "weather at each watch, and the small repairs the tower demanded: a cracked pane, a seized hinge, a wick "
    "trimmed too short. In winter the storms came in from the west and the spray reached the gallery rail. "
    "In summer the sea lay flat and bright, and fishing boats drifted past so close that he could hear the "
    "crews calling to one another. One morning, walking the tide line after a gale, he found a green bottle "
    "wedged between two stones, its cork sealed with wax and a rolled sheet of paper inside. "
)


def tokenizer(folder: str | Path = DEFAULT_FOLDER) -> Tokenizer:
    return Tokenizer.load(folder)


def chat_prompt(folder: str | Path = DEFAULT_FOLDER) -> list[int]:
    """The batch-1 request: CHAT through the folder's chat template, as token ids."""
    tok = tokenizer(folder)
    return tok.encode(tok.apply_chat_template(CHAT), add_special_tokens=False)


def mixed_prompts(n: int = THROUGHPUT_REQUESTS, seed: int = 0, folder: str | Path = DEFAULT_FOLDER) -> list[list[int]]:
    """n prompts with lengths drawn uniformly from PROMPT_LENGTHS, each a window of the repeated TEXT."""
    tok = tokenizer(folder)
    rng = random.Random(seed)
    low, high = PROMPT_LENGTHS
    base = tok.encode(TEXT, add_special_tokens=False)
    stream = base * (2 * high // len(base) + 2)
    # Distinct start offsets: no two prompts share a prefix, so a prefix cache cannot skip their prefill.
    starts = rng.sample(range(len(base)), n) if n <= len(base) else [rng.randrange(len(base)) for _ in range(n)]
    return [stream[start:start + rng.randint(low, high)] for start in starts]


def shared_prefix_prompts(folder: str | Path = DEFAULT_FOLDER, prefix_tokens: int = 1000) -> tuple[list[int], ...]:
    """Two prompts sharing a `prefix_tokens`-token system prompt, with different questions (prefix caching)."""
    tok = tokenizer(folder)
    base = tok.encode(TEXT, add_special_tokens=False)
    prefix = (base * (prefix_tokens // len(base) + 1))[:prefix_tokens]
    a = prefix + tok.encode(" Question: what did the keeper find?", add_special_tokens=False)
    b = prefix + tok.encode(" Question: how many steps did he climb?", add_special_tokens=False)
    return a, b
