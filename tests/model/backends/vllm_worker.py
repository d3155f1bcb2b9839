"""Runs inside `.venv-vllm`: one `VLLMBackend` on a folder, a list of cases through it, results as JSON.

    .venv-vllm/bin/python tests/model/backends/vllm_worker.py FOLDER CASES.json OUT.json

A case is {"name", "op", ...}; op is generate (prompts, params: one dict or one per prompt), chat
(messages, params; "options": OpenAI's tools / tool_choice / response_format), stream / chat_stream (prompt
or messages, params; "take": N closes the iterator after N deltas) or count_tokens (text). Completions come
back as `dataclasses.asdict` dicts, an `EmberError` as {"error": its class name, "message"}. The engine
starts once for all cases: that start is the slow part (about a minute on a CPU).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any


def run_case(backend: Any, case: dict[str, Any]) -> Any:
    from ember.model.sampling_params import SamplingParams

    op = case["op"]
    raw = case.get("params", {})
    params = [SamplingParams(**p) for p in raw] if isinstance(raw, list) else SamplingParams(**raw)
    if op == "generate":
        return [dataclasses.asdict(c) for c in backend.generate(case["prompts"], params)]
    if op == "chat":
        if "options" in case:  # tools / response_format (issue 16): ChatOptions from the OpenAI fields
            from ember.model.tool_calls import ChatOptions

            options = ChatOptions.from_openai(**case["options"])
            return dataclasses.asdict(backend.chat(case["messages"], params, options))
        return dataclasses.asdict(backend.chat(case["messages"], params))
    if op == "count_tokens":
        return backend.count_tokens(case["text"])
    if op in ("stream", "chat_stream"):
        it = backend.stream(case["prompt"], params) if op == "stream" else backend.chat_stream(case["messages"], params)
        deltas = []
        for delta in it:
            deltas.append(dataclasses.asdict(delta))
            if len(deltas) == case.get("take"):
                it.close()
                break
        return deltas
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    folder, cases_path, out_path = sys.argv[1:4]
    from ember.model.backends.vllm import VLLMBackend
    from ember.model.errors import EmberError

    cases = json.loads(Path(cases_path).read_text())
    t0 = time.perf_counter()
    backend = VLLMBackend(folder, dtype="float32", max_model_len=2048, seed=0)
    result: dict[str, Any] = {"start_seconds": time.perf_counter() - t0, "results": {}}
    for case in cases:
        try:
            result["results"][case["name"]] = run_case(backend, case)
        except EmberError as e:  # what a caller of the backend would see
            result["results"][case["name"]] = {"error": type(e).__name__, "message": str(e)}
    Path(out_path).write_text(json.dumps(result))
    backend.close()


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this file
    main()
