"""Speech tokens on mel frames at a rational rate, the flow's chunk grid on both, and a cache on that grid.

The HiFi-GAN V1 mel runs at 22050 / 256 frames per second, 441/128 = 3.4453125 frames per 25 Hz token: no
whole number. :class:`FrameGrid` spreads tokens over frames by one global rule, so a stream and an offline
pass agree on every frame: token ``t`` (counted from the first prompt token) starts at frame
``F(t) = floor(t * r + 1/2)``, and frame ``f`` belongs to the last token starting at or before it. The
attention chunk of a frame is the chunk of its token (``chunk`` tokens per chunk, the prompt included, as
CosyVoice2 counts), so the chunks are 86 or 87 frames long and streaming hops stay on the token grid.
With ``r = 2`` this is CosyVoice2's ``frame // 2``.

:class:`GridCache` is what a chunk-causal stack keeps between streaming calls on such a grid: the left
context of every causal conv, and the keys/values of every attention layer that later chunks can still
see. It speaks the protocol the flow modules call (``conv_input``, ``attend``; see
:mod:`mgm_omni.models.conformer`). A query in chunk ``c`` sees position ``j`` when ``chunk(j) <= c`` and
either ``j`` is in the reference prompt or ``chunk(j) >= c - left_chunks``; once the window has left the
prompt behind, the prompt keys are placed right before the window (relative positions stay in the range
of a prompt and a short context), as the CosyVoice2 stack's cache does. Memory is flat: the prompt plus
``left_chunks`` chunks per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch


class GridError(ValueError):
    """A grid that cannot be built, or a cached call that does not continue the stream."""


@dataclass(frozen=True)
class FrameGrid:
    """Tokens on frames at ``frames_per_token`` (a fraction), ``chunk`` tokens per attention chunk.

    Args:
        frames_per_token: mel frames per speech token, e.g. ``Fraction(22050, 256 * 25)`` = 441/128.
        chunk: tokens per attention chunk (the flow encoder's ``static_chunk_size``).
    """

    frames_per_token: Fraction
    chunk: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames_per_token", Fraction(self.frames_per_token))
        if self.frames_per_token < 1:
            raise GridError(f"need at least one mel frame per token, got {self.frames_per_token}")
        if self.chunk < 1:
            raise GridError(f"chunk must be >= 1 token, got {self.chunk}")

    @classmethod
    def for_rates(cls, sample_rate: int, hop_length: int, token_rate: float, chunk: int) -> FrameGrid:
        """The grid of a vocoder at ``sample_rate`` / ``hop_length`` fed by tokens at ``token_rate`` Hz."""
        return cls(Fraction(sample_rate) / (hop_length * Fraction(token_rate)), chunk)

    def frames(self, n_tokens: int) -> int:
        """First frame of token ``n_tokens`` = frames of the first ``n_tokens`` tokens (round half up)."""
        r = self.frames_per_token
        return (2 * n_tokens * r.numerator + r.denominator) // (2 * r.denominator)

    def tokens_within(self, n_frames: int) -> int:
        """Most tokens whose frames fit in ``n_frames`` (``frames(n) <= n_frames``)."""
        r = self.frames_per_token
        n = n_frames * r.denominator // r.numerator + 1
        while self.frames(n) > n_frames:
            n -= 1
        return n

    def token_of(self, frames: torch.Tensor) -> torch.Tensor:
        """Token of each (absolute) frame: the largest ``t`` with ``frames(t) <= f``."""
        r = self.frames_per_token
        return ((2 * frames + 1) * r.denominator - 1) // (2 * r.numerator)

    def chunk_of_frame(self, frame: int) -> int:
        return int(self.token_of(torch.tensor(frame))) // self.chunk

    def frame_chunk_start(self, c: int) -> int:
        """First frame of chunk ``c`` (0 for c <= 0)."""
        return self.frames(max(0, c) * self.chunk)

    def token_chunk_start(self, c: int) -> int:
        return max(0, c) * self.chunk

    def chunk_of_token(self, token: int) -> int:
        return token // self.chunk


class GridCache:
    """Conv tails and windowed key/value caches of one chunk-causal stack on one rate (typed stream state).

    Args:
        chunk_of: position -> its chunk index.
        chunk_start: chunk index -> its first position (0 for indices <= 0).
        prompt: positions of the reference prompt (always visible).
        left_chunks: earlier chunks visible besides the prompt; ``None`` = all.
    """

    def __init__(self, chunk_of: Callable[[int], int], chunk_start: Callable[[int], int], prompt: int,
                 left_chunks: int | None) -> None:
        if prompt < 0 or (left_chunks is not None and left_chunks < 0):
            raise GridError(f"bad cache geometry: prompt={prompt}, left_chunks={left_chunks}")
        self.chunk_of, self.chunk_start, self.prompt, self.left_chunks = chunk_of, chunk_start, prompt, left_chunks
        self.reset()

    def reset(self) -> None:
        """Forget every call (a new stream with the same prompt)."""
        self.start = self.end = 0  # the current call adds positions [start, end)
        self.kept_from = 0  # held: [0, min(prompt, end)) and [max(prompt, kept_from), end)
        self.tails: list[torch.Tensor] = []
        self.keys: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._conv = self._attn = 0
        self._next_kept_from = 0

    def clone(self) -> GridCache:
        """An independent copy of this state (the held tensors are shared: a call never writes into them)."""
        other = GridCache(self.chunk_of, self.chunk_start, self.prompt, self.left_chunks)
        other.start, other.end, other.kept_from = self.start, self.end, self.kept_from
        other.tails, other.keys = list(self.tails), list(self.keys)
        other._next_kept_from = self._next_kept_from
        return other

    def begin(self, start: int, n: int) -> None:
        """A call adds positions ``start .. start+n-1`` (``start`` is where the last call ended)."""
        if start != self.end or n < 1:
            raise GridError(f"call at {start} (+{n}) does not continue the stream at {self.end}")
        self.start, self.end = start, start + n
        self._conv = self._attn = 0
        self._next_kept_from = max(self.kept_from, self._window_start(self.chunk_of(self.end)))

    def finish(self) -> None:
        """Close the call: from now on only keys the next chunk can see are held."""
        self.kept_from = self._next_kept_from

    @property
    def stored(self) -> int:
        """Positions held per attention layer."""
        return self.keys[0][0].shape[2] if self.keys else 0

    def conv_input(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """x: (B, C, T) new input of a causal conv -> (B, C, pad + T) with its left context (zeros at first)."""
        i = self._conv
        self._conv += 1
        if i == len(self.tails):
            self.tails.append(x.new_zeros(x.shape[0], x.shape[1], pad))
        full = torch.cat([self.tails[i], x], dim=2)
        self.tails[i] = full[:, :, full.shape[2] - pad:].clone()
        return full

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Callable) -> torch.Tensor:
        """Attention of this call's queries (B, H, n, d) over the keys each one sees; stores ``k``, ``v``.

        ``kernel(rows, segments, q_pos, key_pos)`` attends query rows ``rows`` over ``segments`` (views of
        (k, v), in position order) whose first key sits at the virtual position ``key_pos``; ``q_pos`` is
        the absolute position of the first query row.
        """
        i = self._attn
        self._attn += 1
        old = self.keys[i] if i < len(self.keys) else None
        outs = []
        pos = self.start
        while pos < self.end:
            c = self.chunk_of(pos)
            stop = min(self.end, self.chunk_start(c + 1))
            rows = slice(pos - self.start, stop - self.start)
            lo = self._window_start(c)
            if lo <= self.prompt:  # the window reaches the prompt: every earlier position is visible
                segments, key_pos = self._segments(old, k, v, 0, stop), 0
            else:  # the prompt, then the window; the prompt shifted to sit right before it
                segments = self._segments(old, k, v, 0, self.prompt) + self._segments(old, k, v, lo, stop)
                key_pos = lo - self.prompt
            outs.append(kernel(rows, segments, pos, key_pos))
            pos = stop
        self._store(i, old, k, v)
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    # -- geometry ---------------------------------------------------------------------------------

    def _window_start(self, c: int) -> int:
        """First non-prompt position chunk ``c`` sees."""
        return 0 if self.left_chunks is None else self.chunk_start(c - self.left_chunks)

    def _slot(self, pos: int) -> int:
        return pos if pos < self.prompt else pos - max(0, self.kept_from - self.prompt)

    def _segments(self, old, k, v, lo: int, hi: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views of the keys/values of positions [lo, hi): held ones, then this call's."""
        out = []
        if lo < self.start and old is not None:
            a, b = self._slot(lo), self._slot(min(hi, self.start) - 1) + 1
            out.append((old[0][:, :, a:b], old[1][:, :, a:b]))
        if hi > self.start:
            a, b = max(lo, self.start) - self.start, hi - self.start
            out.append((k[:, :, a:b], v[:, :, a:b]))
        return out

    def _store(self, i: int, old, k, v) -> None:
        keep = self._next_kept_from
        if keep <= self.prompt:
            parts = self._segments(old, k, v, 0, self.end)
        else:
            parts = self._segments(old, k, v, 0, min(self.prompt, self.end)) + self._segments(old, k, v, keep, self.end)
        stored = (torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2))
        if i == len(self.keys):
            self.keys.append(stored)
        else:
            self.keys[i] = stored


def token_cache(grid: FrameGrid, prompt_tokens: int, left_chunks: int | None) -> GridCache:
    """A cache at the token rate of ``grid``."""
    return GridCache(grid.chunk_of_token, grid.token_chunk_start, prompt_tokens, left_chunks)


def frame_cache(grid: FrameGrid, prompt_tokens: int, left_chunks: int | None) -> GridCache:
    """A cache at the frame rate of ``grid`` (the prompt's frames always visible)."""
    return GridCache(grid.chunk_of_frame, grid.frame_chunk_start, grid.frames(prompt_tokens), left_chunks)
