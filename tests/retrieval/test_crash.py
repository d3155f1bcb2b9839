"""kill -9 at any point of an ingest leaves the collection loadable and consistent (real subprocess, SIGKILL)."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ember.retrieval.chunking import TokenChunker
from ember.retrieval.collection import Collection
from ember.retrieval.embedders import OpenAIEmbedder
from ember.retrieval.ingest import chunk_config, ingest
from ember.retrieval.loaders import load_file

from .conftest import FASTAPI, SMALL_DOCS, EmbeddingsServer, consistent
from .crash_worker import CONFIG

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
