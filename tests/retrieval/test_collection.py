from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ember.retrieval import store
from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import SentenceTransformerEmbedder, minilm_folder
from ember.retrieval.errors import CollectionExistsError, CollectionNotFoundError, EmbedderMismatchError
from ember.retrieval.ingest import IngestOptions, ingest
from ember.retrieval.reembed import reembed
from ember.retrieval.retriever import Retriever, SearchFilter

from .conftest import CountingEmbedder, consistent

CONFIG = CollectionConfig(chunk_size=128, chunk_overlap=16)


def test_ingest_reingest_and_search(tmp_path: Path, small_corpus: Path, counting: CountingEmbedder) -> None:
    col = Collection.create(tmp_path / "data", "docs", counting.info, CONFIG)
    report = ingest(col, counting, small_corpus, IngestOptions(tags=("tutorial",)))
    assert report.files == 6 and len(report.added) == 6 and report.chunks > 20 and not report.skipped
    docs, chunks = col.counts()
    assert (docs, chunks) == (6, report.chunks)
    assert sum(counting.calls) == chunks and len(counting.calls) < 6  # batched across documents
    consistent(col)

    retriever = Retriever(col, counting, k=3)
    bm25_builds = col.bm25.builds if col.bm25 else 0
    for mode in ("dense", "bm25", "hybrid"):
        counting.calls.clear()
        hits = retriever.search("How do I declare an optional query parameter?", mode=mode)
        assert counting.calls == ([] if mode == "bm25" else [1])  # the query is embedded exactly once
        assert len(hits) == 3 and hits[0].chunk.source.endswith("query-params.md"), (mode, hits[0].chunk.source)
        assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[-1].score
    assert col.bm25 is not None and col.bm25.builds == bm25_builds  # queries never rebuild BM25
    hit = retriever.search("CORSMiddleware allow_origins", mode="bm25", k=1)[0]
    text = (small_corpus / "cors.md").read_text()
    assert text[hit.chunk.start:hit.chunk.end] == hit.chunk.text
    assert hit.chunk.headings[0] == "CORS (Cross-Origin Resource Sharing)"

    # filters run inside the searches
    only = retriever.search("parameters", mode="hybrid", k=5, where=SearchFilter(source="*path-params.md"))
    assert only and all(h.chunk.source.endswith("path-params.md") for h in only)
    assert retriever.search("parameters", where=SearchFilter(tag="nope")) == []
    assert len(retriever.search("parameters", where=SearchFilter(tag="tutorial"))) == 3

    # re-ingest: unchanged files are untouched; changed re-embedded; new added; deleted removed
    before = {s: d.id for s, d in col.documents().items()}
    untouched_chunks = set(store.chunk_ids(col.con, "docs", [before[str((small_corpus / "cors.md").resolve())]]))
    counting.calls.clear()
    again = ingest(col, counting, small_corpus, IngestOptions(tags=("tutorial",)))
    assert again.unchanged == 6 and again.chunks == 0 and counting.calls == []
    (small_corpus / "path-params.md").write_text("# Path Parameters\n\nZebra crossings are rewritten here.\n")
    (small_corpus / "new.md").write_text("# New page\n\nA brand new page about quokkas.\n")
    (small_corpus / "static-files.md").unlink()
    third = ingest(col, counting, small_corpus, IngestOptions(tags=("tutorial",)))
    assert [Path(p).name for p in third.updated] == ["path-params.md"]
    assert [Path(p).name for p in third.added] == ["new.md"]
    assert [Path(p).name for p in third.removed] == ["static-files.md"] and third.unchanged == 4
    assert third.chunks == 2
    after = col.documents()
    assert len(after) == 6 and after[str((small_corpus / "cors.md").resolve())].id == before[
        str((small_corpus / "cors.md").resolve())]
    assert untouched_chunks <= set(store.chunk_ids(col.con, "docs"))
    assert retriever.search("quokkas", mode="bm25", k=1)[0].chunk.source.endswith("new.md")
    assert retriever.search("zebra crossings", mode="hybrid", k=1)[0].chunk.source.endswith("path-params.md")
    assert not retriever.search("StaticFiles mount", mode="bm25", where=SearchFilter(source="*static-files.md"))
    consistent(col)

    # a second process sees the same collection from the files
    reopened = Collection.open(tmp_path / "data", "docs")
    reopened.load_indexes()
    assert reopened.repairs == [] and reopened.index is not None and reopened.index.ntotal == col.counts()[1]
    assert [h.chunk.id for h in Retriever(reopened, counting, k=3).search("background tasks")] == \
        [h.chunk.id for h in retriever.search("background tasks")]


