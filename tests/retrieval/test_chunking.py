from __future__ import annotations

import itertools
import re

import pytest

from ember.retrieval.chunking import ChunkConfig, TokenChunker, chunk_text, markdown_sections
from ember.retrieval.embedders import minilm_folder
from ember.retrieval.loaders import load_file
from ember.retrieval.tokens import HFTokenCounter, RegexTokenCounter

from .conftest import FASTAPI, PDFS


@pytest.fixture(scope="module")
def counter() -> HFTokenCounter:
    return HFTokenCounter(minilm_folder() / "tokenizer.json")


def covered(text: str, chunks: list) -> bool:
    """Every non-space character of `text` lies in some chunk."""
    mask = [False] * len(text)
    for c in chunks:
        mask[c.start:c.end] = [True] * (c.end - c.start)
    return all(m or ch.isspace() for m, ch in zip(mask, text, strict=True))


@pytest.mark.parametrize("size,overlap", [(64, 0), (128, 16), (254, 32)])
def test_sizes_spans_overlap_on_real_pdf(counter: HFTokenCounter, size: int, overlap: int) -> None:
    doc = load_file(PDFS / "aosa-bash.pdf")
    chunks = TokenChunker(counter, ChunkConfig(size, overlap)).chunk(doc)
    assert len(chunks) > 20
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text and c.text == c.text.strip()
        assert c.tokens == counter.count(c.text) <= size  # in the embedder's own tokens
        assert c.page == doc.page_at(c.start)
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start
        shared = max(0, a.end - b.start)
        if overlap == 0:
            assert shared == 0
        else:
            assert counter.count(doc.text[b.start:a.end]) <= overlap if shared else True
    if overlap:
        assert sum(b.start < a.end for a, b in itertools.pairwise(chunks)) > len(chunks) // 2
    assert covered(doc.text, chunks)
    pages = [c.page for c in chunks]
    assert pages == sorted(pages) and set(range(3, 21)) <= set(pages)  # page 2 holds 19 characters


def test_prefers_paragraph_then_sentence_boundaries(counter: HFTokenCounter) -> None:
    paragraphs = [" ".join(f"Sentence {p}.{s} has a few plain words in it." for s in range(6)) for p in range(8)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, counter, ChunkConfig(size=90, overlap=0))
    assert all(c.text.endswith(".") for c in chunks)  # never cut mid-sentence when sentences fit
    assert [c.text for c in chunks if "\n\n" not in c.text]  # paragraphs kept whole where they fit
    with_overlap = chunk_text(text, counter, ChunkConfig(size=90, overlap=20))
    for _a, b in itertools.pairwise(with_overlap):
        assert re.match(r"Sentence \d\.\d", b.text), b.text[:30]  # the overlap starts at a sentence


def test_giant_word_and_regex_counter(counter: HFTokenCounter) -> None:
    blob = "x" * 3000 + " tail"
    chunks = chunk_text(blob, counter, ChunkConfig(size=50, overlap=0))
    assert all(c.tokens <= 50 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == blob.replace(" ", "")
    words = chunk_text("alpha, beta gamma! " * 200, RegexTokenCounter(), ChunkConfig(size=30, overlap=5))
    assert all(len(RegexTokenCounter().token_starts(c.text)) <= 30 for c in words)


def test_markdown_heading_paths() -> None:
    text = ("Intro line.\n\n# Title { #title }\n\nTop.\n\n## Install\n\nSteps.\n\n```bash\n# not a heading\n```\n\n"
            "### Linux\n\nApt.\n\n## Usage\n\nRun it.\n")
    sections = markdown_sections(text)
    assert [h for _, _, h in sections] == [(), ("Title",), ("Title", "Install"), ("Title", "Install", "Linux"),
                                           ("Title", "Usage")]
    assert "# not a heading" in text[sections[2][0]:sections[2][1]]


def test_markdown_chunks_carry_headings(counter: HFTokenCounter) -> None:
    doc = load_file(FASTAPI / "tutorial" / "query-params.md")
    chunks = TokenChunker(counter, ChunkConfig(128, 16)).chunk(doc)
    assert chunks[0].headings == ("Query Parameters",)
    optional = [c for c in chunks if c.headings == ("Query Parameters", "Optional parameters")]
    assert optional and optional[0].text.startswith("## Optional parameters")
    assert all(doc.text[c.start:c.end] == c.text and c.tokens <= 128 for c in chunks)
    assert covered(doc.text, chunks)
    flat = TokenChunker(counter, ChunkConfig(128, 16, markdown_headers=False)).chunk(doc)
    assert all(c.headings == () for c in flat)


@pytest.mark.parametrize("size,overlap", [(4, 0), (64, 64), (64, -1)])
def test_config_validates(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        ChunkConfig(size, overlap)
