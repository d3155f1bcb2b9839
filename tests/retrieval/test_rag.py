"""The RAG pipeline with the real MiniLM and the real SmolLM2 on a small collection of Ember's own docs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.model import prompts
from ember.model.backends.base import Delta
from ember.model.backends.ember import EmberBackend
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import SentenceTransformerEmbedder
from ember.retrieval.ingest import ingest
from ember.retrieval.rag import RagAnswer, RagConfig, RagPipeline
from ember.retrieval.retriever import Retriever

DOCS = Path(__file__).resolve().parents[2] / "docs"
pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, minilm: SentenceTransformerEmbedder) -> Iterator[Retriever]:
    data = tmp_path_factory.mktemp("rag")
    col = Collection.create(data, "docs", minilm.info, CollectionConfig())
    ingest(col, minilm, DOCS)
    yield Retriever(col, minilm, mode="hybrid", k=5)
    col.close()


def test_answer_with_citations(retriever: Retriever, backend: EmberBackend) -> None:
    rag = RagPipeline(retriever, backend, RagConfig(max_answer_tokens=24))
    ans = rag.answer("How do I create an API key for the server?")
    assert not ans.no_context and ans.text.strip() and ans.completion is not None
    assert ans.completion.completion_tokens <= 24
    top = ans.citations[0]
    assert top.n == 1 and Path(top.source).name == "server.md" and top.headings[-1] == "API keys"
    assert top.start < top.end and "ember keys create" in top.text and top.relevance >= rag.config.min_score
    # the prompt is the model's chat template input: our system prompt, numbered passages, the question last
    assert ans.messages[0] == {"role": "system", "content": rag.config.system_prompt}
    assert "[1] (server.md › The Ember server › API keys)" in ans.messages[-1]["content"]
    assert ans.messages[-1]["content"].endswith("\n\nQuestion: How do I create an API key for the server?")
    assert ans.dropped_chunk_ids == [] and ans.query == "How do I create an API key for the server?"


def test_nothing_relevant_says_so_without_generating(retriever: Retriever, backend: EmberBackend) -> None:
    rag = RagPipeline(retriever, backend)
    ans = rag.answer("What was the population of medieval Venice in 1300?")
    assert ans.no_context and ans.completion is None and ans.citations == []
    assert ans.text == rag.config.no_context_answer
    got = rag.retrieve("What was the population of medieval Venice in 1300?")
    assert got.passages == [] and got.rejected  # retrieved, then refused by the threshold


def test_tiny_budget_drops_passages_but_never_the_question(retriever: Retriever, backend: EmberBackend) -> None:
    question = "How does Ember search and cite documents? Explain hybrid search, BM25 and dense search."
    full = RagPipeline(retriever, backend, RagConfig(k=5, min_score=0.0))
    got = full.retrieve(question)
    assert len(got.passages) >= 3
    base = full.build_prompt(question, [])
    one = full.build_prompt(question, got.passages[:1])
    budget = one.tokens + 10  # room for the first passage only, not a second one
    tiny = RagPipeline(retriever, backend, RagConfig(k=5, min_score=0.0, context_window=budget + 16,
                                                     max_answer_tokens=16))
    p = tiny.build_prompt(question, got.passages)
    assert p.tokens <= budget and base.tokens < p.tokens
    assert [h.chunk.id for h, _ in p.used] + p.dropped_chunk_ids == [h.chunk.id for h, _ in got.passages] or \
        sorted([h.chunk.id for h, _ in p.used] + p.dropped_chunk_ids) == sorted(h.chunk.id for h, _ in got.passages)
    assert p.dropped_chunk_ids and p.messages[-1]["content"].endswith(f"Question: {question}")
    assert p.messages[0]["content"] == tiny.config.system_prompt
    ans = tiny.answer(question, params=SamplingParams(max_tokens=16, temperature=0))
    assert ans.dropped_chunk_ids == p.dropped_chunk_ids
    assert len(ans.citations) == len(p.used)
    assert ans.completion is not None and ans.completion.prompt_tokens <= tiny.config.context_window - 16
    # no room even for the question: an error, not a cut question
    small = RagPipeline(retriever, backend, RagConfig(min_score=0.0, context_window=base.tokens, max_answer_tokens=8))
    with pytest.raises(InvalidRequestError, match="question and system prompt"):
        small.answer(question)


def test_history_turns_that_do_not_fit_are_counted(retriever: Retriever, backend: EmberBackend) -> None:
    rag = RagPipeline(retriever, backend, RagConfig(min_score=0.0, context_window=700, max_answer_tokens=16,
                                                    rewrite=False))
    got = rag.retrieve("What is prefix caching?")
    history = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok " * 400},
               {"role": "user", "content": "Tell me about the engine."}, {"role": "assistant", "content": "Sure."}]
    p = rag.build_prompt("What is prefix caching?", got.passages[:1], history)
    kept = p.messages[1 + 2 * len(prompts.DEMOS):-1]  # after the system prompt and the worked examples
    assert kept == history[len(history) - len(kept):] and p.dropped_turns == len(history) - len(kept) > 0


def test_stream_deltas_then_answer_and_close_frees_blocks(retriever: Retriever, backend: EmberBackend) -> None:
    rag = RagPipeline(retriever, backend, RagConfig(max_answer_tokens=16))
    items = list(rag.stream("What does the paged KV cache do?"))
    deltas = [d for d in items if isinstance(d, Delta)]
    final = items[-1]
    assert isinstance(final, RagAnswer) and deltas and all(isinstance(d, Delta) for d in items[:-1])
    assert "".join(d.text for d in deltas) == final.text and final.citations
    assert any(Path(c.source).name == "engine.md" for c in final.citations)
    # a reader that stops after the first token cancels the generation and frees its KV blocks
    it = rag.stream("What does the paged KV cache do?", params=SamplingParams(max_tokens=200, temperature=0))
    assert isinstance(next(it), Delta)
    it.close()
    for _ in range(200):
        if not backend.engine.has_unfinished():
            break
        time.sleep(0.02)
    assert not backend.engine.has_unfinished() and backend.engine.blocks.num_used == 0


def test_follow_up_is_rewritten_with_the_history(retriever: Retriever, backend: EmberBackend) -> None:
    rag = RagPipeline(retriever, backend, RagConfig(max_answer_tokens=8))
    history = [{"role": "user", "content": "How do I create an API key for the Ember server?"},
               {"role": "assistant", "content": "Run ember keys create NAME."}]
    query = rag.standalone_query("And how do I revoke it?", history)
    assert query.endswith("And how do I revoke it?") and "API key" in query  # the rewrite keeps the user's words
    ans = rag.answer("And how do I revoke it?", history)
    assert ans.query == query and Path(ans.citations[0].source).name == "server.md"
    assert ans.messages[-3:-1] == history  # the conversation goes to the model too, before the question
    assert rag.standalone_query("And how do I revoke it?") == "And how do I revoke it?"  # no history: as is


def test_config_validates_itself() -> None:
    with pytest.raises(ValueError, match="mode"):
        RagConfig(mode="fuzzy")
    with pytest.raises(ValueError, match="context_window"):
        RagConfig(context_window=100, max_answer_tokens=100)
    with pytest.raises(ValueError, match="min_score"):
        RagConfig(min_score=2.0)
