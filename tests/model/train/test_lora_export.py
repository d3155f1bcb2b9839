"""LoRA merge/unmerge, PEFT-format adapters, and exported checkpoints in `transformers` with matching logits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ember.model.config import LlamaConfig
from ember.model.loader import export_hf, load
from ember.model.tokenizer import Tokenizer
from ember.model.train.config import TrainConfig
from ember.model.train.init import new_model
from ember.model.train.lora import LoRAConfig, LoRALinear, apply_lora, load_adapter, merge_lora, save_adapter
from ember.model.train.sft_data import SFTDataset
from ember.model.train.trainer import train

CONV = [{"role": "user", "content": "Where is Normandy?"}, {"role": "assistant", "content": "In France."}]


def lora_trained(tiny: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> tuple[torch.nn.Module, LoRAConfig]:
    model = new_model(tiny, seed=0)
    cfg = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"))
    apply_lora(model, cfg)
    data = SFTDataset.from_conversations(bpe, [CONV], batch_size=1, max_len=64)
    train(model, data, TrainConfig(seq_len=64, batch_size=1, max_steps=3, lr=1e-2, warmup_steps=0), tmp_path / "r")
    return model, cfg


def test_only_adapters_train(tiny: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> None:
    model = new_model(tiny, seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = lora_trained(tiny, bpe, tmp_path)
    state = model.state_dict()
    for k, v in base.items():  # every base weight is untouched ...
        assert torch.equal(state[k.replace("q_proj.", "q_proj.base.").replace("v_proj.", "v_proj.base.")
                                  .replace("down_proj.", "down_proj.base.")], v)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 3 * tiny.num_hidden_layers
    assert all(m.lora_B.abs().sum() > 0 for m in layers)  # ... and the adapters moved


def test_merged_and_unmerged_give_the_same_logits(tiny: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> None:
    model, _ = lora_trained(tiny, bpe, tmp_path)
    x = torch.tensor([bpe.encode("The Normans gave their name to Normandy.")])
    with torch.no_grad():
        unmerged = model(x)
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.merge()
        merged = model(x)
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.unmerge()
        again = model(x)
    base = new_model(tiny, seed=0)(x)
    assert (unmerged - base).abs().max() > 1e-3  # the adapter changes the output
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, unmerged, atol=1e-5, rtol=1e-5)


def test_adapter_roundtrip_and_merged_export_in_transformers(tiny: LlamaConfig, bpe: Tokenizer,
                                                              tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, cfg = lora_trained(tiny, bpe, tmp_path)
    x = torch.tensor([bpe.encode("The Normans gave their name to Normandy.")])
    with torch.no_grad():
        expected = model(x)
    base = new_model(tiny, seed=0)
    export_hf(base, bpe, tmp_path / "base", dtype=torch.float32)
    save_adapter(model, cfg, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 100_000
    # our loader: base + adapter
    ours = load(tmp_path / "base", dtype="float32").model
    load_adapter(ours, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
    # PEFT on the transformers model reads our adapter files
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x).logits, expected, atol=1e-4, rtol=1e-4)
    # the merged export is a plain Llama folder
    merge_lora(model)
    export_hf(model, bpe, tmp_path / "merged", dtype=torch.float32)
    merged_hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged_hf(x).logits, expected, atol=1e-4, rtol=1e-4)


def test_pretrained_export_loads_in_transformers(tiny: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = dataclasses.replace(tiny, tie_word_embeddings=False)  # the untied layout too
    model = new_model(config, seed=5)
    data = SFTDataset.from_conversations(bpe, [CONV], batch_size=1, max_len=64)
    train(model, data, TrainConfig(seq_len=64, batch_size=1, max_steps=2, lr=1e-2, warmup_steps=0), tmp_path / "r")
    export_hf(model, bpe, tmp_path / "hf", dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(tmp_path / "hf")("Where is Normandy?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=1e-5)


def test_bad_lora_settings_are_refused(tiny: LlamaConfig) -> None:
    from ember.model.errors import ConfigError

    with pytest.raises(ConfigError, match="targets"):
        LoRAConfig(targets=("qkv",))
    model = apply_lora(new_model(tiny), LoRAConfig(r=2, alpha=4))
    with pytest.raises(ConfigError, match="already"):
        apply_lora(model, LoRAConfig())


def test_served_with_an_adapter_matches_the_unmerged_adapter(tiny: LlamaConfig, bpe: Tokenizer,
                                                             tmp_path: Path) -> None:
    """`load_for_inference(adapter=...)` (what `engine.adapter` serves): the adapter folded in before fusing and
    quantizing gives the unmerged LoRA model's logits (exactly in fp32, closely in int8)."""
    from ember.model.loader import load_for_inference

    model, cfg = lora_trained(tiny, bpe, tmp_path)
    x = torch.tensor([bpe.encode("The Normans gave their name to Normandy.")])
    with torch.no_grad():
        expected = model(x)
        base_logits = new_model(tiny, seed=0)(x)
    export_hf(new_model(tiny, seed=0), bpe, tmp_path / "base", dtype=torch.float32)
    save_adapter(model, cfg, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    for mode, tol in (("none", 1e-5), ("int8", 0.05)):
        served = load_for_inference(tmp_path / "base", dtype="float32", quantization=mode,
                                    adapter=tmp_path / "adapter").model
        with torch.no_grad():
            got = served(x)
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
        assert (got - base_logits).abs().max() > 10 * (got - expected).abs().max()  # the adapter is in


def test_an_adapter_for_another_model_is_refused(tiny: LlamaConfig, bpe: Tokenizer, tmp_path: Path) -> None:
    from ember.model.errors import WeightsError
    from ember.model.loader import load_for_inference

    model, cfg = lora_trained(tiny, bpe, tmp_path)
    save_adapter(model, cfg, tmp_path / "adapter")
    wider = dataclasses.replace(tiny, intermediate_size=tiny.intermediate_size * 2)
    export_hf(new_model(wider, seed=0), bpe, tmp_path / "other", dtype=torch.float32)
    with pytest.raises(WeightsError, match="shape"):
        load_for_inference(tmp_path / "other", dtype="float32", adapter=tmp_path / "adapter")


def test_engine_adapter_setting_resolves(tmp_path: Path) -> None:
    """"auto" = the adapter shipped for a registry model (qwen2.5-coder-0.5b's, checked against that model's
    shapes without its weights), "none", or a folder; anything else is a clear error."""
    import json

    from safetensors import safe_open

    from ember.model.adapter import resolve_adapter
    from ember.model.errors import ConfigError

    assert resolve_adapter("auto", "smollm2") is None
    assert resolve_adapter("none", "qwen2.5-coder-0.5b") is None
    shipped = resolve_adapter("auto", "qwen2.5-coder-0.5b")
    assert shipped is not None and (shipped / "TRAINING.md").is_file()
    meta = json.loads((shipped / "adapter_config.json").read_text())
    r = meta["r"]
    dims = {"q_proj": (896, 896), "k_proj": (128, 896), "v_proj": (128, 896), "o_proj": (896, 896),
            "gate_proj": (4864, 896), "up_proj": (4864, 896), "down_proj": (896, 4864)}  # Qwen2.5-0.5B (out, in)
    with safe_open(str(shipped / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert len(keys) == 2 * 24 * len(meta["target_modules"])
        for key in keys:
            leaf = key.split(".")[-3]
            out, inp = dims[leaf]
            assert tuple(f.get_slice(key).get_shape()) == ((r, inp) if ".lora_A." in key else (out, r)), key
    assert resolve_adapter(str(shipped), "anything") == shipped
    from ember.model.prompts import refusal_bias  # calibrated per (model, adapter)

    assert refusal_bias("qwen2.5-coder-0.5b") == 1.0 and refusal_bias("qwen2.5-coder-0.5b", shipped) == -5.0
    assert refusal_bias("qwen2.5-coder-0.5b", tmp_path) == 0.0  # an adapter without ember-serving.json: none
    with pytest.raises(ConfigError, match="adapter"):
        resolve_adapter(str(tmp_path), "qwen2.5-coder-0.5b")


def test_an_adapter_says_how_it_is_served(tmp_path: Path) -> None:
    """ember-serving.json: the RAG prompt's worked examples and the refusal bias follow the adapter; without the
    file, the base prompt and no bias; a broken file is a clear ConfigError naming it."""
    from ember.model.adapter import SERVING_FILE, ServingHints, serving_hints
    from ember.model.errors import ConfigError
    from ember.model.prompts import rag_demos, refusal_bias

    assert serving_hints(None) == ServingHints() and rag_demos(None) and rag_demos(tmp_path)
    (tmp_path / "trained").mkdir()
    ServingHints(rag_demos=False, refusal_bias=-1.5).save(tmp_path / "trained")
    assert not rag_demos(tmp_path / "trained") and refusal_bias("any", tmp_path / "trained") == -1.5
    for n, bad in enumerate(('{"rag_demos": "no"}', '{"refusal_bias": 1e9}', '{"demos": false}', "[1]", "{oops")):
        folder = tmp_path / f"bad{n}"
        folder.mkdir()
        (folder / SERVING_FILE).write_text(bad)
        with pytest.raises(ConfigError, match=SERVING_FILE if n > 1 else "rag_demos|refusal_bias") as e:
            serving_hints(folder)
        assert str(folder) in e.value.message and e.value.hint
