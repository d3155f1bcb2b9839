"""Query a collection: dense (FAISS), lexical (BM25) or hybrid (reciprocal-rank fusion of both).

The query is embedded exactly once per search, and only in dense and hybrid modes. Hybrid takes the top
`candidates` of each side before fusing. An optional filter keeps chunks whose document source matches a
glob and/or carries a tag; it is applied inside the searches (FAISS `IDSelector`, BM25 mask), not after
them, so k results come back whenever k chunks match.

Every hit of a dense or hybrid search carries `dense_score`, its cosine similarity to the query, so later
steps (RAG's relevance threshold) never embed the query again or read vectors back. One `Retriever` may be
shared by threads: its searches hold its lock (the collection's SQLite connection and in-memory indexes
are not safe to use from two threads at once).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ember.retrieval.collection import Collection
from ember.retrieval.embedders import Embedder
from ember.retrieval.errors import InvalidSearchError
from ember.retrieval.hybrid import RRF_K, rrf
from ember.retrieval.store import ChunkRow

MODES = ("dense", "bm25", "hybrid")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    source: str | None = None  # glob on the document's path, e.g. "*/tutorial/*.md"
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: ChunkRow
    score: float  # cosine similarity (dense), BM25 score (bm25) or fused RRF score (hybrid)
    rank: int
    dense_rank: int | None = None
    bm25_rank: int | None = None
    dense_score: float | None = None  # cosine similarity to the query (dense and hybrid searches)


class Retriever:
    def __init__(self, collection: Collection, embedder: Embedder | None, *, mode: str = "hybrid", k: int = 5,
                 candidates: int = 50, rrf_k: int = RRF_K) -> None:
        check_mode(mode)
        if k < 1 or candidates < 1:
            raise InvalidSearchError(f"k and candidates must be positive, got k={k}, candidates={candidates}")
        if embedder is not None:
            collection.check_embedder(embedder.info, "query")
        self.collection, self.embedder = collection, embedder
        self.mode, self.k, self.candidates, self.rrf_k = mode, k, candidates, rrf_k
        self.lock = threading.Lock()

    def search(self, query: str, *, mode: str | None = None, k: int | None = None,
               where: SearchFilter | None = None) -> list[Hit]:
        mode, k = mode or self.mode, k or self.k
        check_mode(mode)
        with self.lock:
            return self._search(query, mode, k, where)

    def _search(self, query: str, mode: str, k: int, where: SearchFilter | None) -> list[Hit]:
        self.collection.refresh()
        allow = self.collection.allowed_ids(where.source, where.tag) if where else None
        pool = max(k, self.candidates) if mode == "hybrid" else k
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        vector = None
        if mode in ("dense", "hybrid"):
            if self.embedder is None:
                raise InvalidSearchError(f"{mode} search needs an embedder")
            vector = self.embedder.embed([query])[0]
            dense = self.collection.search_dense(vector, pool, allow)
        if mode in ("bm25", "hybrid"):
            lexical = self.collection.search_bm25(query, pool, allow)
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = lexical
        else:
            ranked = rrf([[i for i, _ in dense], [i for i, _ in lexical]], k=self.rrf_k, limit=k)
        ranked = ranked[:k]
        rows = self.collection.chunks([i for i, _ in ranked])
        dense_rank = {i: r for r, (i, _) in enumerate(dense, 1)}
        bm25_rank = {i: r for r, (i, _) in enumerate(lexical, 1)}
        cosine: dict[int, float] = {}
        if mode == "dense" and self.collection.row.metric == "cosine":
            cosine = dict(dense)  # the index's scores are the cosine similarities
        elif vector is not None:
            cosine = self.collection.cosine(vector, [i for i, _ in ranked])
        return [Hit(rows[i], s, r, dense_rank.get(i), bm25_rank.get(i), cosine.get(i) if mode != "bm25" else None)
                for r, (i, s) in enumerate(ranked, 1) if i in rows]


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidSearchError(f"search mode must be one of {', '.join(MODES)}, got {mode!r}")
