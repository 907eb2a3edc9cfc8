"""What a chunk-causal stack keeps between streaming calls: conv tails and windowed key/value caches.

A :class:`ChunkCache` serves one stack at one rate (the flow encoder at the token rate, its
upsampled blocks at the frame rate, or the estimator at one ODE step). The models call it through
two methods (see :mod:`mgm_omni.models.conformer`): ``conv_input`` (left context of a causal conv)
and ``attend`` (keys/values of earlier calls). Layers are told apart by call order, which is the
same in every call.

Visibility (the documented window). Positions are absolute (the reference prompt starts at 0);
position ``j`` is in chunk ``j // chunk``. A query in chunk ``c`` sees key ``j`` when

* ``chunk(j) <= c`` (chunk-causal, as the official streaming mask), and
* ``j < prompt`` (the reference prompt is always visible) or ``chunk(j) >= c - left_chunks``
  (a bounded window of earlier chunks, CosyVoice's ``num_decoding_left_chunks``; ``None`` = all).

Inside the window nothing is dropped, so while a stream is shorter than the window the result is
the one-pass chunk-causal flow. Once keys fall out of it, the prompt keys are placed right before the
window (their positions shift by ``window start - prompt``): relative positions stay in the range
the model saw with a prompt and a short context, as if the stream were re-anchored on every chunk.

Memory is flat: the cache holds ``prompt + left_chunks * chunk`` positions per layer at most (plus
the new chunks of the current call).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class ChunkCacheError(RuntimeError):
    """A cached call that does not continue where the previous one ended."""


class ChunkCache:
    """Conv tails and key/value caches of one chunk-causal stack (typed streaming state).

    Args:
        chunk: positions per attention chunk (25 tokens, 50 frames).
        prompt: positions of the reference prompt (always visible).
        left_chunks: earlier chunks visible besides the prompt; ``None`` = unbounded.
        dtype: storage of the held keys/values (``None``: as computed). A narrower type halves the
            memory; they are widened back once per layer and call.
    """

    def __init__(self, chunk: int, prompt: int, left_chunks: int | None, dtype: torch.dtype | None = None) -> None:
        if chunk < 1 or prompt < 0 or (left_chunks is not None and left_chunks < 0):
            raise ValueError(f"bad chunk cache geometry: chunk={chunk}, prompt={prompt}, left={left_chunks}")
        self.chunk, self.prompt, self.left_chunks, self.dtype = chunk, prompt, left_chunks, dtype
        self.reset()

    def reset(self) -> None:
        """Forget every call (a new stream with the same prompt)."""
        self.end = 0  # positions seen so far
        self.start = 0  # first position of the current call
        self.kept_from = 0  # stored positions: [0, min(prompt, end)) and [max(prompt, kept_from), end)
        self.tails: list[torch.Tensor] = []
        self.keys: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._conv = self._attn = 0
        self._next_kept_from = 0

    # -- the call protocol ------------------------------------------------------------------------

    def release(self) -> None:
        """Free the held keys/values and tails (the stream is over; ``end`` stays)."""
        self.keys, self.tails = [], []

    def begin(self, start: int, n: int) -> None:
        """A call adds positions ``start .. start+n-1`` (``start`` must be where the last call ended)."""
        if start != self.end or n < 1:
            raise ChunkCacheError(f"call at {start} (+{n}) does not continue the stream at {self.end}")
        self.start, self.end = start, start + n
        self._conv = self._attn = 0
        # what the next call's first chunk can still see; nothing earlier is kept
        self._next_kept_from = max(self.kept_from, self._window_start(self.end // self.chunk))

    def finish(self) -> None:
        """Close the call: from now on only keys the next chunk can see are held."""
        self.kept_from = self._next_kept_from

    @property
    def stored(self) -> int:
        """Positions currently held per attention layer."""
        return self.keys[0][0].shape[2] if self.keys else 0

    def conv_input(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """x: (B, C, T) new input of a causal conv -> (B, C, pad + T) with its left context."""
        i = self._conv
        self._conv += 1
        if i == len(self.tails):
            self.tails.append(x.new_zeros(x.shape[0], x.shape[1], pad))
        full = torch.cat([self.tails[i], x], dim=2)
        self.tails[i] = full[:, :, full.shape[2] - pad :].clone()
        return full

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Callable) -> torch.Tensor:
        """Attention of the call's queries (B, H, n, d) over the visible keys; stores ``k``, ``v``.

        ``kernel(rows, segments, q_pos, key_pos)`` computes the output of query rows ``rows`` (a slice)
        over ``segments`` (a list of (k, v) views, in position order) whose first key sits at the
        (virtual) position ``key_pos``; ``q_pos`` is the absolute position of the first query row.
        """
        i = self._attn
        self._attn += 1
        old = self.keys[i] if i < len(self.keys) else None
        if old is not None and old[0].dtype != q.dtype:
            old = (old[0].to(q.dtype), old[1].to(q.dtype))
        outs = []
        for rows, c in self._query_chunks():
            stop = min(self.end, (c + 1) * self.chunk)
            lo = self._window_start(c)
            if lo <= self.prompt:  # the window reaches the prompt: every earlier position is visible
                segments, key_pos = self._segments(old, k, v, 0, stop), 0
            else:  # prompt, then the window, the prompt shifted to sit right before it
                segments = self._segments(old, k, v, 0, self.prompt) + self._segments(old, k, v, lo, stop)
                key_pos = lo - self.prompt
            outs.append(kernel(rows, segments, self.start + rows.start, key_pos))
        self._store(i, old, k, v)
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    # -- geometry ---------------------------------------------------------------------------------

    def _window_start(self, c: int) -> int:
        """First non-prompt position chunk ``c`` can see."""
        return 0 if self.left_chunks is None else max(0, (c - self.left_chunks) * self.chunk)

    def _query_chunks(self):
        """(rows slice, chunk index) of the call's queries, one per chunk."""
        pos = self.start
        while pos < self.end:
            c = pos // self.chunk
            stop = min(self.end, (c + 1) * self.chunk)
            yield slice(pos - self.start, stop - self.start), c
            pos = stop

    def _slot(self, pos: int) -> int:
        """Slot in the stored keys of a stored position."""
        gap = max(0, self.kept_from - self.prompt)
        return pos if pos < self.prompt else pos - gap

    def _segments(self, old, k, v, lo: int, hi: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views of the keys/values of positions [lo, hi): stored ones, then those of this call."""
        out = []
        if lo < self.start and old is not None:
            a, b = self._slot(lo), self._slot(min(hi, self.start) - 1) + 1
            out.append((old[0][:, :, a:b], old[1][:, :, a:b]))
        if hi > self.start:
            a, b = max(lo, self.start) - self.start, hi - self.start
            out.append((k[:, :, a:b], v[:, :, a:b]))
        return out

    def _fits(self, k: torch.Tensor, v: torch.Tensor) -> bool:
        """Whether the new keys/values fit the storage type (else this layer keeps its own type)."""
        if not self.dtype.is_floating_point or self.dtype.itemsize >= k.dtype.itemsize:
            return True
        limit = torch.finfo(self.dtype).max / 2
        return bool(k.abs().max() < limit) and bool(v.abs().max() < limit)

    def _store(self, i: int, old, k, v) -> None:
        # keep the prompt and what the next call's chunks can see: [0, P) and [next_kept_from, end)
        keep = self._next_kept_from
        if keep <= self.prompt:
            parts = self._segments(old, k, v, 0, self.end)
        else:
            parts = self._segments(old, k, v, 0, min(self.prompt, self.end)) + self._segments(old, k, v, keep, self.end)
        stored = (torch.cat([p[0] for p in parts], dim=2), torch.cat([p[1] for p in parts], dim=2))
        if self.dtype is not None and stored[0].dtype != self.dtype and self._fits(k, v):
            stored = (stored[0].to(self.dtype), stored[1].to(self.dtype))
        if i == len(self.keys):
            self.keys.append(stored)
        else:
            self.keys[i] = stored
