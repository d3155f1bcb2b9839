"""The RAG prompt, citations and refusals with a scripted backend (deterministic), and training == serving."""

from __future__ import annotations

from typing import Any

import torch

from ember.model import prompts
from ember.model.refusal import RefusalBias
from ember.model.train.grounded import grounded_messages
from ember.retrieval.rag import RagConfig, RagPipeline
from ember.retrieval.retriever import Hit
from ember.retrieval.store import ChunkRow
from tests.scripted import ScriptedBackend

TEXTS = ["Run `ember keys revoke ID` to revoke an API key.", "Keys are stored hashed in ember.db."]


class FixedRetriever:
    """Returns the same hits for every query (a real Retriever needs an embedder and a collection)."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits

    def search(self, query: str, mode: str | None = None, k: int | None = None, where: Any = None) -> list[Hit]:
        return self.hits


def hits(headings: tuple[str, ...] = ("Server", "API keys"), source: str = "docs/server.md",
         title: str = "server") -> list[Hit]:
    return [Hit(ChunkRow(i + 10, 1, i, t, 0, len(t), 12, None, headings, source, title), 0.5, i + 1,
                dense_score=0.6) for i, t in enumerate(TEXTS)]


def pipeline(reply: str, **config: Any) -> tuple[RagPipeline, ScriptedBackend]:
    backend = ScriptedBackend([reply])
    return RagPipeline(FixedRetriever(hits()), backend, RagConfig(**config)), backend


def test_prompt_is_the_prompt_module_s_numbered_passages_and_question_last() -> None:
    rag, backend = pipeline("Run `ember keys revoke ID` [1]")
    ans = rag.answer("How do I revoke an API key?")
    labelled = [prompts.PromptPassage(t, "server.md › Server › API keys") for t in TEXTS]
    assert backend.calls[0] == ans.messages == prompts.rag_messages(labelled, "How do I revoke an API key?")
    user = ans.messages[-1]["content"]
    assert user.startswith("Passages:\n\n[1] (server.md › Server › API keys)\nRun `ember keys revoke ID`")
    assert "\n\n[2] (server.md › Server › API keys)\nKeys are stored" in user
    assert user.endswith("\n\nQuestion: How do I revoke an API key?")
    assert ans.messages[0] == {"role": "system", "content": prompts.RAG_SYSTEM}


def test_training_prompt_equals_the_served_prompt() -> None:
    rag = RagPipeline(FixedRetriever(hits((), "eval:Super_Bowl_50/0", "Super_Bowl_50")),
                      ScriptedBackend(["x"]))
    served = rag.answer("Who won?").messages
    assert served == grounded_messages(TEXTS, "Who won?", "Super_Bowl_50")


def test_citations_map_back_to_chunks() -> None:
    rag, _ = pipeline("Keys are hashed [2], and revoked with the CLI [1, 2].")
    ans = rag.answer("How are keys kept?")
    assert [(c.n, c.chunk_id, c.cited) for c in ans.citations] == [(1, 10, True), (2, 11, True)]
    rag, _ = pipeline("Hashed [2].")
    ans = rag.answer("How are keys kept?")
    assert [c.chunk_id for c in ans.cited] == [11] and not ans.refused
    assert ans.citations[0].to_dict()["cited"] is False


def test_refusal_is_marked_and_cites_nothing() -> None:
    rag, _ = pipeline("The documents do not say. [1]")
    ans = rag.answer("Who wrote Ember?")
    assert ans.refused and ans.cited == [] and len(ans.citations) == 2
    rag, _ = pipeline("ember keys revoke [1]")
    assert not rag.answer("How do I revoke a key?").refused


def test_refusal_wording_and_citation_parsing() -> None:
    assert prompts.is_refusal("The documents do not say.")
    assert prompts.is_refusal("the documents do not say")
    assert prompts.is_refusal("The passages do not mention who founded it.")
    assert not prompts.is_refusal("The Saint Lawrence River [1]")
    assert not prompts.is_refusal("Denver Broncos")
    assert prompts.cited_numbers("A [1], B [2, 3] and [x] [12]") == {1, 2, 3, 12}
    assert prompts.strip_citations("Denver Broncos [1, 2].") == "Denver Broncos."


def test_demos_can_be_left_out() -> None:
    rag, backend = pipeline("x", demos=False)
    rag.answer("q?")
    assert [m["role"] for m in backend.calls[0]] == ["system", "user"]
    rag, backend = pipeline("x")
    rag.answer("q?")
    assert len(backend.calls[0]) == 2 + 2 * len(prompts.DEMOS)


class WordTokenizer:
    """Token ids of words (enough for the bias, which only encodes the refusal)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(w) for w in text.split()]  # "The documents do not say." -> [3, 9, 2, 3, 4]


def test_refusal_bias_raises_only_the_refusal_path() -> None:
    bias = RefusalBias(WordTokenizer(), 2.5)
    assert bias.ids == [3, 9]
    first = bias([], torch.zeros(12))
    assert first[3] == 2.5 and first.sum() == 2.5
    second = bias([3], torch.zeros(12))
    assert second[9] == 2.5 and second.sum() == 2.5
    assert bias([4], torch.zeros(12)).sum() == 0  # the reply left the refusal: no bias
    assert bias([3, 9], torch.zeros(12)).sum() == 0  # past the biased prefix


class RecordingBackend(ScriptedBackend):
    """A scripted backend that declares logits processors (as our engine does) and records each request's."""

    def __init__(self) -> None:
        super().__init__(["x [1]"])
        from ember.model.backends.base import Capabilities

        self.capabilities = Capabilities(tokenizer=WordTokenizer(), logits_processors=True)
        self.params: list[Any] = []

    def chat(self, messages: list[Any], params: Any, options: Any = None) -> Any:
        self.params.append(params)
        return super().chat(messages, params)


def test_the_refusal_bias_goes_with_the_request_on_an_engine_that_runs_processors() -> None:
    backend = RecordingBackend()
    RagPipeline(FixedRetriever(hits()), backend, RagConfig(refusal_bias=2.0)).answer("q?")
    (proc,) = backend.params[0].logits_processors
    assert isinstance(proc, RefusalBias) and proc.bias == 2.0
    backend = RecordingBackend()
    RagPipeline(FixedRetriever(hits()), backend, RagConfig()).answer("q?")
    assert backend.params[0].logits_processors == []
    assert prompts.refusal_bias("qwen2.5-coder-0.5b") == 1.0 and prompts.refusal_bias("smollm2") == 0.0
