"""The Qwen2.5-VL vision tower of the understanding track (spec §4.5).

Flattened 14 px patches (``vision_preprocess``) are embedded, run through pre-norm blocks that attend
inside local windows, except the ``fullatt_block_indexes`` blocks that attend over the whole frame,
rotated by a 2-D (row, column) RoPE, and each 2x2 group of patches is merged into one token of the LLM
width. Several images or videos are packed into one sequence; ``grid_thw`` says where each starts.

Parameter names are Hugging Face's (``patch_embed.proj``, ``blocks.{i}.{norm1,norm2,attn.qkv,attn.proj,
mlp.*}``, ``merger.{ln_q,mlp.0,mlp.2}``); ``vision_state_from`` strips the prefix a checkpoint stores
them under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.checkpoint import CheckpointError
from mgm_omni.config import ConfigError, JsonConfig, OmniConfig
from mgm_omni.models.layers import RMSNorm, apply_rope

# Where checkpoints keep the tower: MGM-Omni MLLM, transformers >= 4.52 Qwen2.5-VL, older Qwen2.5-VL.
VISION_KEY_PREFIXES = ("model.vision_tower.vision_tower.", "model.visual.", "visual.", "")

_ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


class VisionInputError(ValueError):
    """Pixel patches and ``grid_thw`` that do not fit each other or the config."""


@dataclass
class VisionConfig(JsonConfig):
    """Fields of a Hugging Face ``Qwen2_5_VLVisionConfig`` (the ``vision_config`` block); defaults are 7B's.

    ``window_size`` is in pixels: a window spans ``window_size // (patch_size * spatial_merge_size)``
    merged tokens per side (112 px -> 4 x 4 merged tokens = 8 x 8 patches).
    """

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 3584
    hidden_act: str = "silu"
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        # Released Qwen2.5-VL configs spell the channel count ``in_chans``.
        if "in_chans" in self.extra and "in_channels" not in (self._source_keys or ()):
            self.in_channels = self.extra["in_chans"]
        for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels", "patch_size",
                     "spatial_merge_size", "temporal_patch_size", "window_size", "out_hidden_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ConfigError(f"vision {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise ConfigError(f"vision hidden_size {self.hidden_size} / num_heads {self.num_heads} must give "
                              "a head_dim divisible by 4 (2-D rotary)")
        unit = self.patch_size * self.spatial_merge_size
        if self.window_size % unit:
            raise ConfigError(f"vision window_size {self.window_size} must be a multiple of "
                              f"patch_size * spatial_merge_size = {unit}")
        self.fullatt_block_indexes = tuple(self.fullatt_block_indexes)
        if any(not 0 <= i < self.depth for i in self.fullatt_block_indexes):
            raise ConfigError(f"fullatt_block_indexes {list(self.fullatt_block_indexes)} must lie in "
                              f"[0, {self.depth})")
        if self.hidden_act not in _ACTIVATIONS:
            raise ConfigError(f"vision hidden_act must be one of {sorted(_ACTIVATIONS)}, "
                              f"got {self.hidden_act!r}")

    @classmethod
    def from_omni(cls, cfg: OmniConfig) -> VisionConfig:
        """The tower an MGM-Omni ``config.json`` describes; its output width must be the LLM's."""
        if not cfg.vision_config:
            raise ConfigError("this MGM-Omni config has no vision_config block")
        vision = cls.from_dict(cfg.vision_config)
        if vision.out_hidden_size != cfg.hidden_size:
            raise ConfigError(f"vision out_hidden_size {vision.out_hidden_size} != LLM hidden_size "
                              f"{cfg.hidden_size}")
        return vision

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclass
class VisionLayout:
    """Index bookkeeping for one packed batch of images/videos, derived from ``grid_thw`` alone.

    Patches arrive per frame in merge-block order (block row, block column, row in block, column in
    block). The tower reorders whole merge blocks so that each window is contiguous.
    """

    window_index: torch.Tensor  # (N / m², ) merge block -> its slot in window order
    window_bounds: list[int]  # cumulative patch counts of the windows (window attention)
    frame_bounds: list[int]  # cumulative patch counts of the frames (full attention)
    hw: torch.Tensor  # (N, 2) row and column of every patch, in input order


def vision_layout(grid_thw: torch.Tensor, cfg: VisionConfig) -> VisionLayout:
    """Window order, attention segments and 2-D positions for ``grid_thw`` (K, 3) in patches."""
    m = cfg.spatial_merge_size
    side = cfg.window_size // (cfg.patch_size * m)  # window side in merge blocks
    order, window_bounds, frame_bounds, hw = [], [0], [0], []
    offset = 0
    for t, h, w in grid_thw.tolist():
        bh, bw = h // m, w // m
        # (row, col) of each patch in merge-block order
        rows = torch.arange(h).view(bh, m, 1, 1).expand(bh, m, bw, m).permute(0, 2, 1, 3).flatten()
        cols = torch.arange(w).view(1, 1, bw, m).expand(bh, m, bw, m).permute(0, 2, 1, 3).flatten()
        hw.append(torch.stack([rows, cols], dim=-1).repeat(t, 1))
        # tile the block grid into side x side windows (the last row/column of windows may be partial)
        nh, nw = -(-bh // side), -(-bw // side)
        blocks = torch.full((nh * side, nw * side), -1, dtype=torch.long)
        blocks[:bh, :bw] = torch.arange(bh * bw).view(bh, bw)
        tiles = blocks.view(nh, side, nw, side).permute(0, 2, 1, 3).reshape(nh * nw, side * side)
        sizes = (tiles >= 0).sum(-1) * m * m  # patches per window
        tiles = tiles[tiles >= 0]
        for f in range(t):
            order.append(tiles + offset + f * bh * bw)
            window_bounds.extend((window_bounds[-1] + sizes.cumsum(0)).tolist())
            frame_bounds.append(frame_bounds[-1] + h * w)
        offset += t * bh * bw
    return VisionLayout(torch.cat(order), window_bounds, frame_bounds, torch.cat(hw))


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """Softmax attention inside each segment ``[bounds[i], bounds[i+1])`` of (H, N, D) tensors.

    Segments of equal length run as one batched call, so the cost is a handful of kernels, not one per window.
    """
    lengths = torch.tensor(bounds).diff()
    starts = torch.tensor(bounds[:-1])
    out = torch.empty_like(q)
    for length in lengths.unique().tolist():
        if length == 0:
            continue
        idx = (starts[lengths == length][:, None] + torch.arange(length)).to(q.device)  # (S, L)
        qs, ks, vs = (x[:, idx].transpose(0, 1) for x in (q, k, v))  # (S, H, L, D)
        out[:, idx] = F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1)
    return out


