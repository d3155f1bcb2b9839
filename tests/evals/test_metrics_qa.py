"""EM/F1 equal to the official SQuAD v1.1 script, run as a subprocess on the same predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ember.evals.metrics.qa import best_over, exact_match, f1, squad_scores

KNOWN = {  # /work/shared/datasets/README.md
    "bert.json": (86.72942605526875, 92.5945053169927),
    "r-netplus.json": (82.88794412389917, 88.8547789271315),
    "slqaplus.json": (82.44761615548133, 88.85452624227764),
    "match-lstm-with-ans-ptr.json": (68.29638627391437, 77.59870681580958),
    "logistic-regression-baseline.json": (41.709687215305195, 52.51934070359229),
}


def official(shared: Path, dataset: Path, predictions: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(shared / "squad" / "evaluate-v1.1.py"), str(dataset), str(predictions)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_full_dev_set_equals_official_script(shared: Path, name: str) -> None:
    dataset = shared / "squad" / "dev-v1.1.json"
    preds_file = shared / "squad" / "predictions-v1.1" / name
    ours = squad_scores(json.loads(dataset.read_text())["data"], json.loads(preds_file.read_text()))
    ref = official(shared, dataset, preds_file)
    assert ours == ref  # exactly, not approximately
    assert (ours["exact_match"], ours["f1"]) == KNOWN[name]


EDGE_PREDICTIONS = ["", " ", "...", "!?!", "The", "a an the", "Denver Broncos", "denver  broncos!!",
                    "Ünïcödé café", "naïve — résumé", "東京", "1,000", "1000", "the the Broncos", "Broncos, Denver",
                    "'Santa Clara'", "Levi's Stadium", "\t\nDenver\n", "¿Qué?", "Denver Broncos Denver"]
EDGE_GOLDS = [["Denver Broncos"], ["Levi's Stadium", "Levi’s Stadium"], ["東京"], ["café"], ["..."],
              ["1,000", "one thousand"], ["résumé"], ["the"]]


def test_edge_cases_per_example_equal_official_script(shared: Path, tmp_path: Path) -> None:
    """Empty, unicode and punctuation-only answers and golds: one question per (prediction, gold set)."""
    qas: list[dict] = []
    preds: dict[str, str] = {}
    for i, pred in enumerate(EDGE_PREDICTIONS):
        for j, golds in enumerate(EDGE_GOLDS):
            qid = f"q{i}_{j}"
            qas.append({"id": qid, "question": "?", "answers": [{"text": g, "answer_start": 0} for g in golds]})
            preds[qid] = pred
    data = [{"title": "t", "paragraphs": [{"context": "c", "qas": [qa]}]} for qa in qas]
    dataset, pred_file = tmp_path / "d.json", tmp_path / "p.json"
    dataset.write_text(json.dumps({"version": "1.1", "data": data}))
    pred_file.write_text(json.dumps(preds))
    # corpus over all of them, and each question alone (so a per-example difference cannot cancel out)
    assert squad_scores(data, preds) == official(shared, dataset, pred_file)
    import importlib.util

    spec = importlib.util.spec_from_file_location("squad_official", shared / "squad" / "evaluate-v1.1.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for qa in qas:
        golds = [a["text"] for a in qa["answers"]]
        pred = preds[qa["id"]]
        assert best_over(exact_match, pred, golds) == float(mod.metric_max_over_ground_truths(
            mod.exact_match_score, pred, golds))
        assert best_over(f1, pred, golds) == float(mod.metric_max_over_ground_truths(mod.f1_score, pred, golds))


def test_no_reference_is_an_error() -> None:
    with pytest.raises(ValueError):
        best_over(f1, "x", [])
