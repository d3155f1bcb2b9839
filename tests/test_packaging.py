"""The package as users get it: a built wheel installs and imports; the repo root does not shadow stdlib."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"platform", "agents", "retrieval", "model", "evals"}


def test_no_init_in_platform_and_no_ember_init() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()
    assert not (REPO / "ember").exists()


def test_stdlib_platform_works_from_repo_root() -> None:
    code = "import platform, torch; print(platform.system(), platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    system, path = out.stdout.split()
    assert system == "Linux" and not path.startswith(str(REPO))


def test_every_code_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert set(config["package-dir"]) == {f"ember.{f}" for f in FOLDERS}
    for folder in FOLDERS:
        for sub in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in sub.parts or not any(sub.glob("*.py")):
                continue
            name = "ember." + ".".join(sub.relative_to(REPO).parts)
            assert name in listed, f"{name} has code but is not in [tool.setuptools] packages: a wheel would omit it"


@pytest.mark.slow
def test_wheel_installs_and_imports(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("ember-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    # Dependencies come from this environment's site-packages, added as a plain path: its .pth files
    # (among them the editable install of this repo) are not processed, so `ember` can only come from the wheel.
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = ("import ember.model.llama, ember.model.weights.gguf, ember.platform.cli.app, ember.platform.settings, "
            "ember.agents, ember.retrieval, ember.evals, platform; from ember.model.adapter import shipped_adapter; "
            "assert shipped_adapter('qwen2.5-coder-0.5b') is not None, 'the shipped adapter is not in the wheel'; "
            "print(ember.model.llama.__file__); print(platform.system())")
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].startswith(str(site)), out.stdout
    version = subprocess.run([str(venv / "bin" / "ember"), "--version"], cwd=tmp_path, capture_output=True,
                             text=True, check=True)
    assert version.stdout.startswith("ember 0.")
