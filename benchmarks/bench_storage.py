"""Storage: PostgreSQL vs SQLite on the same data, in one run (issue 19).

The same documents go into a collection on each database, through the one storage seam
(`ember.retrieval.sql`), and the same queries run against each:

1. ingest: documents written one transaction each (document row, chunk rows with text and vector, the
   generation bump), then the FAISS/BM25 cache saved; ms per document and chunks/s. Texts are real (the
   FastAPI tutorial, or Ember's docs/), split into ~1,000-character chunks; vectors are synthetic 384-d unit
   vectors (embedding costs the same whichever database stores the result, and is left out).
2. query: a hybrid search as the server runs it (`Retriever.search`: the generation check, query embedding
   with the real MiniLM, FAISS, BM25, RRF, the chunk rows fetched, cosine for each hit), p50/p95 ms; and the
   storage part alone (the generation check and the chunk fetch) without the embedding.
3. catch-up: a second `Collection` on the same database with its own cache folder stands for a second server;
   after one more document is written through the first, how long the second's next `refresh()` takes.

PostgreSQL is a private cluster on 127.0.0.1 (tests/pg.py; TCP, fsync off as in the tests) unless
--database-url names one.

    python benchmarks/bench_storage.py [--docs 300] [--queries 100] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ember.retrieval.collection import PreparedDocument
    from ember.retrieval.embedders import Embedder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TUTORIAL = REPO.parent / "shared" / "datasets" / "documents" / "fastapi-docs" / "docs" / "en" / "docs" / "tutorial"
DIM = 384


def corpus(n_docs: int) -> list[tuple[str, list[str]]]:
    """`n_docs` (source, chunk texts) from real Markdown, cycling through the files."""
    files = sorted(TUTORIAL.glob("*.md")) if TUTORIAL.exists() else sorted((REPO / "docs").glob("*.md"))
    texts = [f.read_text() for f in files]
    out = []
    for i in range(n_docs):
        text = texts[i % len(texts)]
        chunks = [text[j:j + 1000] for j in range(0, min(len(text), 8000), 900)] or [text]
        out.append((f"docs/{i:05d}-{files[i % len(files)].name}", [f"[{i}] {c}" for c in chunks]))
    return out


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def prepared(source: str, chunks: list[str]) -> PreparedDocument:
    from ember.retrieval import store
    from ember.retrieval.collection import PreparedDocument

    rows = [store.NewChunk(k, t, 0, len(t), len(t.split()), None, (), vector(t)) for k, t in enumerate(chunks)]
    return PreparedDocument.build(source, source, "markdown", "".join(chunks).encode(), rows)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_one(label: str, database: str | None, docs: list[tuple[str, list[str]]], questions: list[str],
            embedder: Embedder, tmp: Path) -> dict[str, float]:
    from ember.retrieval.collection import Collection, CollectionConfig
    from ember.retrieval.retriever import Retriever

    info = embedder.info
    a_dir, b_dir = tmp / label / "a", tmp / label / ("b" if database else "a")
    col = Collection.create(a_dir, "bench", info, CollectionConfig(kind="flat"), database=database)
    items = [prepared(s, c) for s, c in docs]
    n_chunks = sum(len(c) for _, c in docs)
    per_doc: list[float] = []
    start = time.perf_counter()
    with col.lock():
        for d in items:
            t = time.perf_counter()
            col.apply([d])
            per_doc.append(time.perf_counter() - t)
        col.save()
    ingest_s = time.perf_counter() - start

    other = Collection.open(b_dir, "bench", database=database)
    retriever = Retriever(other, embedder, mode="hybrid", k=5)
    retriever.search("warm up")  # builds the second server's cache from the database
    search_ms, storage_ms = [], []
    for q in questions:
        t = time.perf_counter()
        hits = retriever.search(q)
        search_ms.append((time.perf_counter() - t) * 1e3)
        assert hits
        t = time.perf_counter()
        other.refresh()
        other.chunks([h.chunk.id for h in hits])
        storage_ms.append((time.perf_counter() - t) * 1e3)
    catch_up_ms = []
    for i in range(10):
        with col.lock():
            col.apply([prepared(f"docs/extra-{i}.md", [f"extra document {i} about path parameters"])])
        t = time.perf_counter()
        other.refresh()
        catch_up_ms.append((time.perf_counter() - t) * 1e3)
        assert other.search_bm25(f"extra document {i}", 1)
    other.close()
    col.close()
    return {"ingest_ms_per_doc": statistics.mean(per_doc) * 1e3, "ingest_p95_ms": pct(per_doc, 95) * 1e3,
            "chunks_per_s": n_chunks / ingest_s, "ingest_s": ingest_s, "chunks": n_chunks,
            "search_p50_ms": pct(search_ms, 50), "search_p95_ms": pct(search_ms, 95),
            "storage_p50_ms": pct(storage_ms, 50), "storage_p95_ms": pct(storage_ms, 95),
            "catch_up_p50_ms": pct(catch_up_ms, 50), "catch_up_max_ms": max(catch_up_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=300, help="documents ingested into each database")
    ap.add_argument("--queries", type=int, default=100, help="hybrid searches timed on each")
    ap.add_argument("--database-url", default=None, help="an existing PostgreSQL (default: a private cluster)")
    args = ap.parse_args()

    from ember.retrieval.embedders import MINILM_ID, SentenceTransformerEmbedder, minilm_folder
    from ember.retrieval.sql import close_pools

    embedder = SentenceTransformerEmbedder(minilm_folder(), model_id=MINILM_ID)
    embedder.embed(["warm up"])
    docs = corpus(args.docs)
    words = " ".join(c for _, cs in docs[:50] for c in cs).split()
    rng = np.random.default_rng(0)
    questions = [" ".join(words[i:i + 6]) for i in rng.integers(0, len(words) - 6, args.queries)]
    cluster = None
    url = args.database_url
    if url is None:
        from tests.pg import Cluster

        cluster = Cluster()
        url = cluster.database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {"SQLite": run_one("sqlite", None, docs, questions, embedder, Path(tmp)),
                       "PostgreSQL": run_one("postgresql", url, docs, questions, embedder, Path(tmp))}
    finally:
        close_pools()
        if cluster is not None:
            cluster.stop()
    n = results["SQLite"]["chunks"]
    print(f"\n{args.docs} documents, {n:.0f} chunks (384-d vectors), {args.queries} hybrid queries\n")
    print("| database | ingest ms/doc (p95) | chunks/s | search p50 / p95 ms | storage part p50 / p95 ms "
          "| other server catch-up p50 / max ms |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ingest_ms_per_doc']:.2f} ({r['ingest_p95_ms']:.2f}) | {r['chunks_per_s']:,.0f} "
              f"| {r['search_p50_ms']:.2f} / {r['search_p95_ms']:.2f} | {r['storage_p50_ms']:.2f} / "
              f"{r['storage_p95_ms']:.2f} | {r['catch_up_p50_ms']:.2f} / {r['catch_up_max_ms']:.2f} |")


if __name__ == "__main__":
    main()
