"""Runs a suite against a slow scripted backend; the resume test kills it mid-run and starts it again.

    python resume_worker.py DATA_FILE RUN_DIR LOG_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.scripted

from scripted import ScriptedBackend

from ember.evals import report
from ember.evals.harness import Resources, run_suite
from ember.evals.suite import SuiteConfig


def suite(data: Path) -> SuiteConfig:
    return SuiteConfig.parse({"name": "resume", "target": {"kind": "model", "chat": False, "batch_size": 2},
                              "tasks": [{"name": "qa", "kind": "qa", "format": "jsonl", "path": str(data),
                                         "prompt": "Q: {input}"}]})


if __name__ == "__main__":
    data, run_dir, log = map(Path, sys.argv[1:4])
    res = Resources(data_root=data.parent, backend=ScriptedBackend(delay=0.15, log=log), model_id="scripted")
    report.write(run_suite(suite(data), res, run_dir))
    print("finished")
