"""Chat over documents: retrieve passages, fit them into the context window, generate, cite.

No framework and no hidden prompt: `RagPipeline` composes a `Retriever` and a `Backend`, and every prompt it
sends is in the returned `RagAnswer.messages`. The steps:

1. Multi-turn: a follow-up question ("and how do I turn it off?") is rewritten into a standalone query by
   the backend, using the recent history; that query is what gets retrieved.
2. Retrieve (dense, BM25 or hybrid, per `RagConfig.mode`), then keep only relevant hits: cosine similarity to
   the query >= `min_score` (dense and hybrid; RRF scores say nothing about relevance) or BM25 score >
   `min_bm25_score` (bm25). When nothing is left the answer says so; the model is not asked to invent one.
3. Fit by token budget: the system prompt and the question are never cut (a question that cannot fit is an
   error); passages go in by rank while they fit, then older history turns. Everything that did not fit is
   listed (`dropped_chunk_ids`, `dropped_turns`), never silently truncated. The prompt itself is
   `ember.model.prompts.rag_messages` (the one the grounded-QA fine-tuning data and the evals use too).
4. Generate through the model's chat template (`Backend.chat` / `chat_stream`) and return the answer with
   one `Citation` per passage the model saw, numbered as in the prompt; those the answer cites as [n] are
   marked `cited`. An answer that is the refusal (`prompts.REFUSAL`) is marked `refused` and cites nothing.
   On our engine `RagConfig.refusal_bias` calibrates how readily the model refuses (`ember.model.refusal`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ember.model import prompts
from ember.model.backends.base import Backend, Completion, Delta, Message
from ember.model.sampling_params import InvalidRequestError, SamplingParams
from ember.model.tool_calls import ChatOptions
from ember.retrieval.errors import InvalidSearchError
from ember.retrieval.retriever import MODES, Hit, Retriever, SearchFilter

SYSTEM_PROMPT = prompts.RAG_SYSTEM
NO_CONTEXT_ANSWER = prompts.REFUSAL
REWRITE_PROMPT = "You rewrite follow-up questions into standalone questions. Reply with the rewritten question only."
REWRITE_EXAMPLES = [
    ("user: Tell me about Paris.\nassistant: Paris is the capital of France.", "How many people live there?",
     "How many people live in Paris?"),
    ("user: What is a paged KV cache?\nassistant: It stores keys and values in fixed-size blocks.",
     "Why is that useful?", "Why is a paged KV cache useful?"),
]


@dataclass(frozen=True, slots=True)
class RagConfig:
    mode: str = "hybrid"  # dense | bm25 | hybrid
    k: int = 3  # passages retrieved (before the relevance filter and the budget); retrieval.rag_k's default
    context_window: int = 2048  # tokens the model sees: prompt + answer
    max_answer_tokens: int = 384  # reserved for the answer (default SamplingParams.max_tokens); answers are short
    min_score: float = 0.2  # least cosine similarity of a relevant passage (dense, hybrid)
    min_bm25_score: float = 0.0  # a relevant passage scores above this (bm25)
    system_prompt: str = SYSTEM_PROMPT
    no_context_answer: str = NO_CONTEXT_ANSWER
    rewrite: bool = True  # rewrite follow-ups into standalone queries (one extra short generation)
    history_turns: int = 6  # most earlier messages sent with the question
    rewrite_max_tokens: int = 48
    demos: bool = True  # the prompt's worked examples (prompts.DEMOS)
    refusal_bias: float = 0.0  # logit bonus of the refusal's first tokens (our engine only; prompts.refusal_bias)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.k >= 1, f"k={self.k} must be >= 1"),
            (self.max_answer_tokens >= 1, f"max_answer_tokens={self.max_answer_tokens} must be >= 1"),
            (self.context_window > self.max_answer_tokens,
             f"context_window={self.context_window} must exceed max_answer_tokens={self.max_answer_tokens}"),
            (-1.0 <= self.min_score <= 1.0, f"min_score={self.min_score} must be a cosine in [-1, 1]"),
            (self.min_bm25_score >= 0, f"min_bm25_score={self.min_bm25_score} must be >= 0"),
            (self.history_turns >= 0, f"history_turns={self.history_turns} must be >= 0"),
            (self.rewrite_max_tokens >= 1, f"rewrite_max_tokens={self.rewrite_max_tokens} must be >= 1"),
            (bool(self.system_prompt.strip()), "system_prompt must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidSearchError(message)


@dataclass(frozen=True, slots=True)
class Citation:
    n: int  # the passage's number in the prompt ([n])
    chunk_id: int
    source: str
    title: str
    page: int | None
    headings: tuple[str, ...]
    start: int  # character span in the document's text
    end: int
    score: float  # the retriever's score (cosine, BM25 or RRF per mode)
    relevance: float  # what the threshold was applied to (cosine; BM25 score in bm25 mode)
    text: str
    cited: bool = False  # the answer refers to it as [n]

    def as_prompt(self) -> prompts.PromptPassage:
        return prompts.PromptPassage(self.text, self.label)

    @property
    def label(self) -> str:
        """What the prompt shows after the passage's number: the file name and where in it."""
        name = self.source.rsplit("/", 1)[-1]
        if self.headings:
            return f"{name} › {' › '.join(self.headings)}"
        return f"{name}, page {self.page}" if self.page else self.title  # eval passages: the article's title

    @property
    def location(self) -> str:
        """'Guide › Install' or 'page 3' or the title: where in the document the passage is."""
        if self.headings:
            return " › ".join(self.headings)
        return f"page {self.page}" if self.page else self.title

    def to_dict(self) -> dict:
        return {"n": self.n, "chunk_id": self.chunk_id, "source": self.source, "title": self.title,
                "page": self.page, "headings": list(self.headings), "location": self.location,
                "start": self.start, "end": self.end, "score": self.score, "relevance": self.relevance,
                "text": self.text, "cited": self.cited}


@dataclass(slots=True)
class RagAnswer:
    text: str
    citations: list[Citation]
    dropped_chunk_ids: list[int]  # relevant passages that did not fit the context window
    query: str  # what was retrieved (the standalone rewrite of a follow-up)
    no_context: bool  # nothing relevant was found; `text` says so and the model was not called
    completion: Completion | None
    messages: list[Message] = field(default_factory=list)  # the exact prompt sent
    dropped_turns: int = 0  # earlier messages left out for lack of room
    prompt_tokens: int = 0
    refused: bool = False  # the answer is "the documents do not say" (or nothing relevant was found)

    @property
    def cited(self) -> list[Citation]:
        """The passages the answer cites as [n]."""
        return [c for c in self.citations if c.cited]


@dataclass(slots=True)
class Retrieved:
    query: str
    passages: list[tuple[Hit, float]]  # relevant hits and their relevance, best first
    rejected: list[Hit] = field(default_factory=list)  # below the threshold


@dataclass(slots=True)
class Prompt:
    messages: list[Message]
    used: list[tuple[Hit, float]]
    dropped_chunk_ids: list[int]
    dropped_turns: int
    tokens: int


class RagPipeline:
    def __init__(self, retriever: Retriever, backend: Backend, config: RagConfig | None = None) -> None:
        self.retriever, self.backend = retriever, backend
        self.config = config or RagConfig()

    # ---- steps -------------------------------------------------------------------------------------
    def standalone_query(self, question: str, history: list[Message] | None = None) -> str:
        """The question itself, or with history a standalone query for retrieval.

        The backend rewrites the follow-up (a few-shot prompt, greedy). Small models often answer instead of
        rewriting, or drop a word, so the query keeps the user's own words: it is the rewrite (or, when the
        rewrite is not a short question, the previous user message) followed by the question as asked.
        """
        turns = [m for m in (history or []) if m.get("role") in ("user", "assistant")]
        if not turns or not self.config.rewrite:
            return question
        convo = "\n".join(f"{m['role']}: {' '.join(str(m['content']).split())[:500]}"
                          for m in turns[-self.config.history_turns:])
        messages: list[Message] = [{"role": "system", "content": REWRITE_PROMPT}]
        for ex_convo, ex_q, ex_a in REWRITE_EXAMPLES:
            messages += [{"role": "user", "content": _rewrite_input(ex_convo, ex_q)},
                         {"role": "assistant", "content": ex_a}]
        messages.append({"role": "user", "content": _rewrite_input(convo, question)})
        out = self.backend.chat(messages, SamplingParams(max_tokens=self.config.rewrite_max_tokens, temperature=0))
        lines = [ln.strip() for ln in out.text.strip().splitlines() if ln.strip()]
        rewrite = lines[0] if lines else ""
        if not (rewrite.endswith("?") and len(rewrite) <= 300) or rewrite.lower() == question.strip().lower():
            users = [str(m["content"]) for m in turns if m["role"] == "user"]
            rewrite = " ".join(users[-1].split())[:300] if users else ""
        return f"{rewrite} {question}".strip()

    def retrieve(self, question: str, history: list[Message] | None = None,
                 where: SearchFilter | None = None) -> Retrieved:
        query = self.standalone_query(question, history)
        hits = self.retriever.search(query, mode=self.config.mode, k=self.config.k, where=where)
        relevance = self._relevance(hits)
        keep: list[tuple[Hit, float]] = []
        rejected: list[Hit] = []
        for h, r in zip(hits, relevance, strict=True):
            ok = r > self.config.min_bm25_score if self.config.mode == "bm25" else r >= self.config.min_score
            (keep.append((h, r)) if ok else rejected.append(h))
        return Retrieved(query, keep, rejected)

    def _relevance(self, hits: list[Hit]) -> list[float]:
        """BM25 scores in bm25 mode, else each hit's cosine similarity to the query (carried by the hit:
        the query is not embedded again)."""
        if self.config.mode == "bm25":
            return [h.score for h in hits]
        return [-1.0 if h.dense_score is None else h.dense_score for h in hits]

    def build_prompt(self, question: str, passages: list[tuple[Hit, float]], history: list[Message] | None = None,
                     max_tokens: int | None = None) -> Prompt:
        """Fit the system prompt, passages (by rank) and recent history into the context window."""
        budget = self.config.context_window - (max_tokens or self.config.max_answer_tokens)
        earlier = [m for m in (history or []) if m.get("role") in ("user", "assistant")][-self.config.history_turns:]
        skipped_turns = len([m for m in (history or []) if m.get("role") in ("user", "assistant")]) - len(earlier)
        count = self._count

        def messages_with(used: list[tuple[Hit, float]], turns: list[Message]) -> list[Message]:
            return prompts.rag_messages([citation(0, h, r).as_prompt() for h, r in used], question, turns,
                                        self.config.system_prompt, self.config.demos)

        base = count(messages_with([], []))
        if base > budget:
            raise InvalidRequestError(
                f"the question and system prompt take {base} tokens, more than the {budget} the context window "
                f"leaves after {max_tokens or self.config.max_answer_tokens} answer tokens",
                hint="Ask a shorter question, or lower max_tokens.")
        used: list[tuple[Hit, float]] = []
        dropped: list[int] = []
        for hit, rel in passages:  # greedy by rank: a long passage that does not fit may let a shorter one in
            trial = [*used, (hit, rel)]
            if count(messages_with(trial, [])) <= budget:
                used = trial
            else:
                dropped.append(hit.chunk.id)
        kept: list[Message] = []
        for m in reversed(earlier):  # newest turns first
            if count(messages_with(used, [m, *kept])) <= budget:
                kept.insert(0, m)
            else:
                break
        messages = messages_with(used, kept)
        return Prompt(messages, used, dropped, skipped_turns + len(earlier) - len(kept), count(messages))

    def _count(self, messages: list[Message]) -> int:
        # Each message costs its text plus the template's few role/separator tokens (counted generously).
        return sum(self.backend.count_tokens(str(m["content"])) + 8 for m in messages) + 4

    # ---- answering ---------------------------------------------------------------------------------
    def _params(self, params: SamplingParams | None, options: ChatOptions | None = None) -> SamplingParams:
        """The caller's sampling (or greedy with the answer budget), plus the refusal bias on our engine (not
        when tools or a response format constrain the reply)."""
        p = params or SamplingParams(max_tokens=self.config.max_answer_tokens, temperature=0)
        caps = self.backend.capabilities
        if self.config.refusal_bias and options is None and caps.logits_processors and caps.tokenizer is not None:
            from ember.model.refusal import RefusalBias

            p = replace(p, logits_processors=[*p.logits_processors,
                                              RefusalBias(caps.tokenizer, self.config.refusal_bias)])
        return p

    def prepare(self, question: str, history: list[Message] | None = None, params: SamplingParams | None = None,
                where: SearchFilter | None = None, options: ChatOptions | None = None
                ) -> tuple[Retrieved, Prompt | None, SamplingParams]:
        if not question.strip():
            raise InvalidRequestError("the question is empty")
        p = self._params(params, options)
        got = self.retrieve(question, history, where)
        if not got.passages:
            return got, None, p
        return got, self.build_prompt(question, got.passages, history, p.max_tokens), p

    def answer(self, question: str, history: list[Message] | None = None, params: SamplingParams | None = None,
               where: SearchFilter | None = None) -> RagAnswer:
        got, prompt, p = self.prepare(question, history, params, where)
        if prompt is None:
            return self._no_context(got)
        completion = self.backend.chat(prompt.messages, p)
        return self._finish(got, prompt, completion.text, completion)

    def stream(self, question: str, history: list[Message] | None = None, params: SamplingParams | None = None,
               where: SearchFilter | None = None, options: ChatOptions | None = None,
               followup: list[Message] | None = None) -> Iterator[Delta | RagAnswer]:
        """Deltas of the answer, then the final `RagAnswer`. Closing it early cancels the generation.

        `options` (tools, response_format) go to the backend with the passages in the prompt; with tools the model
        answers or calls, and it is asked even when no passage is relevant (a tool may know). `followup`: the
        messages after the question (the assistant's tool calls and their results) in a tool round trip."""
        got, prompt, p = self.prepare(question, history, params, where, options)
        if prompt is None and (options is None or not options.calls_allowed):
            ans = self._no_context(got)
            yield Delta(ans.text, [], "stop")
            yield ans
            return
        if prompt is None:
            prompt = Prompt([*(history or []), {"role": "user", "content": question}], [], [], 0, 0)
        messages = [*prompt.messages, *(followup or [])]
        text, completion = "", None
        inner = (self.backend.chat_stream(messages, p, options) if options is not None
                 else self.backend.chat_stream(messages, p))
        try:
            for d in inner:
                text += d.text
                completion = d.completion or completion
                yield d
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()  # frees the engine's KV blocks when our caller stopped reading
        answer = self._finish(got, prompt, text, completion)
        answer.no_context = not got.passages
        yield answer

    def _no_context(self, got: Retrieved) -> RagAnswer:
        return RagAnswer(self.config.no_context_answer, [], [], got.query, True, None, refused=True)

    def _finish(self, got: Retrieved, prompt: Prompt, text: str, completion: Completion | None) -> RagAnswer:
        refused = prompts.is_refusal(text)
        cited = set() if refused else prompts.cited_numbers(text)
        citations = [citation(n, hit, rel, n in cited) for n, (hit, rel) in enumerate(prompt.used, 1)]
        return RagAnswer(text, citations, prompt.dropped_chunk_ids, got.query, False, completion, prompt.messages,
                         prompt.dropped_turns, completion.prompt_tokens if completion else prompt.tokens, refused)

    def with_config(self, **changes: object) -> RagPipeline:
        return RagPipeline(self.retriever, self.backend, replace(self.config, **changes))  # type: ignore[arg-type]


def _rewrite_input(convo: str, question: str) -> str:
    return f"Conversation:\n{convo}\nFollow-up question: {question}\nStandalone question:"


def citation(n: int, hit: Hit, relevance: float, cited: bool = False) -> Citation:
    c = hit.chunk
    return Citation(n, c.id, c.source, c.title, c.page, tuple(c.headings), c.start, c.end, hit.score, relevance,
                    c.text, cited)