class PatchEmbed(nn.Module):
    """A Conv3d whose kernel equals its stride over one (C, t, p, p) patch: a matmul on flattened patches."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        kernel = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel, stride=kernel, bias=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.flatten(1)  # (E, C * t * p * p), the order the patches are flattened in
        return F.linear(patches.to(weight.dtype), weight)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.n_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bounds: list[int]
                ) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.n_heads, -1).permute(1, 2, 0, 3)  # each (H, N, D)
        # rotate in float32, as upstream does, whatever the tower's dtype
        q = apply_rope(q[None].float(), cos[None], sin[None])[0].to(v.dtype)
        k = apply_rope(k[None].float(), cos[None], sin[None])[0].to(v.dtype)
        out = segment_attention(q, k, v, bounds)  # (H, N, D)
        return self.proj(out.transpose(0, 1).reshape(n, -1))


class VisionMLP(nn.Module):
    """Gated MLP with biases: down(act(gate(x)) * up(x))."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, eps=1e-6)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=1e-6)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)

    def forward(self, x, cos, sin, bounds: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, bounds)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """RMSNorm per patch, then concatenate each m x m block and map it to the LLM width."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.merged_dim = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.merged_dim, self.merged_dim), nn.GELU(),
                                 nn.Linear(self.merged_dim, cfg.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.merged_dim))


class VisionTower(nn.Module):
    """Qwen2.5-VL ViT: packed flattened patches -> one LLM-width token per m x m patch block."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)
        quarter = cfg.head_dim // 2  # the head is split between rows and columns, each rotated over half
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, quarter, 2, dtype=torch.float) / quarter)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Encode images and videos packed along the first axis.

        Args:
            pixel_values: (N, C * t * p * p) flattened patches, N = sum of t * h * w over ``grid_thw``.
            grid_thw: (K, 3) patches per item along time, height and width (height and width
                multiples of ``spatial_merge_size``).
        Returns:
            (N / m², out_hidden_size) tokens, item after item, each in (t, row, column) order.
        """
        grid_thw = self._check(pixel_values, grid_thw)
        layout = vision_layout(grid_thw, self.cfg)
        unit = self.cfg.spatial_merge_size**2
        order = layout.window_index.to(pixel_values.device)

        def to_windows(x: torch.Tensor) -> torch.Tensor:  # move whole merge blocks into window order
            return x.view(-1, unit, x.shape[-1])[order].view(x.shape)

        freqs = layout.hw.to(self.inv_freq.device)[..., None].float() * self.inv_freq  # (N, 2, D/4)
        emb = freqs.flatten(1).repeat(1, 2)  # (N, D): [rows | cols | rows | cols]
        cos, sin = to_windows(emb.cos()), to_windows(emb.sin())
        x = to_windows(self.patch_embed(pixel_values))  # (N, E)
        full = set(self.cfg.fullatt_block_indexes)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, layout.frame_bounds if i in full else layout.window_bounds)
        merged = self.merger(x)  # (N / m², out) in window order
        return merged[torch.argsort(order)]

    def _check(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        grid_thw = torch.as_tensor(grid_thw).reshape(-1, 3).long().cpu()
        if pixel_values.dim() != 2 or pixel_values.shape[1] != self.cfg.patch_dim:
            raise VisionInputError(f"pixel_values must be (N, {self.cfg.patch_dim}), "
                                   f"got {tuple(pixel_values.shape)}")
        if len(grid_thw) == 0 or bool((grid_thw <= 0).any()):
            raise VisionInputError(f"grid_thw needs positive (t, h, w) rows, got {grid_thw.tolist()}")
        m = self.cfg.spatial_merge_size
        if bool((grid_thw[:, 1:] % m).any()):
            raise VisionInputError(f"grid_thw heights and widths must be multiples of {m}, "
                                   f"got {grid_thw.tolist()}")
        total = int(grid_thw.prod(-1).sum())
        if total != pixel_values.shape[0]:
            raise VisionInputError(f"grid_thw {grid_thw.tolist()} holds {total} patches, pixel_values has "
                                   f"{pixel_values.shape[0]}")
        return grid_thw


def vision_state_from(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tower's tensors of a checkpoint, with the prefix they are stored under removed.

    Recognises ``model.vision_tower.vision_tower.`` (MGM-Omni), ``model.visual.`` and ``visual.``
    (Qwen2.5-VL) and bare tower checkpoints; other tensors (LLM, audio) are left out.
    """
    for prefix in VISION_KEY_PREFIXES:
        if prefix + "patch_embed.proj.weight" in state:
            if not prefix:
                return dict(state)
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    raise CheckpointError("no vision tower in this checkpoint (looked for patch_embed.proj.weight under "
                          + ", ".join(repr(p) for p in VISION_KEY_PREFIXES if p) + " or bare)")
