"""`ember train tokenizer|pretrain|sft` end to end on the shipped SQuAD data, at nano size, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EMBER = str(Path(sys.executable).parent / "ember")
SQUAD = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "squad"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")} | {"COLUMNS": "200"}
    return subprocess.run([EMBER, "--data-dir", str(cwd / "data"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_tokenizer_pretrain_sft_end_to_end(tmp_path: Path) -> None:
    if not SQUAD.is_dir():
        pytest.skip(f"{SQUAD} is missing")
    dev = str(SQUAD / "dev-v1.1.json")
    assert "1024 tokens" in ok(run("train", "tokenizer", dev, "--vocab-size", "1024", cwd=tmp_path))
    out = ok(run("train", "pretrain", dev, "--preset", "nano", "--name", "n1", "--steps", "3", "--seq-len", "32",
                 "--batch-size", "2", "--warmup", "1", "--eval-every", "0", cwd=tmp_path))
    assert "3 steps" in out and "val loss" in out
    records = [json.loads(line) for line in (tmp_path / "data" / "runs" / "n1" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3] and "val_loss" in records[-1]
    # the exported model serves at once
    assert ok(run("generate", "The Normans", "--model", "n1", "-n", "4", "--no-stream", cwd=tmp_path))
    # resuming a finished run with more steps continues from step 3
    ok(run("train", "pretrain", dev, "--preset", "nano", "--name", "n1", "--steps", "4", "--seq-len", "32",
           "--batch-size", "2", "--warmup", "1", "--eval-every", "0", "--resume", cwd=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "data" / "runs" / "n1" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    # LoRA SFT on chat JSONL: adapter and merged model
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}."},
                                                     {"role": "assistant", "content": w}]}) + "\n"
                            for w in ("yes", "no", "maybe")))
    out = ok(run("train", "sft", "n1", str(chat), "--name", "n1-chat", "--steps", "2", "--batch-size", "2",
                 "--max-len", "64", "--rank", "4", "--adapter-dtype", "bfloat16", cwd=tmp_path))
    assert "3 examples" in out
    assert (tmp_path / "data" / "runs" / "n1-chat" / "adapter" / "adapter_config.json").is_file()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "data" / "runs" / "n1-chat" / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}  # noqa: SIM118 (no __iter__)
    assert (tmp_path / "data" / "models" / "n1-chat" / "model.safetensors").is_file()
    # full SFT on grounded-QA examples built from SQuAD v2
    out = ok(run("train", "sft", "n1", str(SQUAD / "v2-train-source.json"), "--full", "--name", "n1-qa",
                 "--limit", "6", "--steps", "1", "--batch-size", "2", "--max-len", "128", cwd=tmp_path))
    assert "6 examples" in out and "full" in out
    # every article, loss on every assistant turn (the worked examples too), half refusals, LoRA
    out = ok(run("train", "sft", "n1", str(SQUAD / "v2-train-source.json"), "--all-titles", "--all-turns",
                 "--unanswerable", "0.5", "--name", "n1-qa2", "--limit", "4", "--steps", "1", "--batch-size", "2",
                 "--max-len", "128", "--rank", "2", cwd=tmp_path))
    assert "4 examples" in out and "LoRA r=2" in out
    hints = json.loads((tmp_path / "data" / "runs" / "n1-qa2" / "adapter" / "ember-serving.json").read_text())
    assert hints == {"rag_demos": True, "refusal_bias": 0.0}  # served with the prompt it was trained on
    # without the worked examples: the adapter says so, and is served without them
    ok(run("train", "sft", "n1", str(SQUAD / "v2-train-source.json"), "--no-demos", "--name", "n1-qa3",
           "--limit", "2", "--steps", "1", "--batch-size", "2", "--max-len", "128", "--rank", "2", cwd=tmp_path))
    hints = json.loads((tmp_path / "data" / "runs" / "n1-qa3" / "adapter" / "ember-serving.json").read_text())
    assert hints["rag_demos"] is False
    assert not (tmp_path / "data" / "runs" / "n1-chat" / "adapter" / "ember-serving.json").exists()  # chat data


def test_bad_train_input_is_a_clean_error(tmp_path: Path) -> None:
    out = run("train", "pretrain", str(tmp_path / "missing.txt"), "--tokenizer", str(tmp_path / "nope"),
              cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "tokenizer.json" in out.stderr
    (tmp_path / "bad.jsonl").write_text("not json\n")
    out = run("train", "tokenizer", str(tmp_path / "bad.jsonl"), cwd=tmp_path)
    assert out.returncode == 2 and "bad.jsonl:1" in out.stderr and "Traceback" not in out.stderr
    out = run("train", "sft", "n1", str(tmp_path / "bad.jsonl"), "--adapter-dtype", "int3", cwd=tmp_path)
    assert out.returncode != 0 and "float32 or bfloat16" in out.stderr and "Traceback" not in out.stderr
    help_text = run("train", "--help", cwd=tmp_path).stdout
    assert all(cmd in help_text for cmd in ("tokenizer", "pretrain", "sft"))
