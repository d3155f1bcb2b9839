"""`ScriptedBackend`: a fake LLM that replies from a script, to make agent-loop tests deterministic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ember.model.backends.base import Capabilities, Completion, Delta, Message, Prompt
from ember.model.sampling_params import SamplingParams


class ScriptedBackend:
    """Replies with `replies` in order (the last one repeats); a reply may be a function of the conversation
    (an oracle that reads the observations). Records every conversation it was sent."""

    name = "scripted"
    capabilities = Capabilities()  # no tokenizer, no grammars, no scoring: a remote model's

    def __init__(self, replies: list[str | Callable[[list[Message]], str]], delay_s: float = 0.0) -> None:
        self.replies, self.delay_s = replies, delay_s
        self.calls: list[list[Message]] = []

    def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        self.calls.append([dict(m) for m in messages])
        time.sleep(self.delay_s)
        reply = self.replies[min(len(self.calls), len(self.replies)) - 1]
        text = reply if isinstance(reply, str) else reply(messages)
        prompt = sum(len(str(m["content"]).split()) for m in messages)
        return Completion(text=text, token_ids=list(range(len(text.split()))), finish_reason="stop",
                          prompt_tokens=prompt)

    def generate(self, prompts: list[Prompt], params: Any) -> list[Completion]:
        raise NotImplementedError("the scripted backend only chats")

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        raise NotImplementedError("the scripted backend only chats")

    def chat_stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        raise NotImplementedError("the scripted backend only chats")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass
