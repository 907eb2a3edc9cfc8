"""The reference prompt, the streaming schedule and the per-stream state of token-to-wave."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

DEFAULT_LEFT_CHUNKS = 8  # 8 s of earlier speech besides the reference prompt (see StreamSchedule)


class Token2WavError(ValueError):
    """Tokens or reference prompt unusable for rendering."""


@dataclass
class ReferencePrompt:
    """The flow's conditioning: reference tokens (1, Lp), their mel (1, 2*Lp, 80), x-vector (1, 192)."""

    tokens: torch.Tensor
    mel: torch.Tensor
    xvector: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.mel.dim() != 3 or self.xvector.dim() != 2:
            raise Token2WavError("reference prompt needs tokens (1, L), mel (1, F, 80) and x-vector (1, D)")

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[1]


@dataclass
class StreamSchedule:
    """How tokens are grouped into render calls, and how much context the flow keeps.

    Args:
        first_hop: minimum first hop in tokens; it is extended so that prompt + hop ends on the chunk grid.
        hop_growth: each later hop is the previous one times this.
        max_hop: cap on later hops (multiple of ``grid``). With the cached flow a hop costs the same per
            token whatever its size; the cap bounds the memory of one call (flow activations, HiFT).
        grid: the flow's streaming chunk size in tokens (hop boundaries stay on it).
        lookahead: tokens after the hop the flow sees as right context.
        cached: render only the new chunks, keeping every layer's keys/values and conv context per
            ODE step (:class:`~mgm_omni.generation.wave.flow_stream.FlowStream`): time and memory per
            chunk are flat in the length. False: re-run the flow over the held context at every hop
            (the official mechanics; quadratic), re-anchored past ``context_tokens``.
        left_chunks: cached flow only: earlier chunks (of ``grid`` tokens) each chunk attends to besides
            the reference prompt, as CosyVoice's ``num_decoding_left_chunks``; ``None`` = all (the
            official chunk-causal flow exactly, unbounded memory). Streams shorter than
            ``left_chunks`` chunks are rendered exactly as with ``None``.
        cache_dtype: cached flow only: storage type of the estimator's held keys/values (``"float16"``,
            ``"bfloat16"`` or ``None`` = float32). float16 halves the largest part of the stream's memory
            (4.6 -> 2.3 MB per held frame at the full CosyVoice2 size); measured on the golden flow its
            mel differs from float32 storage by at most 3e-5 (the golden tolerance is 1e-4).
        context_tokens: re-render only: re-anchor the flow context once this many tokens are held
            (official: 6000).
        keep_tokens: re-render only: left context kept at a re-anchor (rounded to the grid).
        official: reproduce the official schedule exactly (re-render, hop 200 + pad, then 400, 800, 1600, ...).
        causal_final: re-render only: render the last call chunk-causally too (the official uses full
            attention there). The cached flow is chunk-causal in every call.
    """

    first_hop: int = 25
    hop_growth: int = 2
    max_hop: int = 200
    grid: int = 25
    lookahead: int = 3
    cached: bool = True
    left_chunks: int | None = DEFAULT_LEFT_CHUNKS
    cache_dtype: str | None = "float16"
    context_tokens: int = 6000
    keep_tokens: int = 100
    official: bool = False
    causal_final: bool = False

    def __post_init__(self) -> None:
        if self.first_hop < 1 or self.grid < 1 or self.lookahead < 0 or self.hop_growth < 1:
            raise ValueError("first_hop, grid, hop_growth must be >= 1 and lookahead >= 0")
        if self.max_hop % self.grid or self.max_hop < self.grid:
            raise ValueError(f"max_hop ({self.max_hop}) must be a positive multiple of grid ({self.grid})")
        if self.keep_tokens >= self.context_tokens:
            raise ValueError("keep_tokens must be smaller than context_tokens")
        if self.left_chunks is not None and self.left_chunks < 0:
            raise ValueError(f"left_chunks must be >= 0 or None, got {self.left_chunks}")
        if self.cache_dtype not in (None, "float32", "float16", "bfloat16"):
            raise ValueError(f"cache_dtype must be float32, float16, bfloat16 or None, got {self.cache_dtype!r}")

    @property
    def cache_torch_dtype(self) -> torch.dtype | None:
        return None if self.cache_dtype in (None, "float32") else getattr(torch, self.cache_dtype)

    @property
    def uses_cache(self) -> bool:
        """Whether streams render through the cached flow (the official schedule never does)."""
        return self.cached and not self.official

    def first(self, n_prompt: int) -> int:
        if self.official:
            return 200 + (math.ceil(n_prompt / 200) * 200 - n_prompt)
        hop = self.first_hop
        return hop + (-(n_prompt + hop)) % self.grid


@dataclass
class StreamState:
    """Per-stream state; ``reset()`` starts a new utterance with the same prompt.

    With the cached flow ``tokens`` holds only tokens not rendered yet (and ``offset`` stays 0);
    re-rendering holds the flow context there, ``offset`` of them already vocoded.
    """

    prompt: ReferencePrompt
    schedule: StreamSchedule
    tokens: list[int] = field(default_factory=list)
    offset: int = 0
    hop: int = 0
    block_rate: int = 2  # official schedule only
    mel_cache: torch.Tensor | None = None  # (1, 80, 8)
    source_cache: torch.Tensor | None = None  # (1, 1, 3840)
    speech_cache: torch.Tensor | None = None  # (1, 3840) withheld tail, cross-faded into the next call
    emitted: int = 0  # samples emitted so far
    consumed: int = 0  # tokens rendered so far, over the whole stream
    finished: bool = False
    seed: int | None = None  # HiFT source noise: a per-stream generator, or torch's global RNG if None
    generator: torch.Generator | None = None
    flow: object | None = None  # the cached flow's state (FlowStream), set by Token2Wav.start

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens, self.offset, self.emitted, self.consumed = [], 0, 0, 0
        self.hop = self.schedule.first(self.prompt.n_tokens)
        self.block_rate = 2
        self.mel_cache = self.source_cache = self.speech_cache = None
        self.finished = False
        self.generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        if self.flow is not None:
            self.flow.reset()
