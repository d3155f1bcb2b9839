"""The engine sits below the backends: it builds `ember.model.outputs` types and imports nothing from
`ember.model.backends` (issue 17)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "model" / "engine"


def test_the_engine_does_not_import_the_backends() -> None:
    offenders = []
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("ember.model.backends")]
    assert not offenders
