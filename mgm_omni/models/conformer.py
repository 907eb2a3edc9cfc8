"""The flow's text encoder: CosyVoice2's ``UpsampleConformerEncoder``.

Pre-norm conformer blocks without convolution module, using ESPnet-style relative-position
self-attention, run first at the token rate and then, after upsampling, at the mel-frame rate.
Attribute names reproduce the official state-dict keys (``embed.out.0``, ``encoders.3.self_attn.
linear_pos``, ``up_layer.conv`` ...). Attention masks and the frame-to-token map are built by the
caller (:mod:`mgm_omni.models.flow`), so the same encoder serves the streaming, offline and
length-regulated paths.

Cached streaming: every forward also takes an optional ``ctx`` per rate (tokens, frames), an object
held by the generation code (``generation/wave/chunk_cache.ChunkCache``) that carries what earlier
calls computed: ``ctx.conv_input(x, pad)`` returns ``x`` (B, C, T) with the last ``pad`` columns of
the previous call's input in front (zeros at the start), and ``ctx.attend(q, k, v, kernel)`` stores
the new keys/values and calls ``kernel(q_rows, segments, q_pos, key_pos)`` once per query chunk with
the visible keys (a list of (k, v) views) and the absolute position of the first query row and the
(virtual) position of the first key. The modules stay stateless.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.models.flow_config import FlowConfig


def rel_position_table(size: int, d_model: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal encodings of relative positions ``size-1, ..., 0, ..., -(size-1)``: (1, 2*size-1, d_model).

    Computed in float32 the way the official ``EspnetRelPositionalEncoding`` table is (angle =
    position x frequency, sin on even and cos on odd channels), then cast.
    """
    rel = torch.arange(size - 1, -size, -1, dtype=torch.float32, device=device).unsqueeze(1)  # (2T-1, 1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / d_model)
    )
    angle = rel * inv_freq  # (2T-1, d_model/2)
    table = torch.zeros(2 * size - 1, d_model, dtype=torch.float32, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.unsqueeze(0).to(dtype)


def rel_position_rows(hi: int, lo: int, d_model: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rows of the same sinusoidal table for the relative positions ``hi, hi-1, ..., lo``: (hi-lo+1, d_model).

    The values equal the matching rows of :func:`rel_position_table` (same float32 formula per offset),
    so a cached call can build only the offsets its queries and keys span.
    """
    rel = torch.arange(hi, lo - 1, -1, dtype=torch.float32, device=device).unsqueeze(1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=device) * -(math.log(10000.0) / d_model)
    )
    angle = rel * inv_freq
    table = torch.zeros(rel.shape[0], d_model, dtype=torch.float32, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(dtype)


def segment_attention(
    q: torch.Tensor, segments: list[tuple[torch.Tensor, torch.Tensor]], scale: float,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax((q k^T + extra) * scale) v`` with the keys split into segments (views, never copied).

    q: (B, H, Tq, d); each segment (B, H, S_i, d); extra: (B, H, Tq, sum S_i) or None.
    """
    if len(segments) == 1 and extra is None:
        k, v = segments[0]
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    scores = torch.cat([q @ k.transpose(-2, -1) for k, _ in segments], dim=-1)  # (B, H, Tq, S)
    if extra is not None:
        scores = scores + extra
    probs = (scores * scale).softmax(-1)
    out, start = None, 0
    for k, v in segments:
        part = probs[..., start : start + k.shape[2]] @ v
        out = part if out is None else out.add_(part)
        start += k.shape[2]
    return out


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative-position terms (``pos_bias_u/v``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor | None, mask: torch.Tensor | None,
                ctx=None) -> torch.Tensor:
        """x: (B, T, D); pos_emb: (1, 2T-1, D); mask: (T, T) bool, True = may attend, or None.

        With ``ctx`` (cached streaming, see the module docstring) ``pos_emb`` and ``mask`` are unused:
        the context decides which keys each query chunk sees and where they are."""
        b, t, _ = x.shape
        h, d = self.heads, self.head_dim
        q = self.linear_q(x).view(b, t, h, d)
        k = self.linear_k(x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, d)
        v = self.linear_v(x).view(b, t, h, d).transpose(1, 2)
        if ctx is not None:
            out = ctx.attend(q, k, v, self._chunk_kernel(q))
            return self.linear_out(out.transpose(1, 2).reshape(b, t, h * d))
        p = self.linear_pos(pos_emb).view(1, -1, h, d).transpose(1, 2)  # (1, H, 2T-1, d)
        content = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)  # (B, H, T, T)
        position = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)  # (B, H, T, 2T-1)
        # column c of `position` is relative offset (T-1-c); query i, key j needs offset i-j
        idx = torch.arange(t, device=x.device)
        shift = (t - 1 - idx).unsqueeze(1) + idx.unsqueeze(0)  # (T, T)
        position = position.gather(-1, shift.expand(b, h, t, t))
        scores = (content + position) / math.sqrt(d)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, h * d)
        return self.linear_out(out)

    def _chunk_kernel(self, q: torch.Tensor):
        """Attention of some query rows over segmented keys whose positions run on from ``key_pos``."""
        qu = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, d)
        qv = (q + self.pos_bias_v).transpose(1, 2)
        h, d = self.heads, self.head_dim

        def kernel(rows: slice, segments, q_pos: int, key_pos: int) -> torch.Tensor:
            nq, nk = rows.stop - rows.start, sum(k.shape[2] for k, _ in segments)
            hi, lo = q_pos + nq - 1 - key_pos, q_pos - (key_pos + nk - 1)  # offsets i - j spanned
            table = rel_position_rows(hi, lo, h * d, q.device, q.dtype)
            p = self.linear_pos(table).view(1, -1, h, d).transpose(1, 2)  # (1, H, hi-lo+1, d)
            position = qv[:, :, rows] @ p.transpose(-2, -1)  # (B, H, nq, hi-lo+1); column c = offset hi-c
            idx = torch.arange(nq - 1, -1, -1, device=q.device)[:, None] + torch.arange(nk, device=q.device)
            position = position.gather(-1, idx.expand(position.shape[0], h, nq, nk))
            return segment_attention(qu[:, :, rows], segments, 1.0 / math.sqrt(d), position)

        return kernel


