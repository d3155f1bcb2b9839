"""kill -9 at any point of an ingest or a re-embed leaves the collection loadable and consistent (real
subprocess, SIGKILL); a killed ingest loses at most one batch (`BATCH_CHUNKS` chunks, or one document)."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ember.retrieval import store
from ember.retrieval.chunking import TokenChunker
from ember.retrieval.collection import Collection
from ember.retrieval.embedders import OpenAIEmbedder
from ember.retrieval.ingest import BATCH_CHUNKS, chunk_config, ingest
from ember.retrieval.loaders import load_file
from ember.retrieval.reembed import reembed

from .conftest import FASTAPI, SMALL_DOCS, EmbeddingsServer, consistent
from .crash_worker import CONFIG, REEMBED_BATCH, ReversedEmbedder

WORKER = Path(__file__).with_name("crash_worker.py")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, embeddings_server: EmbeddingsServer) -> dict:
    """A collection ingested from the first corpus, then the corpus edited (one file changed, one added,
    one deleted): what the killed re-ingest works on. Also the clean result of ingesting the edited corpus."""
    root = tmp_path_factory.mktemp("crash")
    corpus = root / "corpus"
    corpus.mkdir()
    for rel in SMALL_DOCS[:4]:
        shutil.copy(FASTAPI / rel, corpus / Path(rel).name)
    embedder = OpenAIEmbedder(embeddings_server.url, "all-MiniLM-L6-v2")
    col = Collection.create(root / "data", "docs", embedder.info, CONFIG)
    ingest(col, embedder, corpus)
    versions = {p.name: {sha(p)} for p in corpus.iterdir()}
    shutil.copy(FASTAPI / "tutorial" / "cookie-params.md", corpus / "path-params.md")  # changed
    shutil.copy(FASTAPI / "tutorial" / "header-params.md", corpus / "header-params.md")  # added
    (corpus / "cors.md").unlink()  # deleted
    for p in corpus.iterdir():
        versions.setdefault(p.name, set()).add(sha(p))
    clean = Collection.create(root / "clean", "docs", embedder.info, CONFIG)
    ingest(clean, embedder, corpus)
    expected = {Path(s).name: (d.content_hash, chunk_texts(clean, d.id)) for s, d in clean.documents().items()}
    return {"root": root, "corpus": corpus, "versions": versions, "expected": expected, "embedder": embedder}


def chunk_texts(col: Collection, doc_id: int) -> list[str]:
    return [r[0] for r in col.con.execute("SELECT text FROM chunks WHERE document_id = ? ORDER BY ord", (doc_id,))]


def check_whole_versions(col: Collection, corpus: Path, versions: dict[str, set[str]],
                         embedder: OpenAIEmbedder) -> None:
    """Every document row is exactly one version of its file (old or new), with all of that version's chunks."""
    chunker = TokenChunker(embedder.token_counter(), chunk_config(col, embedder))
    for source, doc in col.documents().items():
        name = Path(source).name
        assert doc.content_hash in versions[name], name
        path = corpus / name
        if path.exists() and sha(path) == doc.content_hash:
            assert chunk_texts(col, doc.id) == [c.text for c in chunker.chunk(load_file(path))]


@pytest.mark.parametrize("event,nth", [("committing", 2), ("committed", 1), ("committed", 3), ("saving", 1),
                                       ("index_saved", 1), ("bm25_saved", 1), ("random", 0)])
