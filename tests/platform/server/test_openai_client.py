"""The official `openai` client against a real Ember server: chat (plain and RAG, streaming and not),
completions, embeddings, models, and OpenAI-style errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from openai.types.chat import ChatCompletionMessageParam

from ember.retrieval.embedders import SentenceTransformerEmbedder

from .conftest import ServerFactory, upload_docs

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_openai_client_end_to_end(make_server: ServerFactory, embedder: SentenceTransformerEmbedder) -> None:
    server = make_server()
    with server.client() as http:
        upload_docs(http)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2", "ember-rag:docs", "all-MiniLM-L6-v2"]

    # plain chat, not streamed
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.usage is not None and 1 <= r.usage.completion_tokens <= 8

    # the same, streamed: the same greedy text
    chunks = list(client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hello."}],
                                                 max_tokens=8, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    # RAG through the model name; citations in an extra field the client keeps
    q: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How do I create an API key for the server?"}]
    rag = client.chat.completions.create(model="ember-rag:docs", messages=q, max_tokens=12, temperature=0)
    citations = (rag.model_extra or {})["citations"]
    assert citations and citations[0]["source"].endswith("server.md") and citations[0]["headings"][-1] == "API keys"
    assert citations[0]["start"] < citations[0]["end"] and "ember keys create" in citations[0]["text"]
    assert (rag.model_extra or {})["ember"]["no_context"] is False

    # RAG streamed, the collection as an extra body field; the last chunk carries the citations
    stream = client.chat.completions.create(model="smollm2", messages=q, max_tokens=12, temperature=0, stream=True,
                                            extra_body={"collection": "docs"})
    got = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == rag.choices[0].message.content
    assert [c["chunk_id"] for c in (got[-1].model_extra or {})["citations"]] == [c["chunk_id"] for c in citations]

    # an answer from a collection without `temperature` is greedy (the web UI sends none), whatever the
    # sampler's RNG did before; a plain chat without it samples at OpenAI's 1.0 (same text as an explicit 1.0)
    for seed in (1, 2):
        torch.manual_seed(seed)
        again = client.chat.completions.create(model="ember-rag:docs", messages=q, max_tokens=12)
        assert again.choices[0].message.content == rag.choices[0].message.content
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me something."}]
    omitted = client.chat.completions.create(model="smollm2", messages=hi, max_tokens=16, seed=7)
    explicit = client.chat.completions.create(model="smollm2", messages=hi, max_tokens=16, seed=7, temperature=1.0)
    greedy = client.chat.completions.create(model="smollm2", messages=hi, max_tokens=16, temperature=0)
    assert omitted.choices[0].message.content == explicit.choices[0].message.content
    assert any(client.chat.completions.create(model="smollm2", messages=hi, max_tokens=16, seed=s)
               .choices[0].message.content != greedy.choices[0].message.content for s in (7, 8, 9))

    # nothing relevant: said plainly, not invented
    none = client.chat.completions.create(model="ember-rag:docs", max_tokens=12,
                                          messages=[{"role": "user", "content": "Who painted the Mona Lisa?"}])
    assert (none.model_extra or {})["ember"]["no_context"] and (none.model_extra or {})["citations"] == []
    assert none.choices[0].message.content == "The documents do not say."
    assert (none.model_extra or {})["ember"]["refused"] and (none.model_extra or {})["ember"]["cited_chunk_ids"] == []

    # completions
    c = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert c.choices[0].text and c.usage is not None and c.usage.completion_tokens <= 5
    streamed = "".join(x.choices[0].text for x in client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0, stream=True))
    assert streamed == c.choices[0].text

    # embeddings: the client asks for base64 by default; both encodings equal the model's own vectors
    e = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world", "paged KV cache"])
    want = embedder.embed(["hello world", "paged KV cache"])
    assert np.allclose(np.array([d.embedding for d in e.data]), want, atol=1e-5) and e.usage.prompt_tokens > 0
    f = client.embeddings.create(model="all-MiniLM-L6-v2", input="hello world", encoding_format="float")
    assert np.allclose(f.data[0].embedding, want[0], atol=1e-5)

    # errors map to OpenAI error bodies and the client's exception classes
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-4o", messages=q, max_tokens=4)
    assert nf.value.code == "model_not_found" and "gpt-4o" in nf.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ember-rag:nope", messages=q, max_tokens=4)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=q, max_tokens=4, temperature=5)
    assert bad.value.param == "temperature" and isinstance(bad.value.body, dict) and "message" in bad.value.body
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=[], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_sessions_survive_a_restart(make_server: ServerFactory, tmp_path: Path) -> None:
    data = tmp_path / "persist"
    server = make_server(data_dir=data)
    with server.client() as http:
        upload_docs(http, paths=[Path(__file__).resolve().parents[3] / "docs" / "server.md"])
        sid = http.post("/v1/sessions", json={"collection": "docs"}).json()["id"]
        ask = [{"role": "user", "content": "How do I revoke a key?"}]
        r = http.post("/v1/chat/completions",
                      json={"model": "ember-rag:docs", "session_id": sid, "max_tokens": 8, "messages": ask})
        assert r.status_code == 200, r.text
    server.stop()
    again = make_server(data_dir=data)
    with again.client() as http:
        s = http.get(f"/v1/sessions/{sid}").json()
        assert [m["role"] for m in s["messages"]] == ["user", "assistant"]
        assert s["messages"][0]["content"] == "How do I revoke a key?" and s["title"] == "How do I revoke a key?"
        assert s["messages"][1]["content"] == r.json()["choices"][0]["message"]["content"]
        assert s["messages"][1]["citations"][0]["source"].endswith("server.md")
        assert [x["id"] for x in http.get("/v1/sessions").json()["data"]] == [sid]
        assert http.delete(f"/v1/sessions/{sid}").status_code == 200
        assert http.get(f"/v1/sessions/{sid}").status_code == 404
