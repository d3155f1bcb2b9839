"""A scripted backend (no model): answers are a fixed function of the prompt, so harness tests are exact."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from ember.model.backends.base import Capabilities, Completion, Delta, Message, Prompt
from ember.model.sampling_params import SamplingParams


def answer_for(prompt: str) -> str:
    """The word after 'Q:' upper-cased, a wrong answer for questions containing 'hard'."""
    word = prompt.split("Q:", 1)[-1].split()[0] if "Q:" in prompt else prompt.split()[-1]
    return "no idea" if "hard" in prompt else word.strip("?").capitalize()


class ScriptedBackend:
    name = "scripted"
    capabilities = Capabilities()  # no tokenizer, no grammars, no scoring: a remote model's

    def __init__(self, delay: float = 0.0, log: Path | None = None) -> None:
        self.delay, self.log, self.calls = delay, log, 0

    def generate(self, prompts: list[Prompt], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        self.calls += 1
        time.sleep(self.delay)
        texts = [answer_for(p if isinstance(p, str) else "") for p in prompts]
        if self.log is not None:
            with self.log.open("a") as f:
                f.writelines(f"{p}\n" for p in prompts if isinstance(p, str))
        return [Completion(t, [], "stop", 0) for t in texts]

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Delta]:
        c = self.generate([prompt], params)[0]
        yield Delta(c.text, [], "stop", c)

    def chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        return self.generate([messages[-1]["content"]], params)[0]

    def chat_stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        return self.stream(messages[-1]["content"], params)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass
