"""Search hits carry their cosine similarity (`Hit.dense_score`), so the RAG relevance filter embeds the query
once and never reads vectors back (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.ingest import ingest
from ember.retrieval.rag import RagConfig, RagPipeline
from ember.retrieval.retriever import Retriever
from tests.scripted import ScriptedBackend

from .conftest import CountingEmbedder

DOCS = {"quokkas.md": "# Quokkas\n\nQuokkas live on Rottnest Island near Perth and smile in photographs.",
        "kettles.txt": "An electric kettle boils water with a heating element and switches off by itself."}


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_rag_embeds_the_query_once(tmp_path: Path, counting: CountingEmbedder, mode: str, metric: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in DOCS.items():
        (src / name).write_text(text)
    col = Collection.create(tmp_path / "data", "animals", counting.info, CollectionConfig(metric=metric))
    ingest(col, counting, src)
    counting.calls.clear()
    rag = RagPipeline(Retriever(col, counting), ScriptedBackend(["unused"]), RagConfig(mode=mode))
    got = rag.retrieve("Where do quokkas live?")
    assert counting.calls == [1]
    hit, relevance = got.passages[0]
    assert Path(hit.chunk.source).name == "quokkas.md" and hit.dense_score == relevance > 0.5
    assert all(-1 <= r <= 1 for _, r in got.passages)
    col.close()