def test_embedder_mismatch_is_refused(tmp_path: Path, small_corpus: Path, minilm: SentenceTransformerEmbedder) -> None:
    col = Collection.create(tmp_path, "docs", minilm.info, CONFIG)
    other = SentenceTransformerEmbedder(minilm_folder(), model_id="some-other-model")
    with pytest.raises(EmbedderMismatchError) as e:
        ingest(col, other, small_corpus)
    assert "some-other-model" in e.value.message and "all-MiniLM-L6-v2" in e.value.message
    assert e.value.hint and "ember collections reembed docs" in e.value.hint
    with pytest.raises(EmbedderMismatchError):
        Retriever(col, other)
    assert col.counts() == (0, 0)
    with pytest.raises(CollectionExistsError):
        Collection.create(tmp_path, "docs", minilm.info, CONFIG)
    with pytest.raises(CollectionNotFoundError, match="collections: docs"):
        Collection.open(tmp_path, "nope")
    with pytest.raises(ValueError, match="invalid collection name"):
        Collection.create(tmp_path, "../evil", minilm.info, CONFIG)


def test_damaged_index_files_are_rebuilt_from_sqlite(tmp_path: Path, small_corpus: Path,
                                                    minilm: SentenceTransformerEmbedder) -> None:
    col = Collection.create(tmp_path, "docs", minilm.info, CONFIG)
    ingest(col, minilm, small_corpus, IngestOptions(include=("cors.md", "background-tasks.md")))
    expected = [h.chunk.id for h in Retriever(col, minilm).search("background tasks", k=5)]
    folder = col.folder
    (folder / "index.faiss").write_bytes(b"not faiss")
    (folder / "bm25" / "index.npz").unlink()
    fresh = Collection.open(tmp_path, "docs")
    assert [h.chunk.id for h in Retriever(fresh, minilm).search("background tasks", k=5)] == expected
    assert any("rebuilt the vector index" in r for r in fresh.repairs)
    consistent(fresh)


def test_reembed_swaps_atomically(tmp_path: Path, small_corpus: Path, minilm: SentenceTransformerEmbedder) -> None:
    raw = SentenceTransformerEmbedder(minilm_folder(), model_id="minilm-raw", normalize=False)
    col = Collection.create(tmp_path, "docs", raw.info, CollectionConfig(metric="l2", chunk_size=128))
    ingest(col, raw, small_corpus, IngestOptions(include=("cors.md", "first-steps.md")))
    ids_before = store.chunk_ids(col.con, "docs")

    def crash_at(event: str) -> None:
        if event == "shadow_saved":
            raise KeyboardInterrupt("killed before the swap")

    col.events = crash_at
    with pytest.raises(KeyboardInterrupt):
        reembed(col, minilm)
    col.events = lambda event: None
    old = Collection.open(tmp_path, "docs")
    assert old.embedder == raw.info  # untouched: still the old model, old vectors
    consistent(old)

    report = reembed(old, minilm, embedder_spec="all-MiniLM-L6-v2")
    assert report.chunks == len(ids_before)
    new = Collection.open(tmp_path, "docs")
    assert new.embedder == minilm.info and new.row.embedder_spec == "all-MiniLM-L6-v2"
    assert np.array_equal(store.chunk_ids(new.con, "docs"), ids_before)
    ids, vectors = store.vectors_for(new.con, ids_before, 384)
    texts = dict(store.chunk_texts(new.con, ids))
    np.testing.assert_allclose(vectors, minilm.embed([texts[i] for i in ids]), atol=1e-5)
    assert new.read_meta()["embedder"] == minilm.info.model_id
    assert new.con.execute("SELECT count(*) FROM shadow_vectors").fetchone()[0] == 0
    assert not (new.folder / "index.next.faiss").exists()
    consistent(new)
    hits = Retriever(new, minilm).search("allow origins", mode="dense", k=1)
    assert hits[0].chunk.source.endswith("cors.md")
    with pytest.raises(EmbedderMismatchError):
        Retriever(new, raw)


def test_delete_collection(tmp_path: Path, minilm: SentenceTransformerEmbedder, small_corpus: Path) -> None:
    col = Collection.create(tmp_path, "gone", minilm.info, CONFIG)
    ingest(col, minilm, small_corpus / "cors.md")
    assert [r.name for r in Collection.names(tmp_path)] == ["gone"]
    Collection.delete(tmp_path, "gone")
    assert Collection.names(tmp_path) == [] and not col.folder.exists()
    con = store.connect(tmp_path / "ember.db")
    assert con.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
