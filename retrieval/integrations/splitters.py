"""LangChain's and LlamaIndex's text splitters as Ember `Chunker`s (`ember ingest --splitter ...`).

Their splitters return strings; an Ember chunk is a span of the document's text, so each piece is located
in the text, searching forward from where the previous piece began (pieces overlap, so not from where it
ended). A splitter that rewrote whitespace is matched with a whitespace-tolerant pattern. Sizes and overlaps
are in tokens of the embedder's tokenizer, as for Ember's own chunker.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

from ember.retrieval.chunking import Chunk, ChunkConfig
from ember.retrieval.errors import InvalidSearchError, RetrievalError
from ember.retrieval.integrations import require
from ember.retrieval.loaders.base import Document
from ember.retrieval.tokens import TokenCounter

SPLITTERS = ("langchain-recursive", "llamaindex-sentence")


def locate(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """(start, end) of each piece in `text`, in order; whitespace inside a piece may differ from the text's."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        at = text.find(piece, cursor)
        if at >= 0:
            spans.append((at, at + len(piece)))
        else:
            pattern = r"\s+".join(re.escape(w) for w in piece.split())
            m = re.compile(pattern).search(text, cursor)
            if m is None:
                raise RetrievalError(f"the splitter returned a piece that is not in the document: {piece[:80]!r}")
            spans.append((m.start(), m.end()))
        cursor = spans[-1][0] + 1 if spans[-1][1] > spans[-1][0] + 1 else spans[-1][1]
    return spans


class ExternalChunker:
    """Any `str -> list[str]` splitter, turned into chunks with character spans, token counts and pages."""

    def __init__(self, split: Callable[[str], list[str]], counter: TokenCounter) -> None:
        self.split, self.counter = split, counter

    def chunk(self, doc: Document) -> list[Chunk]:
        starts = self.counter.token_starts(doc.text)
        out = []
        for a, b in locate(doc.text, self.split(doc.text)):
            tokens = bisect.bisect_left(starts, b) - bisect.bisect_left(starts, a)
            out.append(Chunk(doc.text[a:b], a, b, tokens, (), doc.page_at(a)))
        return out


def token_length(counter: TokenCounter) -> Callable[[str], int]:
    return lambda s: len(counter.token_starts(s))


def make_splitter(name: str, counter: TokenCounter, config: ChunkConfig) -> ExternalChunker:
    """`langchain-recursive` (RecursiveCharacterTextSplitter) or `llamaindex-sentence` (SentenceSplitter)."""
    if name == "langchain-recursive":
        lc = require("langchain_text_splitters", "langchain-text-splitters", "--splitter langchain-recursive")
        splitter = lc.RecursiveCharacterTextSplitter(chunk_size=config.size, chunk_overlap=config.overlap,
                                                     length_function=token_length(counter))
        return ExternalChunker(splitter.split_text, counter)
    if name == "llamaindex-sentence":
        np = require("llama_index.core.node_parser", "llama-index-core", "--splitter llamaindex-sentence")
        starts = counter.token_starts
        sentence = np.SentenceSplitter(chunk_size=config.size, chunk_overlap=config.overlap,
                                       tokenizer=lambda s: starts(s))  # only the length of the list is used
        return ExternalChunker(sentence.split_text, counter)
    raise InvalidSearchError(f"unknown splitter {name!r}: use ember, {', '.join(SPLITTERS)}")
