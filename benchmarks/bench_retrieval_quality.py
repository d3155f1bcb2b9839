"""Retrieval quality on SQuAD v1.1 dev: every paragraph is a document, every question a query.

Paragraphs go through Ember's own path (chunker at the default 256/32 tokens, capped to MiniLM's 254,
all-MiniLM-L6-v2 embeddings, FAISS flat cosine, incremental BM25) into a fresh collection; each question
is searched in dense, BM25 and hybrid mode, chunks are mapped back to their paragraph (first occurrence
counts), and the gold paragraph's rank gives recall@1/5/20 and MRR@10. Nothing is tuned: RRF k = 60 and
50 candidates per side are the library defaults, fixed before this benchmark was first run.

    python benchmarks/bench_retrieval_quality.py [--questions N] [--data PATH]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "datasets" / "squad" / "dev-v1.1.json"
KS = (1, 5, 20)


def load_squad(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The paragraphs, and each question with its paragraph's index (through evals' one SQuAD reader)."""
    from ember.evals.datasets import read_squad

    examples, corpus = read_squad(path)
    index = {pid: i for i, pid in enumerate(corpus.docs)}
    paragraphs = [text for _, text in corpus.docs.values()]
    return paragraphs, [(ex.input, index[str(ex.metadata["paragraph"])]) for ex in examples]


def build(paragraphs: list[str], data_dir: Path):  # -> (Collection, embedder, chunk id -> paragraph)
    from ember.retrieval.chunking import TokenChunker
    from ember.retrieval.collection import Collection, CollectionConfig, PreparedDocument
    from ember.retrieval.embedders import load_embedder
    from ember.retrieval.ingest import chunk_config
    from ember.retrieval.store import NewChunk

    embedder = load_embedder("all-MiniLM-L6-v2")
    col = Collection.create(data_dir, "squad", embedder.info, CollectionConfig())
    chunker = TokenChunker(embedder.token_counter(), chunk_config(col, embedder))
    from ember.retrieval.chunking import chunk_text

    chunked = [chunk_text(p, chunker.counter, chunker.config) for p in paragraphs]
    texts = [c.text for cs in chunked for c in cs]
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    embed_s = time.perf_counter() - t0
    docs, offset = [], 0
    for pid, cs in enumerate(chunked):
        new = [NewChunk(n, c.text, c.start, c.end, c.tokens, None, (), vectors[offset + n]) for n, c in enumerate(cs)]
        offset += len(cs)
        docs.append(PreparedDocument.build(f"squad/{pid}", f"paragraph {pid}", "text", paragraphs[pid].encode(), new,
                                           size=len(paragraphs[pid])))
    with col.lock():
        col.apply(docs)
        col.save()
    owner = {cid: int(src.split("/")[1]) for cid, src in col.con.execute(
        "SELECT c.id, d.source FROM chunks c JOIN documents d ON d.id = c.document_id")}
    print(f"{len(paragraphs)} paragraphs -> {len(texts)} chunks, embedded in {embed_s:.1f} s")
    return col, embedder, owner


def paragraphs_of(chunk_ids: list[int], owner: dict[int, int]) -> list[int]:
    """The ranked chunks as ranked paragraphs (the metrics count a paragraph at its best chunk's rank)."""
    return [owner[cid] for cid in chunk_ids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=0, help="use only the first N questions (0 = all)")
    ap.add_argument("--data", type=Path, default=SQUAD)
    args = ap.parse_args()
    from ember.evals.metrics.retrieval import mrr_at_k, recall_at_k
    from ember.retrieval.hybrid import rrf

    paragraphs, questions = load_squad(args.data)
    if args.questions:
        questions = questions[: args.questions]
    with tempfile.TemporaryDirectory() as tmp:
        col, embedder, owner = build(paragraphs, Path(tmp))
        t0 = time.perf_counter()
        qvec = embedder.embed([q for q, _ in questions])
        print(f"{len(questions)} questions embedded in {time.perf_counter() - t0:.1f} s")
        pool = 50
        ranked: dict[str, list[tuple[list[int], int]]] = {"dense": [], "bm25": [], "hybrid": []}
        for (question, gold), v in zip(questions, qvec, strict=True):
            dense = [i for i, _ in col.search_dense(v, pool)]
            lexical = [i for i, _ in col.search_bm25(question, pool)]
            hybrid = [i for i, _ in rrf([dense, lexical], limit=pool)]
            for mode, ids in (("dense", dense), ("bm25", lexical), ("hybrid", hybrid)):
                ranked[mode].append((paragraphs_of(ids, owner), gold))
    print(f"\nSQuAD v1.1 dev ({len(paragraphs)} paragraphs, {len(questions)} questions), all-MiniLM-L6-v2, "
          f"{platform.machine()}")
    print("| mode   | recall@1 | recall@5 | recall@20 | MRR@10 |")
    print("|--------|---------:|---------:|----------:|-------:|")
    for mode, runs in ranked.items():  # through ember.evals.metrics, as the eval suites compute them
        recall = [np.mean([recall_at_k(ids, {gold: 1}, k) for ids, gold in runs]) for k in KS]
        mrr = np.mean([mrr_at_k(ids, {gold: 1}, 10) for ids, gold in runs])
        print(f"| {mode:<6} | " + " | ".join(f"{x:8.3f}" for x in recall[:2]) + f" | {recall[2]:9.3f} | {mrr:6.3f} |")


if __name__ == "__main__":
    main()
