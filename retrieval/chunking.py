"""Token-aware recursive chunking, and Markdown-header-aware sections.

A span that is too long is cut at paragraphs, then lines, then sentences, then words, then (for a single
giant "word") token windows; the pieces are merged greedily up to `size` tokens, and each chunk after the
first starts up to `overlap` tokens before the previous one ended, at a sentence start if one falls in that
window, else at a word start. Sizes are in tokens of the embedder's tokenizer (`TokenCounter`). Chunks are
spans of the document's text, `text[start:end]`, so an answer can cite exactly where it came from.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from ember.retrieval.errors import InvalidSearchError
from ember.retrieval.loaders.base import Document
from ember.retrieval.tokens import TokenCounter

SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines
    re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+"),  # sentences
    re.compile(r"\s+"),  # words
)
SENTENCE_START = SEPARATORS[2]
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
HEADING_ATTRS = re.compile(r"\s*\{[^{}]*\}\s*$")  # `## Title { #anchor }`
FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)


@dataclass(frozen=True, slots=True)
class ChunkConfig:
    size: int = 256  # tokens
    overlap: int = 32  # tokens
    markdown_headers: bool = True

    def __post_init__(self) -> None:
        if self.size < 8:
            raise InvalidSearchError(f"chunk size must be at least 8 tokens, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise InvalidSearchError(f"chunk overlap must be in [0, size={self.size}), got {self.overlap}")


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    start: int  # character span in the document's text
    end: int
    tokens: int
    headings: tuple[str, ...] = field(default=())
    page: int | None = None


class Chunker(Protocol):
    def chunk(self, doc: Document) -> list[Chunk]: ...


class Spans:
    """Token counts over character spans of one text, from its token start offsets."""

    __slots__ = ("starts", "text")

    def __init__(self, text: str, counter: TokenCounter) -> None:
        self.text = text
        self.starts = counter.token_starts(text)

    def count(self, lo: int, hi: int) -> int:
        return bisect.bisect_left(self.starts, hi) - bisect.bisect_left(self.starts, lo)

    def split(self, lo: int, hi: int, size: int, level: int = 0) -> list[tuple[int, int]]:
        """Contiguous pieces covering [lo, hi), each at most `size` tokens."""
        if self.count(lo, hi) <= size:
            return [(lo, hi)]
        if level == len(SEPARATORS):
            first = bisect.bisect_left(self.starts, lo)
            last = bisect.bisect_left(self.starts, hi)
            cuts = [lo, *(self.starts[t] for t in range(first + size, last, size)), hi]
            return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
        cuts = [lo, *(m.end() for m in SEPARATORS[level].finditer(self.text, lo, hi) if lo < m.end() < hi), hi]
        pieces: list[tuple[int, int]] = []
        for a, b in itertools.pairwise(cuts):
            if b > a:
                pieces.extend(self.split(a, b, size, level + 1) if self.count(a, b) > size else [(a, b)])
        return pieces

    def overlap_start(self, start: int, end: int, overlap: int) -> int | None:
        """Where the next chunk starts so that it repeats at most `overlap` tokens of [start, end)."""
        if overlap == 0:
            return None
        t_end = bisect.bisect_left(self.starts, end)
        t = max(bisect.bisect_left(self.starts, start) + 1, t_end - overlap)
        while t < t_end and not self.text[self.starts[t] - 1].isspace():
            t += 1  # not mid-word (a WordPiece continuation or attached punctuation)
        if t >= t_end:
            return None
        pos = self.starts[t]
        sentence = SENTENCE_START.search(self.text, pos - 1, end)
        return sentence.end() if sentence and sentence.end() < end else pos


def _strip(text: str, lo: int, hi: int) -> tuple[int, int]:
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    return lo, hi


def chunk_span(spans: Spans, lo: int, hi: int, config: ChunkConfig) -> list[tuple[int, int]]:
    """Merge the recursive pieces of [lo, hi) into chunk spans of at most `config.size` tokens."""
    pieces = [p for p in spans.split(lo, hi, config.size) if spans.count(*p) > 0 or p[1] - p[0] > 0]
    out: list[tuple[int, int]] = []
    i, start = 0, pieces[0][0] if pieces else lo
    while i < len(pieces):
        end, j = pieces[i][1], i + 1
        while j < len(pieces) and spans.count(start, pieces[j][1]) <= config.size:
            end, j = pieces[j][1], j + 1
        a, b = _strip(spans.text, start, end)
        if spans.count(a, b) > 0:
            out.append((a, b))
        if j >= len(pieces):
            break
        ov = spans.overlap_start(a, b, config.overlap)
        start = ov if ov is not None and spans.count(ov, pieces[j][1]) <= config.size else pieces[j][0]
        i = j
    return out


def markdown_sections(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, heading path) of each section; `#` lines inside code fences are not headings."""
    fenced: list[tuple[int, int]] = []
    marks = [m.start() for m in FENCE.finditer(text)]
    for a, b in zip(marks[::2], marks[1::2], strict=False):
        fenced.append((a, b))
    if len(marks) % 2:
        fenced.append((marks[-1], len(text)))
    path: list[tuple[int, str]] = []
    sections: list[tuple[int, int, tuple[str, ...]]] = []
    last, current = 0, cast(tuple[str, ...], ())
    for m in HEADING.finditer(text):
        if any(a <= m.start() < b for a, b in fenced):
            continue
        if m.start() > last:
            sections.append((last, m.start(), current))
        level = len(m.group(1))
        path = [(lv, h) for lv, h in path if lv < level] + [(level, HEADING_ATTRS.sub("", m.group(2)).strip())]
        current, last = tuple(h for _, h in path), m.start()
    sections.append((last, len(text), current))
    return sections


class TokenChunker:
    """The default `Chunker`: recursive token-aware splitting; Markdown documents per header section."""

    __slots__ = ("config", "counter")

    def __init__(self, counter: TokenCounter, config: ChunkConfig | None = None) -> None:
        self.counter = counter
        self.config = config or ChunkConfig()

    def chunk(self, doc: Document) -> list[Chunk]:
        return chunk_text(doc.text, self.counter, self.config, markdown=doc.kind == "markdown", doc=doc)


def chunk_text(text: str, counter: TokenCounter, config: ChunkConfig, *, markdown: bool = False,
               doc: Document | None = None) -> list[Chunk]:
    spans = Spans(text, counter)
    sections: Sequence[tuple[int, int, tuple[str, ...]]] = (
        markdown_sections(text) if markdown and config.markdown_headers else [(0, len(text), ())])
    chunks = []
    for lo, hi, headings in sections:
        for a, b in chunk_span(spans, lo, hi, config):
            chunks.append(Chunk(text=text[a:b], start=a, end=b, tokens=spans.count(a, b), headings=headings,
                                page=doc.page_at(a) if doc else None))
    return chunks
