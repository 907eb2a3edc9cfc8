"""The flow's velocity estimator: CosyVoice2's ``CausalConditionalDecoder``.

A one-level 1-D U-Net: causal ResNet blocks conditioned on the flow time, each followed by
transformer blocks (LayerNorm, multi-head attention, GELU feed-forward). Input channels are
``x ⊕ mu ⊕ speaker ⊕ cond`` (80 each); output is the velocity (80 channels). Attribute names
reproduce the official keys (``down_blocks.0.1.2.attn1.to_q``, ``mid_blocks.5.0.block1.block.0``,
``final_proj`` ...). Inputs are unpadded: at inference the official padding mask is all ones,
so only the attention mask (chunk-causal in streaming calls) is taken.

Cached streaming passes a ``ctx`` instead of a mask (one per ODE step, held by the generation code;
see :mod:`mgm_omni.models.conformer`): every causal conv takes its left frames from it and every
attention layer its earlier keys/values, so a call computes only the frames of its new chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.models.conformer import segment_attention
from mgm_omni.models.flow_config import FlowEstimatorConfig


def timestep_features(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of the flow time t in [0, 1]: (B,) -> (B, dim), sin half then cos half."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t.unsqueeze(1) * freq.unsqueeze(0)  # (B, half)
    return torch.cat([arg.sin(), arg.cos()], dim=-1).to(t.dtype)


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads only on the left, so frame t never sees frames after t."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int) -> None:
        super().__init__(channels_in, channels_out, kernel_size)

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        pad = self.kernel_size[0] - 1
        return super().forward(F.pad(x, (pad, 0)) if ctx is None else ctx.conv_input(x, pad))


class _SwapTimeChannels(nn.Module):
    """(B, C, T) <-> (B, T, C); a parameter-free slot that keeps the official ``block.N`` indices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class CausalBlock1D(nn.Module):
    """Causal conv (kernel 3) -> LayerNorm over channels -> Mish."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3),
            _SwapTimeChannels(),
            nn.LayerNorm(dim_out),
            _SwapTimeChannels(),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        conv, *rest = self.block
        x = conv(x, ctx)
        for layer in rest:
            x = layer(x)
        return x


class CausalResnetBlock1D(nn.Module):
    """Two causal blocks with the time embedding added in between, plus a 1x1 residual conv."""

    def __init__(self, dim: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock1D(dim, dim_out)
        self.block2 = CausalBlock1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx=None) -> torch.Tensor:
        """x: (B, C_in, T); temb: (B, time_dim) -> (B, C_out, T)."""
        h = self.block1(x, ctx) + self.mlp(temb).unsqueeze(-1)
        return self.block2(h, ctx) + self.res_conv(x)


class Attention(nn.Module):
    """Multi-head self-attention with the diffusers parameter layout (no q/k/v bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, ctx=None) -> torch.Tensor:
        """x: (B, T, C); mask: (T, T) bool, True = may attend, or None; ctx: cached streaming."""
        b, t, _ = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

        q, k, v = heads(self.to_q), heads(self.to_k), heads(self.to_v)
        if ctx is None:
            out = prefix_attention(q, k, v, mask)
        else:
            scale = 1.0 / math.sqrt(self.head_dim)
            out = ctx.attend(q, k, v, lambda rows, segments, q_pos, key_pos:
                             segment_attention(q[:, :, rows], segments, scale))
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA where every query row may see a prefix of the keys (chunk-causal masks are of this kind).

    Runs of rows with the same prefix length are attended without a mask (the fast kernel, about
    2.5x faster than a masked call on CPU); any other mask falls back to masked attention.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    t, s = mask.shape
    limits = mask.sum(-1)  # (T,) visible keys per query row
    if not torch.equal(mask, torch.arange(s, device=mask.device)[None, :] < limits[:, None]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    values, counts = torch.unique_consecutive(limits, return_counts=True)
    out, start = [], 0
    for limit, count in zip(values.tolist(), counts.tolist()):
        rows = slice(start, start + count)
        out.append(F.scaled_dot_product_attention(q[:, :, rows], k[:, :, :limit], v[:, :, :limit]))
        start += count
    return torch.cat(out, dim=2)


class GeluProjection(nn.Module):
    """Linear then exact GELU (diffusers ``GELU`` with ``proj``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """``net.0`` GELU projection (x4), ``net.1`` dropout slot, ``net.2`` output Linear."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GeluProjection(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Matcha ``BasicTransformerBlock`` without cross-attention: pre-norm attention, pre-norm FFN."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, ctx=None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x), mask, ctx)
        return x + self.ff(self.norm3(x))


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoidal time features."""

    def __init__(self, dim_in: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CausalConditionalDecoder(nn.Module):
    """Velocity field v(x, t | mu, spk, cond) of the conditional flow matcher."""

    def __init__(self, cfg: FlowEstimatorConfig) -> None:
        super().__init__()
        width = cfg.channels[0]
        time_dim = 4 * width
        self.in_channels = cfg.in_channels
        self.time_mlp = TimestepEmbedding(cfg.in_channels, time_dim)

        def level(dim_in: int, with_conv: bool) -> nn.ModuleList:
            parts = [
                CausalResnetBlock1D(dim_in, width, time_dim),
                nn.ModuleList(
                    TransformerBlock(width, cfg.num_heads, cfg.attention_head_dim)
                    for _ in range(cfg.n_blocks)
                ),
            ]
            if with_conv:  # the last (here: only) level keeps the rate: a causal conv, not down/up-sampling
                parts.append(CausalConv1d(width, width, 3))
            return nn.ModuleList(parts)

        self.down_blocks = nn.ModuleList([level(cfg.in_channels, True)])
        self.mid_blocks = nn.ModuleList(level(width, False) for _ in range(cfg.num_mid_blocks))
        self.up_blocks = nn.ModuleList([level(2 * width, True)])  # input: mid output ⊕ skip
        self.final_block = CausalBlock1D(width, width)
        self.final_proj = nn.Conv1d(width, cfg.out_channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None = None,
        ctx=None,
    ) -> torch.Tensor:
        """Predict the velocity.

        Args:
            x, mu, cond: (B, 80, T) current sample, encoder output, prompt-mel condition.
            t: (B,) flow time; spks: (B, 80) projected speaker embedding.
            mask: (T, T) bool attention mask (True = may attend), or None for full attention.
            ctx: cached streaming context of this ODE step (then ``mask`` is unused and the T frames
                follow those of the previous call).

        Returns:
            (B, 80, T) velocity.
        """
        temb = self.time_mlp(timestep_features(t, self.in_channels))  # (B, 4*width)
        h = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.shape[-1]), cond], dim=1)  # (B, 320, T)
        skips = []
        for resnet, blocks, conv in self.down_blocks:
            h = self._transformers(blocks, resnet(h, temb, ctx), mask, ctx)
            skips.append(h)
            h = conv(h, ctx)
        for resnet, blocks in self.mid_blocks:
            h = self._transformers(blocks, resnet(h, temb, ctx), mask, ctx)
        for resnet, blocks, conv in self.up_blocks:
            skip = skips.pop()
            h = torch.cat([h[:, :, : skip.shape[-1]], skip], dim=1)
            h = conv(self._transformers(blocks, resnet(h, temb, ctx), mask, ctx), ctx)
        return self.final_proj(self.final_block(h, ctx))

    @staticmethod
    def _transformers(blocks: nn.ModuleList, h: torch.Tensor, mask: torch.Tensor | None, ctx=None) -> torch.Tensor:
        h = h.transpose(1, 2)  # (B, T, C)
        for block in blocks:
            h = block(h, mask, ctx)
        return h.transpose(1, 2).contiguous()
