"""The harness with a scripted backend (named so: no model), its cache, resume after a real kill, reports, gate."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ember.evals import report
from ember.evals.cache import ResultsCache
from ember.evals.harness import Resources, run_suite
from ember.evals.suite import SuiteConfig
from ember.model.errors import ConfigError, EmberError
from ember.platform.cli.app import app

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("evals_scripted", HERE / "scripted.py")
assert _spec and _spec.loader
_scripted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scripted)
ScriptedBackend = _scripted.ScriptedBackend


def write_task(path: Path, n: int = 20) -> Path:
    rows = [{"id": f"e{i}", "input": f"{'hard ' if i % 4 == 0 else ''}word{i}?", "references": [f"word{i}"]}
            for i in range(n)]
    rows[1]["references"] = ["Ünïcödé", "word1"]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def qa_suite(data: Path, **target: object) -> SuiteConfig:
    return SuiteConfig.parse({"name": "t", "target": {"kind": "model", "chat": False, "batch_size": 4, **target},
                              "tasks": [{"name": "qa", "kind": "qa", "format": "jsonl", "path": str(data),
                                         "prompt": "Q: {input}", "metrics": ["exact_match", "f1", "bleu", "chrf"]}]})


def test_run_scores_caches_and_reports(tmp_path: Path) -> None:
    data = write_task(tmp_path / "qa.jsonl")
    backend = ScriptedBackend()
    res = Resources(data_root=tmp_path, backend=backend, model_id="scripted")
    run = run_suite(qa_suite(data), res, tmp_path / "run", limit=12)
    t = run.tasks[0]
    assert t.examples == 12 and backend.batches == 3  # batches of 4
    assert t.metrics["exact_match"] == pytest.approx(100 * 9 / 12)  # every 4th is "hard" and answered wrong
    assert t.metrics["bleu"] == 0.0 and 0 < t.metrics["chrf"] <= 100  # one-word answers have no 4-grams
    # rerun: nothing is generated again; a larger limit only generates the new examples
    run_suite(qa_suite(data), res, tmp_path / "run", limit=12)
    assert backend.batches == 3
    run = run_suite(qa_suite(data), res, tmp_path / "run", limit=16)
    assert backend.batches == 4 and run.tasks[0].examples == 16
    # a changed target config is a different cache key
    run_suite(qa_suite(data, max_tokens=7), res, tmp_path / "run", limit=4)
    assert backend.batches == 5

    json_path, html_path = report.write(run)
    data_json = json.loads(json_path.read_text())
    assert len(data_json["examples"]["qa"]) == 16
    assert data_json["examples"]["qa"][0]["prediction"]["text"] == "no idea"
    page = html_path.read_text()
    assert "data:image/png;base64," in page and "Worst 10 by exact_match" in page and "Ünïcödé" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained


def test_seeded_shuffle_is_stable_and_prefix_consistent(tmp_path: Path) -> None:
    data = write_task(tmp_path / "qa.jsonl")
    res = Resources(data_root=tmp_path, backend=ScriptedBackend(), model_id="scripted")
    cfg = qa_suite(data).model_dump()
    cfg["tasks"][0]["shuffle"] = True
    suite = SuiteConfig.parse(cfg)
    ids = lambda run: [r["id"] for r in run.tasks[0].records]
    a = ids(run_suite(suite, res, tmp_path / "a", limit=5, seed=1))
    b = ids(run_suite(suite, res, tmp_path / "b", limit=8, seed=1))
    c = ids(run_suite(suite, res, tmp_path / "c", limit=5, seed=2))
    assert b[:5] == a and a != c and a != [f"e{i}" for i in range(5)]


def test_resume_after_kill(tmp_path: Path) -> None:
    """A real subprocess is SIGKILLed mid-run; the rerun generates only what was not saved."""
    data, run_dir, log = write_task(tmp_path / "qa.jsonl", 24), tmp_path / "run", tmp_path / "prompts.log"
    cmd = [sys.executable, str(HERE / "resume_worker.py"), str(data), str(run_dir), str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = run_dir / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not results.exists() or len(results.read_bytes().splitlines()) < 6):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert 6 <= len(saved) < 24, "the kill should land mid-run"
    with results.open("ab") as f:
        f.write(b'{"key": "torn')  # as if killed mid-write
    first = log.read_text().splitlines()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    second = log.read_text().splitlines()[len(first):]
    final = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["id"] for r in final) == sorted(f"e{i}" for i in range(24))
    assert len(second) == 24 - len(saved)  # nothing finished was generated again
    assert not {f"Q: {r['input']}" for r in final if r["id"] in saved} & set(second)
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["summary"]["qa"]["examples"] == 24 and rep["summary"]["qa"]["metrics"]["exact_match"] == 75.0


def test_cache_ignores_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    cache = ResultsCache(path)
    cache.append([{"key": "a", "v": 1}])
    with path.open("ab") as f:
        f.write(b'{"key": "b", "v"')
    cache = ResultsCache(path)
    assert "a" in cache and "b" not in cache
    cache.append([{"key": "c", "v": 3}])
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["a", "c"]


def test_bad_suite_and_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tasks"):
        SuiteConfig.parse({"name": "x", "tasks": []})
    with pytest.raises(ConfigError, match="promt: Extra inputs"):
        SuiteConfig.parse({"name": "x", "tasks": [{"name": "a", "kind": "qa", "format": "jsonl", "path": "p",
                                                   "promt": "typo"}]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ok", "references": ["a"]}\n{not json\n')
    res = Resources(data_root=tmp_path, backend=ScriptedBackend(), model_id="scripted")
    with pytest.raises(EmberError, match=r"bad.jsonl:2"):
        run_suite(qa_suite(bad), res, tmp_path / "run")
    agent = SuiteConfig.parse({"name": "a", "target": {"kind": "agent"}, "tasks": [
        {"name": "qa", "kind": "qa", "format": "jsonl", "path": str(write_task(tmp_path / "q.jsonl"))}]})
    with pytest.raises(EmberError, match="an agent target needs a backend"):
        run_suite(agent, Resources(data_root=tmp_path), tmp_path / "run2")


def test_cli_compare_and_check(tmp_path: Path) -> None:
    data = write_task(tmp_path / "qa.jsonl")
    res = Resources(data_root=tmp_path, backend=ScriptedBackend(), model_id="scripted")
    report.write(run_suite(qa_suite(data), res, tmp_path / "a", limit=8))
    report.write(run_suite(qa_suite(data), res, tmp_path / "b", limit=12))
    runner = CliRunner()
    out = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                              str(tmp_path / "cmp.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "cmp.html").read_text()
    assert "data:image/png;base64," in page and "exact_match" in page
    ok = runner.invoke(app, ["eval", "check", str(tmp_path / "b"), "--baseline", str(tmp_path / "b" / "report.json"),
                             "--margin", "1"])
    assert ok.exit_code == 0, ok.output
    differs = runner.invoke(app, ["eval", "check", str(tmp_path / "b"), "--baseline", str(tmp_path / "a"),
                                  "--margin", "1"])  # 12 examples vs 8: chrF is lower
    assert differs.exit_code == 1 and "chrf" in differs.output
    # lower the run's EM below the baseline by more than the margin: the gate fails
    worse = json.loads((tmp_path / "b" / "report.json").read_text())
    worse["summary"]["qa"]["metrics"]["exact_match"] -= 1.5
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    bad = runner.invoke(app, ["eval", "check", str(tmp_path / "worse.json"), "--baseline",
                              str(tmp_path / "b" / "report.json"), "--margin", "1"])
    assert bad.exit_code == 1 and "exact_match" in bad.output
    missing = runner.invoke(app, ["eval", "check", str(tmp_path / "nope"), "--baseline", str(tmp_path / "a")])
    assert missing.exit_code != 0
