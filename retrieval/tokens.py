"""Token counting for the chunker: token start offsets in the embedder's own tokenizer.

The chunker needs "how many tokens between character a and b" many times per document, so it tokenizes a
document once and counts by bisecting the token start offsets. `HFTokenCounter` wraps a `tokenizer.json`
(the sentence-transformers folder's own, so sizes are in the embedder's tokens); `RegexTokenCounter` is the
approximation for embedders whose tokenizer is not local (a remote /v1/embeddings server).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from ember.retrieval.errors import EmbedderError


class TokenCounter(Protocol):
    def token_starts(self, text: str) -> list[int]:
        """Character offset where each token of `text` begins (no special tokens), ascending."""
        ...


class HFTokenCounter:
    """A Hugging Face `tokenizers` tokenizer, without truncation or padding (chunks may come from long files)."""

    __slots__ = ("tokenizer",)

    def __init__(self, tokenizer_json: str | Path) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        except Exception as e:  # the Rust side raises plain Exceptions for unreadable files
            raise EmbedderError(f"cannot load tokenizer {tokenizer_json}: {e}") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def token_starts(self, text: str) -> list[int]:
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        starts = [s for s, e in offsets if e > s]
        # WordPiece gives every piece of a word its own offset; they are already ascending
        return starts

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class RegexTokenCounter:
    """Words and punctuation marks: close to subword counts for English prose, exact for nothing."""

    __slots__ = ()
    PATTERN = re.compile(r"\w+|[^\w\s]")

    def token_starts(self, text: str) -> list[int]:
        return [m.start() for m in self.PATTERN.finditer(text)]
