"""The answer-quality regression gate: the real default model on the `gate` suite vs the committed baseline.

A change that makes SmolLM2's answers worse (engine, sampling, tokenizer, chat template, prompts, metrics)
fails here like any other test. If a change is meant to move the figures, regenerate
evals/suites/gate-baseline.json (see its "note").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ember.platform.cli.app import app

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "evals" / "suites" / "gate-baseline.json"
MARGIN = 5.0  # points; one example of 32 is 3.1 points, so one flip from numeric noise passes


def test_gate_suite_holds_the_baseline(shared: Path, smollm2_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = smollm2_folder.parents[1]
    out = runner.invoke(app, ["--data-dir", str(data_dir), "--dtype", "bfloat16", "eval", "run", "gate",
                              "--data", str(shared), "--out", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {t: s["examples"] for t, s in report["summary"].items()} == {"squad-closed": 32, "arc-easy": 32}
    check = runner.invoke(app, ["eval", "check", str(tmp_path / "run"), "--baseline", str(BASELINE),
                                "--margin", str(MARGIN)])
    assert check.exit_code == 0, check.output
