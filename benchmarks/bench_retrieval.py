"""Retrieval speed, each figure against a peer measured in the same run.

1. ingest: `ember` ingest of a Markdown folder (load, chunk, embed, SQLite, FAISS, BM25, atomic saves)
   in chunks/s vs raw `SentenceTransformer.encode` of the very same chunk texts (best of --rounds each).
2. flat: hybrid query latency (query embedding, FAISS, BM25, RRF, SQLite fetch) as a collection grows
   from 10 to 10,000 documents incrementally, vs a peer that rebuilds its BM25 index (bm25s) per query.
   Document texts are real (SQuAD and MS MARCO passages); their vectors are synthetic (see 3) so the run
   needs no hour of embedding; the query is embedded for real every time.
3. index: FAISS latency p50/p99 per single query (search alone, and with the MiniLM query embedding),
   recall@10 against exact search, build time and memory per 1M vectors, for flat, HNSW, IVF and IVF-PQ
   at --sizes vectors. Vectors are drawn from a Gaussian fitted to real MiniLM embeddings of SQuAD
   questions (mean and full covariance, then L2-normalised), so they have MiniLM's spectrum; queries are
   real MiniLM embeddings of held-out questions. A Gaussian has no cluster structure, which makes it a hard
   case for graph and cluster indexes (real embeddings are far easier), so:
4. real: the same table on real MiniLM embeddings of every passage on disk (~10k MS MARCO documents and
   SQuAD paragraph pieces), with real questions as queries.

    python benchmarks/bench_retrieval.py [--parts ingest,flat,index,real] [--sizes 100000,1000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TUTORIAL = DATASETS / "documents" / "fastapi-docs" / "docs" / "en" / "docs" / "tutorial"


def rss_of_loaded(path: Path) -> int:
    """Resident memory a fresh process gains by reading the index file (what serving it costs)."""
    import subprocess
    import sys

    code = ("import faiss, os\n"
            "def rss():\n    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
            f"a = rss(); index = faiss.read_index({str(path)!r}); print(rss() - a)")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def questions(n: int, skip: int = 0) -> list[str]:
    from ember.evals.datasets import read_squad  # the one SQuAD reader

    examples, _ = read_squad(DATASETS / "squad" / "dev-v1.1.json")
    return [ex.input for ex in examples][skip: skip + n]


def passages(n: int | None) -> list[str]:
    """Real passages: MS MARCO documents, then SQuAD paragraphs cut into pieces of about 60 words."""
    from ember.evals.datasets import read_beir, read_squad  # the one BEIR and SQuAD readers

    _, marco = read_beir(DATASETS / "retrieval" / "msmarco-subset50")
    out = [(title + " " + text).strip() for title, text in marco.docs.values()]
    for name in ("dev-v1.1.json", "v2-train-source.json"):
        for _, context in read_squad(DATASETS / "squad" / name)[1].docs.values():
            words = context.split()
            out += [" ".join(words[a:a + 60]) for a in range(0, len(words), 60)]
    if n is None:
        return out
    if len(out) < n:
        raise SystemExit(f"only {len(out)} passages on disk, {n} wanted")
    return out[:n]


class Synthetic:
    """Vectors with the statistics of real MiniLM embeddings (Gaussian fit, normalised)."""

    def __init__(self, real: np.ndarray) -> None:
        self.mean = real.mean(0)
        cov = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
        self.chol = np.linalg.cholesky(cov).astype(np.float32)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, len(self.mean)), np.float32)
        for a in range(0, n, 100_000):
            z = rng.standard_normal((min(100_000, n - a), len(self.mean)), dtype=np.float32)
            x = self.mean + z @ self.chol.T
            out[a:a + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


# 1. ingest ----------------------------------------------------------------------------------------------
def bench_ingest(embedder, corpus: Path, rounds: int) -> dict:
    from ember.retrieval.collection import Collection, CollectionConfig
    from ember.retrieval.ingest import ingest

    pipeline, raw, chunks = [], [], 0
    texts: list[str] = []
    for r in range(rounds):
        tmp = Path(tempfile.mkdtemp())
        col = Collection.create(tmp, "bench", embedder.info, CollectionConfig())
        report = ingest(col, embedder, corpus)
        pipeline.append(report.seconds)
        chunks = report.chunks
        texts = [row[0] for row in col.con.execute("SELECT text FROM chunks ORDER BY id")]
        col.close()
        shutil.rmtree(tmp)
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        raw.append(time.perf_counter() - t0)
        print(f"  round {r + 1}: ember ingest {pipeline[-1]:.1f} s, raw encode {raw[-1]:.1f} s ({chunks} chunks)")
    p, e = min(pipeline), min(raw)
    return {"files": len(list(corpus.rglob("*.md"))), "chunks": chunks, "ember_s": p, "raw_s": e,
            "ember_cps": chunks / p, "raw_cps": chunks / e, "overhead": p / e - 1}


# 2. latency as the collection grows -----------------------------------------------------------------------
def bench_flat(embedder, synth: Synthetic, sizes: list[int], n_queries: int) -> list[dict]:
    import bm25s

    from ember.retrieval.collection import Collection, CollectionConfig, PreparedDocument
    from ember.retrieval.lexical import Analyzer
    from ember.retrieval.retriever import Retriever
    from ember.retrieval.store import NewChunk

    texts = passages(max(sizes))
    vectors = synth.sample(len(texts), seed=7)
    qs = questions(n_queries, skip=5000)
    tmp = Path(tempfile.mkdtemp())
    col = Collection.create(tmp, "flat", embedder.info, CollectionConfig(kind="flat"))
    retriever = Retriever(col, embedder, mode="hybrid", k=5)
    analyzer = Analyzer()
    rows, done = [], 0
    for size in sizes:
        docs = [PreparedDocument.build(f"p/{i}", f"passage {i}", "text", texts[i].encode(),
                                       [NewChunk(0, texts[i], 0, len(texts[i]), 0, None, (), vectors[i])],
                                       size=len(texts[i]))
                for i in range(done, size)]
        with col.lock():
            col.apply(docs)
        done = size
        assert col.bm25 is not None
        builds = col.bm25.builds
        ours = []
        for q in qs:
            t0 = time.perf_counter()
            retriever.search(q)
            ours.append(time.perf_counter() - t0)
        assert col.bm25.builds == builds  # no rebuild per query
        peer = []
        corpus_tokens = None
        for q in qs[: max(5, n_queries // (1 + size // 1000))]:
            t0 = time.perf_counter()
            qv = embedder.embed([q])
            col.search_dense(qv[0], 50)
            corpus_tokens = analyzer(texts[:size])  # peers re-tokenise and re-index on every query
            bm = bm25s.BM25(method="lucene")
            bm.index(corpus_tokens, show_progress=False)
            bm.retrieve([analyzer([q])[0]], k=min(50, size), show_progress=False)
            peer.append(time.perf_counter() - t0)
        rows.append({"docs": size, "p50": pct(ours, 50), "p99": pct(ours, 99), "peer_p50": pct(peer, 50)})
        print(f"  {size:>6} docs: ember hybrid p50 {rows[-1]['p50']:.1f} ms, p99 {rows[-1]['p99']:.1f} ms; "
              f"rebuild-per-query peer p50 {rows[-1]['peer_p50']:.1f} ms")
    col.close()
    shutil.rmtree(tmp)
    return rows


# 3. index kinds at 100k / 1M ------------------------------------------------------------------------------
def bench_index(embedder, base: np.ndarray, label: str, n_queries: int, cache: Path | None, hnsw_m: int,
                ef_construction: int) -> list[dict]:
    from ember.retrieval.index import IndexSpec, VectorIndex

    qs = questions(n_queries, skip=3000)
    qvecs = embedder.embed(qs)
    n = len(base)
    ids = np.arange(n, dtype=np.int64)
    embed_lat = []
    for q in qs:
        t0 = time.perf_counter()
        embedder.embed([q])
        embed_lat.append(time.perf_counter() - t0)
    nlist = int(np.sqrt(n))
    configs: list[tuple[str, IndexSpec, list[int | None]]] = [
        ("flat", IndexSpec(384, "cosine", "flat"), [None]),
        ("hnsw", IndexSpec(384, "cosine", "hnsw", hnsw_m=hnsw_m, ef_construction=ef_construction),
         [64, 128, 256, 512, 1024]),
        ("ivf", IndexSpec(384, "cosine", "ivf", nlist=nlist), [16, 32, 64, 128]),
        ("ivfpq", IndexSpec(384, "cosine", "ivfpq", nlist=nlist, pq_m=48), [16, 64]),
    ]
    truth = None
    rows = []
    folder = cache or Path(tempfile.mkdtemp())
    for kind, spec, knobs in configs:
        gc.collect()
        path = folder / f"{label}-{kind}-{n}-{hnsw_m}-{ef_construction}.faiss"
        t0 = time.perf_counter()
        if cache and path.exists():
            index = VectorIndex.load(path, spec)
            build_s = float("nan")
        else:
            index = VectorIndex(spec)
            index.add(ids, base)
            build_s = time.perf_counter() - t0
            index.save(path)
        mem = rss_of_loaded(path)
        disk = path.stat().st_size
        if not cache:
            path.unlink()
        if truth is None:
            truth = index.search(qvecs, 10)[1]
        for knob in knobs:
            if knob is not None:
                from dataclasses import replace

                index.spec = replace(index.spec, ef_search=knob) if kind == "hnsw" else replace(index.spec, nprobe=knob)
            got = index.search(qvecs, 10)[1]
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)]))
            lat, e2e = [], []
            for q, v in zip(qs, qvecs, strict=True):
                t0 = time.perf_counter()
                index.search(v[None, :], 10)
                lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                index.search(embedder.embed([q]), 10)
                e2e.append(time.perf_counter() - t0)
            knob_name = {"hnsw": "efSearch", "ivf": "nprobe", "ivfpq": "nprobe"}.get(kind, "")
            row = {"n": n, "kind": kind, "knob": f"{knob_name}={knob}" if knob else "exact", "recall": recall,
                   "p50": pct(lat, 50), "p99": pct(lat, 99), "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99),
                   "build_s": build_s, "mem_per_1m_gb": mem / n * 1e6 / 1e9, "disk_per_1m_gb": disk / n * 1e6 / 1e9}
            rows.append(row)
            print(f"  {kind:<5} {row['knob']:<12} recall@10 {recall:.3f}  search p50 {row['p50']:.2f} ms "
                  f"p99 {row['p99']:.2f} ms | with embedding p50 {row['e2e_p50']:.2f} ms p99 {row['e2e_p99']:.2f} ms "
                  f"| build {build_s:.0f} s, RSS {row['mem_per_1m_gb']:.2f} GB/1M, "
                  f"file {row['disk_per_1m_gb']:.2f} GB/1M")
        del index
    print(f"  query embedding alone: p50 {pct(embed_lat, 50):.2f} ms, p99 {pct(embed_lat, 99):.2f} ms")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="ingest,flat,index,real",
                    help="ingest, flat (latency vs size), index (synthetic 100k/1M), real (every real passage)")
    ap.add_argument("--corpus", type=Path, default=TUTORIAL, help="folder for the ingest part")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--flat-sizes", default="10,100,1000,10000")
    ap.add_argument("--sizes", default="100000,1000000", help="index sizes for the index part")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--cache", type=Path, default=None, help="keep built indexes here between runs")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    import torch

    from ember.retrieval.embedders import load_embedder

    embedder = load_embedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    if "ingest" in parts:
        print(f"1. ingest {args.corpus}")
        r = bench_ingest(embedder, args.corpus, args.rounds)
        print(f"  => ember {r['ember_cps']:.1f} chunks/s vs raw encode {r['raw_cps']:.1f} chunks/s: "
              f"pipeline overhead {100 * r['overhead']:+.1f}% ({r['files']} files, {r['chunks']} chunks)")
    if parts & {"flat", "index", "real"}:
        synth = Synthetic(embedder.embed(questions(3000)))
    if "flat" in parts:
        print("2. hybrid query latency as the collection grows")
        bench_flat(embedder, synth, [int(s) for s in args.flat_sizes.split(",")], 100)
    if "index" in parts:
        if args.cache:
            args.cache.mkdir(parents=True, exist_ok=True)
        for n in [int(s) for s in args.sizes.split(",")]:
            print(f"3. index kinds at {n:,} synthetic vectors")
            t0 = time.perf_counter()
            base = synth.sample(n, seed=n)
            print(f"  vectors ready ({time.perf_counter() - t0:.1f} s)")
            bench_index(embedder, base, "synthetic", args.queries, args.cache, args.hnsw_m, args.ef_construction)
    if "real" in parts:
        print("4. index kinds on real MiniLM embeddings of every passage on disk (MS MARCO + SQuAD pieces)")
        t0 = time.perf_counter()
        base = embedder.embed(passages(None))
        print(f"  {len(base):,} passages embedded ({time.perf_counter() - t0:.1f} s)")
        bench_index(embedder, base, "real", args.queries, args.cache, args.hnsw_m, args.ef_construction)


if __name__ == "__main__":
    main()