def test_sigkill_mid_ingest(tmp_path: Path, baseline: dict, embeddings_server: EmbeddingsServer, event: str,
                            nth: int) -> None:
    data = tmp_path / "data"
    shutil.copytree(baseline["root"] / "data", data)
    cmd = [sys.executable, str(WORKER), str(data), str(baseline["corpus"]), embeddings_server.url, event, str(nth)]
    if event == "random":
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committing"
        time.sleep(random.Random().uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    else:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
        assert out.stdout.splitlines()[-1] == event

    col = Collection.open(data, "docs")  # loadable
    consistent(col)
    check_whole_versions(col, baseline["corpus"], baseline["versions"], baseline["embedder"])

    ingest(col, baseline["embedder"], baseline["corpus"])  # the next ingest finishes the job
    assert not list(col.folder.glob("**/.*.tmp"))
    consistent(col)
    got = {Path(s).name: (d.content_hash, chunk_texts(col, d.id)) for s, d in col.documents().items()}
    assert got == baseline["expected"]
    assert len(col.read_meta() or {}) and (col.read_meta() or {})["generation"] == col.row.generation


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float noise (MiniLM's vectors move in the last bits with the batch they are padded in)."""
    return bool(np.allclose(a, b, atol=1e-4))


def stored_vectors(col: Collection) -> dict[int, np.ndarray]:
    return {int(i): v.copy() for ids, vs in store.iter_vectors(col.con, col.name, col.row.dim)
            for i, v in zip(ids, vs, strict=True)}


def test_sigkill_after_the_first_default_batch_loses_at_most_that_bound(
        tmp_path: Path, embeddings_server: EmbeddingsServer) -> None:
    """With the default batch (`BATCH_CHUNKS`), a kill right after the first commit keeps that commit, and the
    next ingest embeds only what was not committed: the work a kill can lose is the batch in flight, at most
    BATCH_CHUNKS chunks (or one document, when a single document has more)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in sorted((FASTAPI / "tutorial").glob("*.md"))[:24]:
        shutil.copy(p, corpus / p.name)
    data = tmp_path / "data"
    embedder = OpenAIEmbedder(embeddings_server.url, "all-MiniLM-L6-v2")
    Collection.create(data, "docs", embedder.info, CONFIG).close()
    cmd = [sys.executable, str(WORKER), str(data), str(corpus), embeddings_server.url, "committed", "1",
           "ingest-default"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL and out.stdout.splitlines()[-1] == "committed", out.stdout + out.stderr
    col = Collection.open(data, "docs")
    consistent(col)
    kept = col.con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    sizes = [len(TokenChunker(embedder.token_counter(), chunk_config(col, embedder)).chunk(load_file(p)))
             for p in sorted(corpus.iterdir())]
    assert 0 < kept <= max(BATCH_CHUNKS, max(sizes)), (kept, sizes)  # one bounded commit, not the whole corpus
    assert sum(sizes) > 2 * BATCH_CHUNKS  # the corpus needs several commits, so the bound is what was tested
    report = ingest(col, embedder, corpus)  # resumes: re-embeds only the uncommitted rest
    assert report.chunks == sum(sizes) - kept
    assert report.unchanged == len(col.documents()) - len(report.added)
    consistent(col)


@pytest.mark.parametrize("event,nth", [("shadow_committed", 1), ("shadow_committed", 2), ("shadow_saved", 1),
                                       ("swapped", 1)])
def test_sigkill_mid_reembed(tmp_path: Path, baseline: dict, embeddings_server: EmbeddingsServer, event: str,
                             nth: int) -> None:
    """A re-embed killed between shadow batches, after the shadow index is saved, or after the swap leaves the
    collection wholly on the old model or wholly on the new one (every vector), and the next re-embed ends it."""
    data = tmp_path / "data"
    shutil.copytree(baseline["root"] / "data", data)
    before = Collection.open(data, "docs")
    old_id, old = before.row.embedder_id, stored_vectors(before)
    before.close()
    assert len(old) > 2 * REEMBED_BATCH  # room for two shadow batches before the swap
    cmd = [sys.executable, str(WORKER), str(data), "-", embeddings_server.url, event, str(nth), "reembed"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL and out.stdout.splitlines()[-1] == event, out.stdout + out.stderr

    col = Collection.open(data, "docs")
    consistent(col)
    got = stored_vectors(col)
    assert got.keys() == old.keys()
    reversed_embedder = ReversedEmbedder(baseline["embedder"])
    if event == "swapped":  # the swap had committed: every vector is the new model's
        assert col.row.embedder_id == "minilm-reversed"
        assert all(same(got[i], old[i][::-1]) for i in old)
    else:  # before the swap: the old collection, untouched
        assert col.row.embedder_id == old_id
        assert all(np.array_equal(got[i], old[i]) for i in old)  # untouched, bit for bit
        reembed(col, reversed_embedder)  # the next re-embed starts over and finishes
        consistent(col)
    final = stored_vectors(col)
    assert col.row.embedder_id == "minilm-reversed"
    assert all(same(final[i], old[i][::-1]) for i in old)
    assert col.con.execute("SELECT count(*) FROM shadow_vectors").fetchone()[0] == 0
    if event != "swapped":  # after a swap the stale shadow file waits for the next writer, which removes it
        assert not (col.folder / "index.next.faiss").exists()
    query = reversed_embedder.embed(["How do I declare query parameters?"])[0]
    assert col.search_dense(query, 3)[0][1] > 0.4  # the index answers with the new model's vectors
