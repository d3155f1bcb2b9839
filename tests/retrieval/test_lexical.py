from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np

from ember.retrieval.chunking import ChunkConfig, chunk_text
from ember.retrieval.hybrid import rrf
from ember.retrieval.lexical import Analyzer, BM25Index
from ember.retrieval.loaders import load_folder
from ember.retrieval.tokens import RegexTokenCounter

from .conftest import FASTAPI

QUERIES = ["how to declare optional query parameters", "OAuth2 password bearer token security",
           "run background tasks after returning a response", "CORS allowed origins middleware"]


def corpus() -> list[str]:
    docs, _ = load_folder(FASTAPI / "tutorial", include=["*.md"])
    return [c.text for d in docs for c in chunk_text(d.text, RegexTokenCounter(), ChunkConfig(200, 0))]


def test_incremental_bm25_matches_bm25s_built_from_scratch(tmp_path: Path) -> None:
    texts = corpus()
    ids = np.arange(len(texts), dtype=np.int64) * 2 + 5
    index = BM25Index()
    for a in range(0, len(texts), 300):  # several ingests
        index.add(ids[a:a + 300], texts[a:a + 300])
    dead = ids[::5]
    index.remove(dead)
    alive = ~np.isin(ids, dead)
    reference = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    reference.index(Analyzer()([t for t, keep in zip(texts, alive, strict=True) if keep]), show_progress=False)
    alive_ids = ids[alive]
    for query in QUERIES:
        scores, got = index.search(query, 10)
        expected = reference.get_scores(Analyzer()([query])[0])
        top = np.argsort(-expected, kind="stable")[:10]
        np.testing.assert_allclose(scores, expected[top], rtol=1e-4)
        assert set(got[:5]) <= set(alive_ids[np.argsort(-expected)[:8]])
    index.save(tmp_path / "bm25.npz")
    loaded = BM25Index.load(tmp_path / "bm25.npz")
    for query in QUERIES:
        np.testing.assert_array_equal(loaded.search(query, 10)[1], index.search(query, 10)[1])


def test_queries_never_rebuild_and_updates_are_visible() -> None:
    texts = corpus()[:200]
    index = BM25Index.from_corpus(range(200), texts)
    assert index.builds == 1
    segments = len(index.segments)
    for query in QUERIES * 5:
        index.search(query, 5)
    assert index.builds == 1 and len(index.segments) == segments
    index.add([1000], ["zebra crossing with a zebra"])
    assert index.search("zebra", 3)[1].tolist() == [1000] and index.builds == 1
    index.remove([1000])
    assert index.search("zebra", 3)[1].tolist() == [] and index.n_docs == 200
    assert index.search("cors", 5, allow=np.array([3, 4]))[1].size <= 2


def test_many_small_adds_merge_segments() -> None:
    index = BM25Index()
    for i in range(30):
        index.add([i], [f"document number {i} about topic{i % 3}"])
    assert len(index.segments) <= 9 and index.n_docs == 30
    assert set(index.search("topic1", 20)[1].tolist()) == {i for i in range(30) if i % 3 == 1}


def test_rrf() -> None:
    fused = rrf([[1, 2, 3], [3, 1, 4]], k=60)
    scores = dict(fused)
    assert scores[1] == 1 / 61 + 1 / 62 and scores[3] == 1 / 63 + 1 / 61 and scores[4] == 1 / 63
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert rrf([[5], []], limit=1) == [(5, 1 / 61)] and rrf([]) == []
