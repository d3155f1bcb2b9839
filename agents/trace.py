"""The record of one agent run: every step's model output, tool call, arguments, result, timings and tokens.

Printable (`render`) and saved as JSON (`save`, atomic). The messages sent to the model at the end of the run
are kept too, so a trace shows exactly what the model saw.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["answered", "max_steps", "timeout", "repeated_call", "parse_error", "backend_error"]
STATUSES: tuple[str, ...] = ("answered", "max_steps", "timeout", "repeated_call", "parse_error", "backend_error")
StepKind = Literal["action", "final", "malformed"]


@dataclass(slots=True)
class Step:
    index: int
    output: str  # the model's raw reply
    kind: StepKind
    thought: str = ""
    tool: str | None = None
    arguments: Any = None
    observation: str | None = None
    error: str | None = None  # "parse", "unknown_tool", "invalid_arguments", "tool_error", "repeated"
    answer: str | None = None  # the final answer (kind "final")
    llm_s: float = 0.0
    tool_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class Trace:
    task: str
    backend: str
    format: str  # "react" (text) or "native" (the chat template's tool calls)
    constrained: bool
    tools: list[str]
    steps: list[Step] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    status: Status | None = None
    answer: str | None = None
    detail: str = ""  # why the run ended, in words
    total_s: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.steps)

    @property
    def parse_failures(self) -> int:
        return sum(s.kind == "malformed" for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_tokens"], d["completion_tokens"] = self.prompt_tokens, self.completion_tokens
        return d

    def save(self, path: str | Path) -> None:
        """Write the trace as JSON, atomically (a temp file renamed over the target)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2, ensure_ascii=False, default=str)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        d.pop("prompt_tokens", None)
        d.pop("completion_tokens", None)
        d["steps"] = [Step(**s) for s in d["steps"]]
        return cls(**d)

    def render(self) -> str:
        lines = [f"Task: {self.task}"]
        lines += [render_step(s) for s in self.steps]
        lines.append(f"Status: {self.status} ({self.detail})" if self.detail else f"Status: {self.status}")
        if self.answer is not None:
            lines.append(f"Answer: {self.answer}")
        lines.append(f"{len(self.steps)} steps, {self.total_s:.1f}s, {self.prompt_tokens} prompt + "
                     f"{self.completion_tokens} completion tokens")
        return "\n".join(lines)


def render_step(s: Step) -> str:
    head = f"[{s.index}] ({s.llm_s:.1f}s, {s.completion_tokens} tokens)"
    if s.kind == "malformed":
        fix = f"\n    -> {s.observation}" if s.observation else ""
        return f"{head} unparsable reply: {s.output.strip()[:300]!r}{fix}"
    body = f"{head} Thought: {s.thought}" if s.thought else head
    if s.kind == "final":
        return f"{body}\n    Final Answer: {s.answer}" if s.answer is not None else body
    values = list(s.arguments.values()) if isinstance(s.arguments, dict) else []
    if len(values) == 1 and isinstance(values[0], str) and "\n" in values[0]:  # a program (code action): as code
        code = values[0].strip().replace("\n", "\n        ")
        line = f"{body}\n    Action: {s.tool}  ({s.tool_s:.2f}s)\n        {code}"
    else:
        line = f"{body}\n    Action: {s.tool} {json.dumps(s.arguments, ensure_ascii=False)}  ({s.tool_s:.2f}s)"
    if s.observation is None:
        return line + (f"  [{s.error}]" if s.error else "")
    obs = s.observation.strip().replace("\n", "\n       ")
    return f"{line}\n    Observation: {obs[:800]}"
