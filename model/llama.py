"""A Llama-style decoder: RMSNorm, RoPE, MHA/GQA/MQA attention, SwiGLU MLP (Qwen2: the same, with q/k/v biases).

Module and parameter names are exactly those of HF `LlamaForCausalLM`, so an HF state dict loads as-is and
every other format reaches it through a rename table. Shapes: B batch, T new tokens, S cached + new
tokens, nh query heads, nkv key/value heads, hd head dim, C hidden size, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ember.model.config import LlamaConfig
from ember.model.kv_cache import KVCache
from ember.model.rope import apply_rope, inverse_frequencies, rope_cos_sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.hd = config.num_attention_heads, config.n_kv_heads, config.dim_head
        c, bias = config.hidden_size, config.qkv_bias
        self.q_proj = nn.Linear(c, self.n_heads * self.hd, bias=bias)
        self.k_proj = nn.Linear(c, self.n_kv * self.hd, bias=bias)
        self.v_proj = nn.Linear(c, self.n_kv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.hd, c, bias=config.o_bias)
        self.qkv_proj: nn.Module | None = None  # set by `fuse_projections` (one matmul instead of three)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split([self.n_heads * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            y = cache.attend(self.layer, q, k, v)  # the cache stores k, v and attends over its contents
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                               enable_gqa=self.n_kv != self.n_heads)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.hd))


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(c, i, bias=bias)
        self.up_proj = nn.Linear(c, i, bias=bias)
        self.down_proj = nn.Linear(i, c, bias=bias)
        self.gate_up_proj: nn.Module | None = None  # set by `fuse_projections`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer)
        if config.is_moe:  # HF Mixtral's name for its feed-forward block
            from ember.model.moe import SparseMoE

            self.block_sparse_moe = SparseMoE(config)
        else:
            self.mlp = MLP(config)
        self.moe = config.is_moe
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        ffn = self.block_sparse_moe if self.moe else self.mlp
        return x + ffn(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Llama(nn.Module):
    """`LlamaForCausalLM`. `forward` takes explicit positions and an optional KV cache."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inverse_frequencies(config), persistent=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                cache: KVCache | None = None, last_only: bool = False,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V); (B, 1, V) with `last_only`; (B, len(select), V) for token indices `select`.

        input_ids, positions: (B, T). Without a cache, attention is causal over `input_ids` and positions
        default to `arange(T)`; with one, the caller (the engine) gives the positions and the cache decides
        what each token attends to.
        """
        B, T = input_ids.shape
        if positions is None:
            assert cache is None, "positions are required with a KV cache"
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = rope_cos_sin(self.inv_freq, positions, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache)
        if last_only:
            x = x[:, -1:]
        elif select is not None:
            x = x[:, select]
        return self.lm_head(self.model.norm(x))  # (B, T, V)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype
