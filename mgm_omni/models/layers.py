"""Transformer building blocks of the Qwen2 / Qwen2.5 / Qwen3 families.

RMSNorm, rotary embeddings (1-D and the 3-D multimodal mRoPE), grouped-query attention with
optional q/k RMSNorm (Qwen3) and q/k/v bias (Qwen2), and the SwiGLU MLP. Parameter names follow
Hugging Face so checkpoints load without renaming. No module here holds inference state: the KV
cache is passed in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.config import DecoderConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back (as the reference does)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """(head_dim/2,) inverse frequencies in float32, exactly as the reference computes them."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, mrope_section: tuple[int, int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for the given positions, shape (B, T, head_dim) in float32.

    Args:
        positions: (B, T) for 1-D RoPE, or (3, B, T) temporal/height/width positions for mRoPE.
        mrope_section: sizes (in frequency pairs) of the t/h/w sections; required for 3-D input.
    """
    freqs = positions.float().unsqueeze(-1) * inv_freq.to(positions.device)  # (..., B, T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (..., B, T, D)
    cos, sin = emb.cos(), emb.sin()
    if positions.dim() == 3:
        if mrope_section is None:
            raise ValueError("3-D positions need mrope_section")
        cos = _pick_mrope_axes(cos, mrope_section)
        sin = _pick_mrope_axes(sin, mrope_section)
    return cos, sin


def _pick_mrope_axes(table: torch.Tensor, section: tuple[int, int, int]) -> torch.Tensor:
    # The feature dim is [f | f] (duplicated halves); each half splits into t/h/w sections, and
    # section i of the doubled list takes its values from axis i % 3.
    chunks = table.split(list(section) * 2, dim=-1)
    return torch.cat([chunk[i % 3] for i, chunk in enumerate(chunks)], dim=-1)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by tables (B, T, D)."""
    cos = cos.unsqueeze(1).to(x.dtype)
    sin = sin.unsqueeze(1).to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, cfg: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.dim_per_head
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        # Training aids (mgm_omni.training.speechlm_guide) set a list here to receive (q, k) after RoPE.
        self.capture: list | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache=None,
        cache_pos: int | torch.Tensor | None = None,
        kv_len: int | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B, H, T, D)
        k = apply_rope(k.transpose(1, 2), cos, sin)  # (B, H_kv, T, D)
        v = v.transpose(1, 2)
        if self.capture is not None:
            self.capture.append((q, k))
        if cache is not None:
            k, v = cache.update(self.layer_idx, cache_pos, k, v, kv_len)
        gqa = self.n_heads != self.n_kv
        if isinstance(mask, str):  # "causal": queries and keys start together
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif t == 1 and q.device.type == "cpu":
            out = one_query_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one new query per sequence as grouped matmuls (the decode step), in float32.

    On CPU, SDPA with a single query is slow in bf16 (17 ms per call at 4000 keys); two batched
    matmuls over the query heads that share a key/value head are several times faster. They run in float32
    whatever the cache's dtype: a bf16 matmul builds and caches a oneDNN kernel for every new key length, so a
    bf16 decode grew ~0.55 MB per token (0.5B brain: +250 MB over 450 tokens, with the primitive cache bounded
    or off) and paid for the kernel each step; float32 stays flat and is faster (one layer's call, 14/2 heads,
    one thread, 2-core AMD EPYC: 0.10 / 0.33 / 0.62 ms at 500 / 2000 / 4000 keys vs 0.79 / 0.88 / 1.04 ms).

    Args:
        q: (B, H, 1, D); k, v: (B, H_kv, S, D); mask: None or bool broadcastable to (B, 1, 1, S).
    """
    b, h, _, d = q.shape
    hk = k.shape[1]
    scores = (q.float().view(b, hk, h // hk, d) @ k.float().transpose(-1, -2)) * d**-0.5  # (B, H_kv, H/H_kv, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(v.dtype).view(b, h, 1, d)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask, cache=None, cache_pos=None, kv_len=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_pos, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x))
