"""A BERT sentence encoder (mean pooling) in plain PyTorch, for MiniLM-style sentence-transformers folders.

It computes what sentence-transformers computes for a `Transformer -> Pooling(mean) [-> Normalize]` folder
of a BERT model (all-MiniLM-L6-v2, the default embedder), from the same `model.safetensors` and
`tokenizer.json`, without importing sentence-transformers: that import (scikit-learn, pandas, scipy and
transformers' model zoo) took 4 of the ~10 s an `ember search` spent before printing anything. HF parameter
names, so the weights load as they are. Other folders (`load` returns None) go through sentence-transformers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class BertEncoder:
    def __init__(self, folder: Path, config: dict[str, Any], max_length: int, normalize: bool,
                 device: str = "cpu") -> None:
        self.folder, self.config, self.max_length, self.normalize = folder, config, max_length, normalize
        self.device = device
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self._weights: dict[str, Any] | None = None
        self._tokenizer: Any = None

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> BertEncoder | None:
        """The encoder of `folder`, or None when it is not a plain BERT + mean-pooling folder (nothing is
        read but small JSON files; the weights load on first use)."""
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            types = [m["type"] for m in modules]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if types not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]) or modules[0].get("path"):
            return None
        config = _json(folder / "config.json")
        pooling = _json(folder / str(modules[1].get("path", "")) / "config.json")
        st = _json(folder / "sentence_bert_config.json")
        plain = (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
                 and config.get("position_embedding_type", "absolute") == "absolute")
        mean_only = pooling.get("pooling_mode_mean_tokens") is True and not any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
        files = (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        if not (plain and mean_only and files) or st.get("do_lower_case"):
            return None
        max_length = min(int(st.get("max_seq_length") or 512), int(config.get("max_position_embeddings", 512)))
        return cls(folder, config, max_length, NORMALIZE in types, device)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tok.enable_truncation(self.max_length)
            tok.enable_padding(pad_id=int(self.config.get("pad_token_id", 0)))
            self._tokenizer = tok
        return self._tokenizer

    @property
    def specials(self) -> int:
        """Special tokens added to every input ([CLS] and [SEP])."""
        return len(self.tokenizer.encode("").ids)

    def weights(self) -> dict[str, Any]:
        if self._weights is None:
            from safetensors.torch import load_file

            from ember.retrieval.errors import EmbedderError

            try:
                raw = load_file(str(self.folder / "model.safetensors"), device=self.device)
            except (OSError, ValueError, RuntimeError) as e:  # a truncated or corrupt file
                raise EmbedderError(f"cannot load the embedding model in {self.folder}: {e}") from None
            self._weights = {k.removeprefix("bert."): v.float() for k, v in raw.items()}
        return self._weights

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dim) float32: mean-pooled, L2-normalised when the folder normalises."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer.encode_batch(list(texts[start:start + batch_size]))
                ids = torch.tensor([e.ids for e in enc], device=self.device)
                mask = torch.tensor([e.attention_mask for e in enc], device=self.device)
                hidden = self.forward(ids, mask)  # (B, T, H)
                m = mask.unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out) if out else np.zeros((0, self.dim)), dtype=np.float32)

    def forward(self, ids: Any, mask: Any) -> Any:
        import torch.nn.functional as F

        w = self.weights()
        B, T = ids.shape
        H, nh = self.dim, self.heads
        hs = H // nh

        def ln(x: Any, name: str) -> Any:
            return F.layer_norm(x, (H,), w[f"{name}.weight"], w[f"{name}.bias"], self.eps)

        def lin(x: Any, name: str) -> Any:
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        e = "embeddings"
        x = (w[f"{e}.word_embeddings.weight"][ids] + w[f"{e}.position_embeddings.weight"][:T]
             + w[f"{e}.token_type_embeddings.weight"][0])
        x = ln(x, f"{e}.LayerNorm")  # (B, T, H)
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T): padded keys are never attended to
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (lin(x, f"{p}.attention.self.{n}").view(B, T, nh, hs).transpose(1, 2)
                       for n in ("query", "key", "value"))  # (B, nh, T, hs)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1 / math.sqrt(hs))
            x = ln(x + lin(ctx.transpose(1, 2).reshape(B, T, H), f"{p}.attention.output.dense"),
                   f"{p}.attention.output.LayerNorm")
            x = ln(x + lin(F.gelu(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x
