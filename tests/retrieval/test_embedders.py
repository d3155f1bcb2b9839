from __future__ import annotations

import numpy as np
import pytest

from ember.retrieval.embedders import MINILM_ID, OpenAIEmbedder, SentenceTransformerEmbedder, load_embedder
from ember.retrieval.errors import EmbedderError

from .conftest import EmbeddingsServer

TEXTS = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply on Monday.",
         "FastAPI declares query parameters as function arguments.", "Bash reads commands from a terminal."]


def test_minilm_from_site_packages(minilm: SentenceTransformerEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    assert minilm.info.model_id == MINILM_ID and minilm.info.dim == 384 and minilm.info.normalized
    assert "site-packages" in str(minilm.folder) and minilm.max_tokens == 254
    vectors = minilm.embed(TEXTS)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = SentenceTransformer(str(minilm.folder), device="cpu", local_files_only=True).encode(TEXTS)
    np.testing.assert_allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # meaning, not just shape
    one_by_one = np.stack([minilm.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(one_by_one, vectors, atol=1e-5)  # batching does not change vectors


def test_load_embedder_specs(minilm: SentenceTransformerEmbedder, tmp_path) -> None:
    default = load_embedder("all-MiniLM-L6-v2")
    assert isinstance(default, SentenceTransformerEmbedder) and default.folder == minilm.folder
    assert default.info == minilm.info
    by_path = load_embedder(str(minilm.folder))
    assert isinstance(by_path, SentenceTransformerEmbedder) and by_path.model_id.startswith("model@")
    remote = load_embedder("http://127.0.0.1:9/v1#all-minilm")
    assert isinstance(remote, OpenAIEmbedder) and remote.model == "all-minilm"
    with pytest.raises(EmbedderError, match="names no model"):
        load_embedder("http://127.0.0.1:9/v1")
    with pytest.raises(EmbedderError, match="unknown embedder"):
        load_embedder("no-such-model")
    with pytest.raises(EmbedderError, match="not a sentence-transformers model folder"):
        load_embedder(str(tmp_path))


def test_openai_client_over_loopback(minilm: SentenceTransformerEmbedder, embeddings_server: EmbeddingsServer) -> None:
    client = OpenAIEmbedder(embeddings_server.url, "all-MiniLM-L6-v2", api_key="k", batch_size=2)
    before = len(embeddings_server.requests)
    vectors = client.embed(TEXTS)
    np.testing.assert_allclose(vectors, minilm.embed(TEXTS), atol=1e-5)
    sent = embeddings_server.requests[before:]
    assert [len(r["body"]["input"]) for r in sent] == [2, 2, 1]
    assert all(r["path"] == "/v1/embeddings" and r["auth"] == "Bearer k" for r in sent)
    assert client.info.model_id == "openai:all-MiniLM-L6-v2" and client.info.dim == 384
    embeddings_server.fail_next = 503
    with pytest.raises(EmbedderError, match="HTTP 503"):
        client.embed(["x"])
    client.close()


def test_openai_client_unreachable() -> None:
    client = OpenAIEmbedder("http://127.0.0.1:9/v1", "m", timeout=2)
    with pytest.raises(EmbedderError, match="cannot reach") as e:
        client.embed(["x"])
    assert e.value.hint and "server" in e.value.hint
