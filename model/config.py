"""`LlamaConfig`: the architecture of a Llama-style decoder, read from and written to HF `config.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ember.model.errors import ConfigError, UnsupportedModelError, WeightsError

ROPE_TYPES = ("default", "linear", "llama3")
# HF model_type -> its CausalLM class. qwen2 is Llama with biased q/k/v (never o_proj) projections.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mixtral": "MixtralForCausalLM"}


@dataclass(slots=True)
class RopeScaling:
    """`rope_scaling` of an HF config. Only the keys of the chosen `rope_type` matter."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 8192  # llama3

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope_scaling.rope_type={self.rope_type!r} is not supported",
                hint=f"Supported rope types: {', '.join(ROPE_TYPES)}.",
            )
        if self.factor <= 0:
            raise ConfigError(f"rope_scaling.factor={self.factor} must be > 0")

    def to_hf(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rope_type": self.rope_type, "factor": self.factor}
        if self.rope_type == "llama3":
            out |= {
                "low_freq_factor": self.low_freq_factor,
                "high_freq_factor": self.high_freq_factor,
                "original_max_position_embeddings": self.original_max_position_embeddings,
            }
        return out


@dataclass(slots=True)
class LlamaConfig:
    """Hyper-parameters of `LlamaForCausalLM` (and `Qwen2ForCausalLM`), with HF's names. Validates itself."""

    model_type: str = "llama"  # "llama" or "qwen2" (Mixtral is a llama with num_local_experts > 0)
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None = MHA
    head_dim: int | None = None  # None = hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    hidden_act: str = "silu"
    num_local_experts: int = 0  # > 0: Mixtral-style sparse MoE feed-forward (exports as MixtralForCausalLM)
    num_experts_per_tok: int = 2  # experts each token is routed to (MoE only)
    router_aux_loss_coef: float = 0.02  # weight of the load-balancing loss in training (MoE only)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown HF keys, written back verbatim

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"hidden_size={self.hidden_size} is not divisible by "
                    f"num_attention_heads={self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("rms_norm_eps and rope_theta must be > 0")
        if self.num_local_experts < 0 or (self.num_local_experts and
                                          not 1 <= self.num_experts_per_tok <= self.num_local_experts):
            raise ConfigError(f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and "
                              f"num_local_experts={self.num_local_experts}")
        if self.model_type not in ("llama", "qwen2"):
            raise UnsupportedModelError(f"model_type={self.model_type!r} is not supported (llama, qwen2)")
        if self.model_type == "qwen2" and (self.is_moe or self.mlp_bias):
            raise UnsupportedModelError("qwen2 models have neither MoE layers nor MLP biases")
        if self.hidden_act != "silu":
            raise UnsupportedModelError(f"hidden_act={self.hidden_act!r} is not supported (only 'silu')")

    # Properties the model uses, named for what they mean.
    @property
    def n_kv_heads(self) -> int:
        assert self.num_key_value_heads is not None
        return self.num_key_value_heads

    @property
    def dim_head(self) -> int:
        assert self.head_dim is not None
        return self.head_dim

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    def num_parameters(self, active: bool = False) -> int:
        """All parameters; with `active`, those one token uses (MoE: only its top-k experts)."""
        h, i, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.dim_head
        attn = h * hd * (self.num_attention_heads * 2 + self.n_kv_heads * 2)
        experts = (self.num_experts_per_tok if active else self.num_local_experts) if self.is_moe else 1
        layer = attn + experts * 3 * h * i + 2 * h + (h * self.num_local_experts if self.is_moe else 0)
        return v * h * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + h

    # ---- HF config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """From the dict of an HF `config.json` (transformers 4.x or 5.x spelling)."""
        model_type = hf.get("model_type", "llama")
        arch = hf.get("architectures") or [ARCHITECTURES.get(model_type, "LlamaForCausalLM")]
        if ARCHITECTURES.get(model_type) != arch[0]:
            raise UnsupportedModelError(
                f"model_type={model_type!r} architectures={arch} is not a Llama decoder",
                hint="Ember runs LlamaForCausalLM checkpoints (Llama, SmolLM, TinyLlama, Mistral-style), "
                     "Qwen2ForCausalLM (Qwen2, Qwen2.5) and MixtralForCausalLM.",
            )
        hf = dict(hf)
        if model_type == "qwen2":
            if hf.get("use_sliding_window"):
                raise UnsupportedModelError("use_sliding_window=true (sliding-window attention) is not supported")
            hf["attention_bias"] = True  # Qwen2Attention: q/k/v always biased, o_proj never
            for k in ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types"):
                hf.pop(k, None)
        # transformers 5 moves rope_theta/rope_scaling into rope_parameters.
        rope = dict(hf.pop("rope_parameters", None) or {})
        rope_scaling = hf.pop("rope_scaling", None) or {}
        rope_theta = hf.pop("rope_theta", rope.pop("rope_theta", 10000.0))
        scaling_src = rope_scaling or rope
        scaling = None
        rope_type = scaling_src.get("rope_type", scaling_src.get("type", "default"))
        if rope_type != "default":
            scaling = RopeScaling(
                rope_type=rope_type,
                factor=float(scaling_src.get("factor", 1.0)),
                low_freq_factor=float(scaling_src.get("low_freq_factor", 1.0)),
                high_freq_factor=float(scaling_src.get("high_freq_factor", 4.0)),
                original_max_position_embeddings=int(scaling_src.get("original_max_position_embeddings", 8192)),
            )
        known = {f.name for f in fields(cls)} - {"rope_scaling", "rope_theta", "extra", "model_type"}
        kwargs = {k: v for k, v in hf.items() if k in known}
        skip = {"architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
                "quantization_config", "_name_or_path", "_model_name_or_path", "use_cache", "output_router_logits"}
        extra = {k: v for k, v in hf.items() if k not in known and k not in skip}
        if hf.get("pretraining_tp", 1) != 1:
            raise UnsupportedModelError(f"pretraining_tp={hf['pretraining_tp']} is not supported")
        try:
            return cls(**kwargs, model_type="qwen2" if model_type == "qwen2" else "llama",
                       rope_theta=float(rope_theta), rope_scaling=scaling, extra=extra)
        except TypeError as e:
            raise ConfigError(f"invalid Llama config: {e}") from e

    def to_hf(self, dtype: str = "float32") -> dict[str, Any]:
        """The dict of an HF `config.json` that `transformers` and vLLM load as `LlamaForCausalLM`."""
        d = asdict(self)
        d.pop("extra")
        d["rope_scaling"] = self.rope_scaling.to_hf() if self.rope_scaling else None
        if not self.is_moe:
            for k in ("num_local_experts", "num_experts_per_tok", "router_aux_loss_coef"):
                d.pop(k)
        model_type = "mixtral" if self.is_moe else self.model_type
        d.pop("model_type")
        if model_type == "qwen2":  # Qwen2Config has no bias flags: they are fixed by the architecture
            for k in ("attention_bias", "mlp_bias"):
                d.pop(k)
            d |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": self.num_hidden_layers}
        arch = ARCHITECTURES[model_type]
        return {
            "architectures": [arch],
            "model_type": model_type,
            **self.extra,
            **d,
            "torch_dtype": dtype,
            "use_cache": True,
        }

    @classmethod
    def load(cls, path: str | Path) -> LlamaConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise WeightsError(path, "config.json not found") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(path, f"config.json is not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise WeightsError(path, "config.json does not hold a JSON object")
        return cls.from_hf(data)

    def save(self, folder: str | Path, dtype: str = "float32") -> Path:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(self.to_hf(dtype), indent=2) + "\n", encoding="utf-8")
        return path


# Named presets for tests and training (sizes are approximate).
PRESETS: dict[str, LlamaConfig] = {
    # a few thousand parameters: unit tests
    "tiny": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        tie_word_embeddings=True),
    # ~10M parameters
    "nano": LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=704, num_hidden_layers=10,
                        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                        tie_word_embeddings=True),
    # ~30M parameters
    "micro": LlamaConfig(vocab_size=8192, hidden_size=448, intermediate_size=1280, num_hidden_layers=12,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=True),
}
