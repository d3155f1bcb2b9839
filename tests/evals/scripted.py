"""The eval tests' scripted backend: the suite's one `ScriptedBackend` (tests/scripted.py), answering as a
fixed function of the prompt so harness tests are exact."""

from __future__ import annotations

from pathlib import Path

from tests.scripted import ScriptedBackend as Scripted


def answer_for(prompt: str) -> str:
    """The word after 'Q:' upper-cased, a wrong answer for questions containing 'hard'."""
    word = prompt.split("Q:", 1)[-1].split()[0] if "Q:" in prompt else prompt.split()[-1]
    return "no idea" if "hard" in prompt else word.strip("?").capitalize()


def ScriptedBackend(delay: float = 0.0, log: Path | None = None) -> Scripted:
    return Scripted(answer=answer_for, delay_s=delay, log=log)
