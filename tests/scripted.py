"""`ScriptedBackend`: the test suite's one fake LLM (no model), for deterministic tests of everything above
model/ (agents, RAG, the eval harness).

It replies from a script: `replies` in order (the last one repeats), each a string or a function of the
conversation (an oracle that reads the observations), or, stateless, `answer(prompt text)` (the same prompt
gets the same reply whatever the order, as concurrent agents and resumed eval runs need). It records every
conversation in `calls`, counts `generate` batches in `batches`, and declares no capabilities (a remote
model's: no tokenizer, no grammars, no scoring) unless given a `tokenizer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ember.model.backends.base import Capabilities, Completion, Delta, Message, Prompt
from ember.model.sampling_params import SamplingParams

Reply = str | Callable[[list[Message]], str]


class ScriptedBackend:
    name = "scripted"

    def __init__(self, replies: list[Reply] | None = None, *, answer: Callable[[str], str] | None = None,
                 delay_s: float = 0.0, log: Path | None = None, tokenizer: Any = None) -> None:
        if (replies is None) == (answer is None):
            raise ValueError("give replies (a script) or answer (a function of the prompt)")
        self.replies, self.answer, self.delay_s, self.log = replies, answer, delay_s, log
        self.capabilities = Capabilities(tokenizer=tokenizer)
        self.calls: list[list[Message]] = []
        self.batches = 0

    def _reply(self, messages: list[Message]) -> str:
        self.calls.append([dict(m) for m in messages])
        if self.answer is not None:
            return self.answer(str(messages[-1]["content"]) if messages else "")
        assert self.replies is not None
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        return reply if isinstance(reply, str) else reply(messages)

    def chat(self, messages: list[Message], params: SamplingParams, options: Any = None) -> Completion:
        time.sleep(self.delay_s)
        text = self._reply(messages)
        prompt = sum(len(str(m["content"]).split()) for m in messages)
        return Completion(text=text, token_ids=list(range(len(text.split()))), finish_reason="stop",
                          prompt_tokens=prompt)

    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        self.batches += 1
        time.sleep(self.delay_s)
        texts = [p if isinstance(p, str) else "" for p in prompts]
        if self.log is not None:
            with self.log.open("a") as f:
                f.writelines(f"{t}\n" for t in texts if t)
        one = params[0] if isinstance(params, list) else params
        return [self.chat([{"role": "user", "content": t}], one) for t in texts]

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        c = self.generate([prompt], params)[0]
        yield Delta(c.text, c.token_ids, "stop", c)

    def chat_stream(self, messages: list[Message], params: SamplingParams, options: Any = None) -> Iterator[Delta]:
        c = self.chat(messages, params)
        yield Delta(c.text, c.token_ids, "stop", c)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass
