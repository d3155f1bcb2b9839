"""Every shipped suite parses, names known metrics, and points at data that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.evals.grading import check_metrics
from ember.platform.cli.eval import load_suite, shipped_suites


@pytest.mark.parametrize("name", sorted(shipped_suites()))
def test_shipped_suite(name: str, shared: Path) -> None:
    suite = load_suite(name)
    assert suite.name == name
    for task in suite.tasks:
        check_metrics(task)
        assert (shared / task.path).exists(), task.path
        if suite.target.kind in ("retrieval", "rag"):
            assert task.format in ("squad", "beir")


def test_suite_by_path_and_unknown_name(tmp_path: Path) -> None:
    from ember.model.errors import ConfigError

    assert load_suite(str(shipped_suites()["gate"])).name == "gate"
    with pytest.raises(ConfigError, match="Shipped suites"):
        load_suite("no-such-suite")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(str(bad))
