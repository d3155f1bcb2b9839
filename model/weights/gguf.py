"""Read a llama.cpp GGUF file: config from metadata, dequantized tensors under HF names, tokenizer.

For `llama` files, llama.cpp's converter permutes the rows of Q and K for its interleaved rotary layout; we
undo that so the weights run under HF's rotate-half RoPE. `qwen2` files are not permuted (llama.cpp runs
them with NEOX-style rotation, which is rotate-half). Every problem with the file is reported as a `WeightsError`
naming the file, never as a traceback from inside the reader.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from ember.model.config import LlamaConfig, RopeScaling
from ember.model.errors import EmberError, UnsupportedModelError, WeightsError
from ember.model.qlinear import INT4_TYPES, Int4Weight
from ember.model.tokenizer import Tokenizer
from ember.model.weights.dequant import GGML_TYPES, INT4_GROUP, dequantize, int4_groups
from ember.model.weights.gguf_layout import TensorSpan, read_header

log = logging.getLogger(__name__)

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.")
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_gate.bias": "mlp.gate_proj.bias",
    "ffn_up.weight": "mlp.up_proj.weight", "ffn_up.bias": "mlp.up_proj.bias",
    "ffn_down.weight": "mlp.down_proj.weight", "ffn_down.bias": "mlp.down_proj.bias",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# tokenizer.ggml.pre -> the split regex its merges were learned with (llama.cpp's llama-vocab.cpp)
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DIGIT_SPLIT_PRES = {"smollm", "starcoder", "refact", "codeshell", "falcon"}  # single digits, then GPT-2
REGEX_SPLITS = {**{p: LLAMA3_SPLIT for p in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx")},
                **{p: QWEN2_SPLIT for p in ("qwen2", "deepseek-r1-qwen")}}
# general.architecture -> whether Q/K rows are permuted for interleaved RoPE
ARCHITECTURES = {"llama": True, "qwen2": False}
# end-of-turn tokens a chat model stops on besides its eos (Qwen2.5 ends replies with <|im_end|> but may emit
# <|endoftext|>, and its generation_config lists both)
EXTRA_STOP_TOKENS = {"qwen2": ("<|im_end|>", "<|endoftext|>")}


class GGUFFile:
    """An open GGUF file: metadata as plain Python values, tensors by GGUF name (their validated spans)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(self.path, "file not found")
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise WeightsError(self.path, f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
        # hostile input: every count, length and tensor span is bounds-checked as the header is read
        self.metadata, spans = read_header(self.path)
        self.tensors: dict[str, TensorSpan] = {t.name: t for t in spans}

    def meta(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        value = self.meta(key)
        if value is None:
            raise WeightsError(self.path, f"metadata key {key!r} is missing")
        return value

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in HF's (out, in) orientation (GGUF lists dims innermost first)."""
        t = self.tensors.get(name)
        if t is None:
            raise WeightsError(self.path, f"tensor {name!r} is missing")
        return tuple(reversed(t.shape))

    def type_name(self, name: str) -> str:
        return GGML_TYPES[self.tensors[name].type_id][0]

    def raw(self, name: str) -> tuple[str, torch.Tensor, tuple[int, ...]]:
        """A tensor as stored: ggml type name, (n_blocks, block_bytes) uint8 (a copy), shape in HF's (out, in)
        orientation. Unsupported types and mis-sized data raise."""
        t = self.tensors.get(name)
        if t is None:
            raise WeightsError(self.path, f"tensor {name!r} is missing")
        if t.type_id not in GGML_TYPES:  # read_header already refused these; kept for a hand-made span
            raise UnsupportedModelError(f"{self.path}: tensor {name!r} uses ggml type {t.type_id}, which Ember "
                                        f"cannot dequantize",
                                        hint="Supported: " + ", ".join(v[0] for v in GGML_TYPES.values()))
        shape = self.shape(name)
        name_, block_elems, block_bytes = GGML_TYPES[t.type_id]
        expected = int(np.prod(shape)) // block_elems * block_bytes
        if t.nbytes != expected or int(np.prod(shape)) % block_elems:
            raise WeightsError(self.path, f"tensor {name!r} ({name_}, shape {shape}) has {t.nbytes} bytes, "
                                          f"expected {expected}")
        with open(self.path, "rb") as f:
            f.seek(t.start)
            data = bytearray(t.nbytes)
            if f.readinto(data) != t.nbytes:
                raise WeightsError(self.path, f"tensor {name!r} is truncated (the file changed while open?)")
        raw = torch.frombuffer(data, dtype=torch.uint8) if t.nbytes else torch.zeros(0, dtype=torch.uint8)
        return name_, raw.reshape(-1, block_bytes), shape

    def tensor(self, name: str) -> torch.Tensor:
        """Dequantized fp32 tensor in HF's (out, in) orientation."""
        type_name, blocks, shape = self.raw(name)
        return dequantize(blocks, type_name, shape)


def config_from_gguf(g: GGUFFile) -> LlamaConfig:
    arch = g.require("general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(f"{g.path}: architecture {arch!r} is not supported",
                                    hint="Ember runs GGUF files of general.architecture llama or qwen2.")
    if "rope_freqs.weight" in g.tensors:
        raise UnsupportedModelError(f"{g.path}: per-dimension rope factors (Llama 3.1 style) are not read from GGUF",
                                    hint="Use the model's HF safetensors folder instead.")

    def key(name: str, default: Any = None) -> Any:
        return g.meta(f"{arch}.{name}", default)

    def need(name: str) -> Any:
        return g.require(f"{arch}.{name}")

    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    tokens = g.meta("tokenizer.ggml.tokens") or []
    scaling = None
    if key("rope.scaling.type") == "linear":
        scaling = RopeScaling("linear", factor=float(need("rope.scaling.factor")))
    eos: int | list[int] | None = g.meta("tokenizer.ggml.eos_token_id")
    extra = [i for i in (_token_index(tokens, t) for t in EXTRA_STOP_TOKENS.get(arch, ())) if i is not None]
    if extra:
        eos = list(dict.fromkeys(([eos] if isinstance(eos, int) else []) + extra))
    return LlamaConfig(
        model_type=arch,
        vocab_size=int(key("vocab_size", len(tokens))),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_hidden_layers=int(need("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(key("attention.head_count_kv", heads)),
        head_dim=int(key("attention.key_length", key("rope.dimension_count", hidden // heads))),
        max_position_embeddings=int(key("context_length", 2048)),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        tie_word_embeddings="output.weight" not in g.tensors,
        attention_bias="blk.0.attn_q.bias" in g.tensors,
        mlp_bias="blk.0.ffn_up.bias" in g.tensors,
        bos_token_id=g.meta("tokenizer.ggml.bos_token_id"),
        eos_token_id=eos,
        pad_token_id=g.meta("tokenizer.ggml.padding_token_id"),
    )


def _token_index(tokens: list[str], token: str) -> int | None:
    try:
        return tokens.index(token)
    except ValueError:
        return None


def check_config_against_tensors(g: GGUFFile, config: LlamaConfig) -> None:
    """The metadata's sizes must be the tensors' sizes, so a crafted header cannot make us build a model (even on
    the meta device) far larger than the file."""
    shape = g.shape

    layers = {int(n.split(".")[1]) for n in g.tensors if n.startswith("blk.") and n.split(".")[1].isdigit()}
    if len(layers) != config.num_hidden_layers or layers != set(range(len(layers))):
        raise WeightsError(g.path, f"block_count={config.num_hidden_layers} but the file has tensors for "
                                   f"{len(layers)} blocks")
    c, hd = config.hidden_size, config.dim_head
    expected = {"token_embd.weight": (config.vocab_size, c),
                "blk.0.attn_q.weight": (config.num_attention_heads * hd, c),
                "blk.0.attn_k.weight": (config.n_kv_heads * hd, c),
                "blk.0.ffn_up.weight": (config.intermediate_size, c)}
    for name, want in expected.items():
        if name in g.tensors or name == "token_embd.weight":
            got = shape(name)
            if got != want:
                raise WeightsError(g.path, f"tensor {name!r} has shape {got}, the metadata implies {want}")


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's `permute`: rows (nh, hd/2, 2) back to HF's (nh, 2, hd/2)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_name(g: GGUFFile, gname: str) -> str:
    if gname in GLOBAL_NAMES:
        return GLOBAL_NAMES[gname]
    if gname.startswith("blk."):
        _, idx, rest = gname.split(".", 2)
        if rest in LAYER_NAMES:
            return f"model.layers.{idx}.{LAYER_NAMES[rest]}"
    raise UnsupportedModelError(f"{g.path}: unexpected tensor {gname!r} for a Llama model")


def _qk_heads(gname: str, config: LlamaConfig) -> int | None:
    """Heads to un-permute this tensor's rows by (llama's Q and K), or None."""
    if not ARCHITECTURES[config.model_type]:
        return None
    if rest_is(gname, "attn_q"):
        return config.num_attention_heads
    if rest_is(gname, "attn_k"):
        return config.n_kv_heads
    return None


def state_dict_from_gguf(g: GGUFFile, config: LlamaConfig) -> dict[str, torch.Tensor]:
    """HF-named fp32 state dict. Names the file lacks raise; names we do not know are reported."""
    out: dict[str, torch.Tensor] = {}
    for gname in g.tensors:
        hf = hf_name(g, gname)
        w = g.tensor(gname)
        heads = _qk_heads(gname, config)
        out[hf] = unpermute_qk(w, heads) if heads else w
    return out


def weight_types(g: GGUFFile) -> dict[str, str]:
    """HF name -> the ggml type the file stores it in (what `quantization = "auto"` keeps)."""
    return {hf_name(g, gname): GGML_TYPES[t.type_id][0] for gname, t in g.tensors.items() if t.type_id in GGML_TYPES}


def int4_weights(g: GGUFFile, config: LlamaConfig) -> dict[str, Int4Weight]:
    """HF name -> the exact 4-bit group form of every 2-D tensor stored as Q4_0, Q4_1 or Q4_K."""
    out: dict[str, Int4Weight] = {}
    for gname, t in g.tensors.items():
        if t.type_id not in GGML_TYPES or GGML_TYPES[t.type_id][0] not in INT4_TYPES:
            continue
        type_name, blocks, shape = g.raw(gname)
        groups = int4_groups(blocks, type_name)
        if groups is None or len(shape) != 2:
            continue
        codes, scale, offset = groups
        n, k = shape
        w = Int4Weight(codes.reshape(n, k), scale.reshape(n, k // INT4_GROUP), offset.reshape(n, k // INT4_GROUP))
        heads = _qk_heads(gname, config)
        out[hf_name(g, gname)] = w.permute_rows(lambda x, h=heads: unpermute_qk(x, h)) if heads else w
    return out


def rest_is(gname: str, kind: str) -> bool:
    return gname.startswith("blk.") and gname.split(".")[2] == kind


def tokenizer_from_gguf(g: GGUFFile) -> Tokenizer:
    """A byte-level BPE `Tokenizer` from `tokenizer.ggml.*` metadata (llama.cpp's `gpt2` model)."""
    kind = g.meta("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedModelError(
            f"{g.path}: tokenizer model {kind!r} is not supported from GGUF (only byte-level BPE, 'gpt2')",
            hint="Use the model's HF folder (tokenizer.json) instead.",
        )
    tokens: list[str] = g.require("tokenizer.ggml.tokens")
    merges: list[str] = g.require("tokenizer.ggml.merges")
    types: list[int] = g.meta("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    try:
        pairs = [(a, b) for a, _, b in (m.partition(" ") for m in merges)]
        bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False)
    except Exception as e:
        raise WeightsError(g.path, f"tokenizer vocabulary and merges do not agree ({e})") from e
    backend = Backend(bpe)
    pre = g.meta("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in DIGIT_SPLIT_PRES:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in REGEX_SPLITS:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(REGEX_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        if pre not in ("default", "gpt2", "gpt-2"):
            log.warning("%s: unknown pre-tokenizer %r; splitting like GPT-2", g.path, pre)
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    # llama.cpp token types: 3 = control (special), 4 = user-defined (matched whole, not special)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, ty in zip(tokens, types, strict=False) if ty == 3])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, ty in zip(tokens, types, strict=False) if ty == 4])

    def tok(key: str) -> str | None:
        i = g.meta(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return Tokenizer(
        backend=backend,
        chat_template=g.meta("tokenizer.chat_template"),
        special={"bos_token": tok("bos_token_id"), "eos_token": tok("eos_token_id"),
                 "unk_token": tok("unknown_token_id"), "pad_token": tok("padding_token_id")},
        add_bos_token=bool(g.meta("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(g.meta("tokenizer.ggml.add_eos_token", False)),
        model_max_length=int(g.meta(f"{g.meta('general.architecture', 'llama')}.context_length", 8192)),
    )


def load_gguf(path: str | Path | GGUFFile) -> tuple[LlamaConfig, dict[str, torch.Tensor], Tokenizer]:
    """Config, HF-named float state dict and tokenizer; pass an open `GGUFFile` to reuse its parsed header."""
    g = path if isinstance(path, GGUFFile) else GGUFFile(path)
    try:
        config = config_from_gguf(g)
        check_config_against_tensors(g, config)
        return config, state_dict_from_gguf(g, config), tokenizer_from_gguf(g)
    except EmberError:
        raise
    except (ValueError, RuntimeError, IndexError, TypeError) as e:  # e.g. reshape of a mis-sized tensor
        raise WeightsError(g.path, f"inconsistent GGUF contents ({type(e).__name__}: {e})") from e
