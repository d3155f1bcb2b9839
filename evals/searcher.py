"""An Ember `Retriever` over an eval collection, answering with corpus ids (`Searcher` for the harness)."""

from __future__ import annotations

from typing import Any

from ember.evals.corpus_index import doc_id
from ember.evals.targets import Passage


class RetrieverSearcher:
    def __init__(self, retriever: Any, describe: dict[str, Any]) -> None:  # retriever: ember.retrieval Retriever
        self.retriever, self._describe = retriever, describe

    def describe(self) -> dict[str, Any]:
        return {"mode": self.retriever.mode, **self._describe}

    def search(self, query: str, k: int) -> list[Passage]:
        """Top-k chunks as passages; a document with several chunks in the top k appears several times
        (the ranking metrics count it once, at its best rank)."""
        hits = self.retriever.search(query, k=k)
        return [Passage(doc_id(h.chunk.source), h.chunk.text, float(h.score)) for h in hits]