class FeedForward(nn.Module):
    """Position-wise FFN with swish (the official encoder's default activation)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + FFN(LN(x)). No macaron FFN, no conv module."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(dim, heads)
        self.feed_forward = FeedForward(dim, hidden)
        self.norm_ff = nn.LayerNorm(dim, eps=eps)
        self.norm_mha = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor | None, mask: torch.Tensor | None,
                ctx=None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, mask, ctx)
        return x + self.feed_forward(self.norm_ff(x))


class LinearEmbed(nn.Module):
    """``LinearNoSubsampling``: Linear + LayerNorm, scaled by sqrt(dim) for the positional encoding."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(dim_in, dim), nn.LayerNorm(dim, eps=1e-5))
        self.xscale = math.sqrt(dim)

    def forward(self, x: torch.Tensor, table: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, dim_in) -> scaled features (B, T, dim) and relative encodings (1, 2T-1, dim)
        (None when ``table`` is False: cached calls build only the offsets they need)."""
        x = self.out(x) * self.xscale
        return x, rel_position_table(x.shape[1], x.shape[2], x.device, x.dtype) if table else None


class PreLookaheadLayer(nn.Module):
    """Residual 2-conv layer: each token sees ``lookahead`` tokens ahead (conv1), then 2 behind (conv2)."""

    def __init__(self, channels: int, lookahead: int) -> None:
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, ctx=None) -> torch.Tensor:
        """x: (B, T, C); context: (B, <=lookahead, C) embedded future tokens, or None (end: zeros);
        ctx: cached streaming (conv2's left context comes from the previous call)."""
        h = x.transpose(1, 2)  # (B, C, T)
        if context is not None and context.shape[1] > 0:
            h = torch.cat([h, context.transpose(1, 2)], dim=2)
        h = F.pad(h, (0, x.shape[1] + self.lookahead - h.shape[2]))  # zeros stand in for missing future
        h = F.leaky_relu(self.conv1(h))
        pad = self.conv2.kernel_size[0] - 1
        h = self.conv2(F.pad(h, (pad, 0)) if ctx is None else ctx.conv_input(h, pad))  # causal
        return h.transpose(1, 2) + x


class Upsample(nn.Module):
    """``Upsample1D``: repeat token vectors onto frames, left-pad, conv (kernel 2*ratio+1).

    The official layer repeats by nearest interpolation (x ratio); here the caller passes the
    frame-to-token map explicitly, which is the same for ``frame // ratio`` and also allows
    any number of frames per token (length regulation).
    """

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * ratio + 1)

    def forward(self, x: torch.Tensor, frame_src: torch.Tensor, ctx=None) -> torch.Tensor:
        """x: (B, T, C); frame_src: (F,) token index of every output frame -> (B, F, C)."""
        h = x.index_select(1, frame_src).transpose(1, 2)  # (B, C, F)
        pad = 2 * self.ratio
        h = self.conv(F.pad(h, (pad, 0)) if ctx is None else ctx.conv_input(h, pad))
        return h.transpose(1, 2)


class UpsampleConformerEncoder(nn.Module):
    """Token embeddings (B, T, D) -> frame features (B, F, D), before ``encoder_proj``."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        enc = cfg.encoder
        dim = enc.output_size

        def blocks(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConformerBlock(dim, enc.attention_heads, enc.linear_units, enc.norm_eps) for _ in range(n)
            )

        self.embed = LinearEmbed(cfg.input_size, dim)
        self.after_norm = nn.LayerNorm(dim, eps=1e-5)  # declared here to keep the official key order
        self.pre_lookahead_layer = PreLookaheadLayer(dim, cfg.pre_lookahead_len)
        self.encoders = blocks(enc.num_blocks)
        self.up_layer = Upsample(dim, cfg.token_mel_ratio)
        self.up_embed = LinearEmbed(dim, dim)
        self.up_encoders = blocks(enc.num_up_blocks)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None,
        frame_src: torch.Tensor,
        token_mask: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        token_ctx=None,
        frame_ctx=None,
    ) -> torch.Tensor:
        """Encode tokens and upsample them onto mel frames.

        Args:
            x: (B, T, D) token embeddings.
            context: (B, L, D) embeddings of the look-ahead tokens that follow ``x`` (streaming,
                non-final call), or None at the end of the input.
            frame_src: (F,) long, the token each output frame is made from (non-decreasing).
            token_mask / frame_mask: (T, T) / (F, F) bool attention masks, or None for full attention.
            token_ctx / frame_ctx: cached streaming contexts at the token and the frame rate (then the
                masks are unused and ``x`` holds only the tokens after those of earlier calls).

        Returns:
            (B, F, D) frame features after ``after_norm``.
        """
        cached = token_ctx is not None
        x, pos_emb = self.embed(x, table=not cached)
        if context is not None:
            context = self.embed(context, table=False)[0]
        x = self.pre_lookahead_layer(x, context, token_ctx)
        for block in self.encoders:
            x = block(x, pos_emb, token_mask, token_ctx)
        x = self.up_layer(x, frame_src, frame_ctx)
        x, pos_emb = self.up_embed(x, table=not cached)
        for block in self.up_encoders:
            x = block(x, pos_emb, frame_mask, frame_ctx)
        return self.after_norm(x)
