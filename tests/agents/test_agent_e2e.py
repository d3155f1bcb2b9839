"""End to end: the agent through real MCP servers, and `ember agent` with the real default model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from ember.agents.mcp_client import McpHub, McpServerConfig
from ember.agents.react import Agent, AgentConfig
from ember.agents.trace import Trace
from ember.model.backends.base import Message
from tests.scripted import ScriptedBackend

from ..platform.test_cli import run

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
QUESTION = "It is 09:30 in Paris. What time is it in Tokyo?"


def answer_from_observation(messages: list[Message]) -> str:
    """The oracle's last step: read the converted time out of the observation it was given."""
    observation = json.loads(messages[-1]["content"].split("Observation: ", 1)[1].split("\n(If this", 1)[0])
    hhmm = re.search(r"T(\d\d:\d\d)", observation["target"]["datetime"]).group(1)  # type: ignore[union-attr]
    return f"Thought: The observation answers it.\nFinal Answer: {hhmm} in Tokyo"


def test_time_zone_question_through_mcp_server_time_with_a_scripted_oracle() -> None:
    call = {"name": "convert_time", "arguments": {"source_timezone": "Europe/Paris", "time": "09:30",
                                                  "target_timezone": "Asia/Tokyo"}}
    backend = ScriptedBackend([f"Thought: convert it\nAction: {json.dumps(call)}", answer_from_observation])
    with McpHub([McpServerConfig("time", command=TIME_SERVER)]) as hub:
        trace = Agent(backend, hub.tools(), AgentConfig(max_steps=4)).run(QUESTION)
    assert trace.status == "answered" and trace.answer == "17:30 in Tokyo"
    assert trace.steps[0].tool == "convert_time" and '"time_difference": "+8.0h"' in trace.steps[0].observation


NOW_QUESTION = "What time is it now in the Asia/Tokyo time zone?"


@pytest.mark.slow
def test_ember_agent_cli_answers_a_time_zone_question_with_the_real_model(tmp_path: Path,
                                                                          smollm2_folder: Path) -> None:
    """SmolLM2-135M under the tool grammar calls get_current_time through the real mcp-server-time, repeats the
    call, is then held to a Final Answer, and answers with the time the server returned."""
    (tmp_path / "ember.toml").write_text(f'data_dir = "{smollm2_folder.parents[1]}"\n'
                                         f'[engine]\nkv_cache_mb = 128\nmax_model_len = 2048\n'
                                         f'[agents]\nmax_tokens = 96\n'
                                         f'[mcpServers.time]\ncommand = "{TIME_SERVER}"\n')
    out = run("agent", NOW_QUESTION, "--mcp", "time", "--max-steps", "4", "--trace", "trace.json", cwd=tmp_path)
    trace = Trace.load(tmp_path / "trace.json")
    assert trace.constrained and trace.backend == "ember"
    assert {"convert_time", "get_current_time", "calculator"} <= set(trace.tools)
    assert all(s.output and s.completion_tokens > 0 and s.llm_s > 0 for s in trace.steps)
    assert trace.messages[0]["role"] == "system" and trace.messages[1] == {"role": "user", "content": NOW_QUESTION}
    assert all(s.kind != "malformed" for s in trace.steps)  # constrained decoding: every reply parses
    assert out.returncode == 0 and trace.status == "answered", out.stdout
    calls = [s for s in trace.steps if s.kind == "action"]
    assert calls and calls[0].tool == "get_current_time" and calls[0].arguments == {"timezone": "Asia/Tokyo"}
    served = json.loads(calls[0].observation)["datetime"]  # what mcp-server-time answered, e.g. 2026-...+09:00
    assert re.search(r"T(\d\d:\d\d)", served).group(1) in (trace.answer or "")  # type: ignore[union-attr]
    assert "[1] (" in out.stdout and "answered" in out.stdout


@pytest.mark.slow
def test_issue_15_arithmetic_does_not_end_in_parse_error(tmp_path: Path, smollm2_folder: Path) -> None:
    """`ember agent "What is 12.5 * 8 + 3?" --max-steps 4` ended parse_error: SmolLM2's Thought ran on with
    digits until max_tokens and the calculator got English. The Thought is capped and the expression is held to
    arithmetic characters by the grammar, so every reply parses and every call is arithmetic."""
    (tmp_path / "ember.toml").write_text(f'model = "smollm2"\ndata_dir = "{smollm2_folder.parents[1]}"\n'
                                         f'[engine]\nkv_cache_mb = 128\nmax_model_len = 2048\n')
    out = run("agent", "What is 12.5 * 8 + 3?", "--max-steps", "4", "--trace", "trace.json", cwd=tmp_path)
    trace = Trace.load(tmp_path / "trace.json")
    assert trace.status != "parse_error" and all(s.kind != "malformed" for s in trace.steps), out.stdout
    calls = [s for s in trace.steps if s.kind == "action" and s.tool == "calculator"]
    assert calls and all(re.fullmatch(r"[0-9 .,+\-*/%()^a-z]+", s.arguments["expression"]) for s in calls)
