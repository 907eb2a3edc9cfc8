"""Decoding state of a batch on a SpeechLM: the two KV caches and each sequence's next position.

``prefill`` and ``decode_step`` are plain functions (the hot step has no Python state of its own);
``SpeechLMRunner`` owns the caches of one batch and implements the small protocol the chunk engine
drives (``start`` / ``step`` / ``keep``), which test doubles can implement too.

Batching: prompts of different lengths are right-padded and prefilled together with one causal pass
(every sequence writes cache slots 0..T_max-1). A sequence's padding slots are never attended: its
next row is written at its own length and attention only reaches slots <= the query position, so
the padding is overwritten before it becomes visible. Equal positions take the int ``cache_pos``
fast path (no mask); unequal ones use (B, 1) positions and a (B, 1, 1, kv_len) mask.

Long-form policy (``window_rows``): the cache keeps each sequence's **prompt block** (its prefill rows:
instructions, the reference transcript and speech tokens, which carry the voice) and its **most recent
W to W + W/4 decoded rows** (W = ``window_rows``); older rows are dropped. Rows keep their RoPE
positions (the cache slot and the position part ways once rows are dropped), so what a row sees inside
the window is unchanged. Dropping happens W/4 rows at a time (one copy of W rows per layer, amortised
over W/4 steps), so memory is bounded by prompt + 1.25 W rows and the cost per step by the same.
The default W = 4096 rows is 10.9 min of speech (the official omni reply limit, 6.25 rows per second):
any reply up to that length decodes exactly as with the official unbounded cache; ``None`` keeps
every row (the official policy; memory grows with the length).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mgm_omni.generation.speech.cpu_linear import pack_weight, packed_linear, packing_available
from mgm_omni.generation.kv_cache import KVCache, cache_for
from mgm_omni.models.layers import rope_cos_sin
from mgm_omni.models.speech_lm import SpeechLM


DEFAULT_WINDOW_ROWS = 4096


class CacheBoundError(RuntimeError):
    """A sequence would need more cache positions than ``max_rows`` allows."""


Head = Callable[[torch.Tensor], torch.Tensor]


def speech_head(model: SpeechLM, pack: bool | None = None) -> Head:
    """The function from adapter states (..., H) to speech logits (..., k, S).

    ``pack=True`` uses a oneDNN-packed copy of the speech rows of ``lm_head`` (CPU; several times faster
    for one-row steps, see ``cpu_linear``); ``None`` packs where available. The text rows are never used.
    """
    weight = model.speech_head_weight
    if pack is None:
        pack = packing_available(weight)
    if not pack:
        return model.speech_logits
    packed = pack_weight(weight)  # (k * S, H) copy in oneDNN layout
    shape = (model.num_slots, model.cfg.tokenizer_speech_size)
    return lambda g: packed_linear(g, packed).unflatten(-1, shape)


@torch.inference_mode()
def prefill(model: SpeechLM, rows: torch.Tensor, last: torch.Tensor, caches: tuple[KVCache, KVCache | None],
            rope: tuple[torch.Tensor, torch.Tensor] | None = None, head: Head | None = None) -> torch.Tensor:
    """Run (B, T, 1 + k) prompt rows into empty caches; (B, k, S) float32 logits at row ``last[b]``."""
    b, t, _ = rows.shape
    if rope is None:
        rope = model.rope(torch.arange(t, device=rows.device).expand(b, t))
    _, g = _forward(model, rows, caches, 0, rope)
    g_last = g[torch.arange(b, device=rows.device), last]  # (B, H): only the rows we sample from
    return (head or model.speech_logits)(g_last).float()


@torch.inference_mode()
def decode_step(model: SpeechLM, rows: torch.Tensor, cache_pos: int | torch.Tensor,
                caches: tuple[KVCache, KVCache | None], rope: tuple[torch.Tensor, torch.Tensor],
                head: Head | None = None) -> torch.Tensor:
    """One new row per sequence: (B, 1 + k) rows -> (B, k, S) float32 speech logits."""
    _, g = _forward(model, rows[:, None], caches, cache_pos, rope)
    return (head or model.speech_logits)(g[:, -1]).float()


def _forward(model, rows, caches, cache_pos, rope):
    llm_cache, adapter_cache = caches
    h = model.model(model.embed_rows(rows), cache=llm_cache, cache_pos=cache_pos, rope=rope)
    if model.tts_adapter is None:
        return h, h
    return h, model.tts_adapter(h, cache=adapter_cache, cache_pos=cache_pos, rope=rope)


class SpeechLMRunner:
    """Caches and positions of one batch of requests on ``model``.

    Args:
        model: the SpeechLM (its dtype and device are used for the caches).
        max_rows: bound on cache positions per sequence (prompt + generated rows); ``None`` = grow
            without bound. The engine stops a request that reaches it (``finish_reason="cache_full"``).
        initial_rows: positions preallocated beyond the longest prompt; the caches double when full.
        head: speech head (``speech_head(model, pack)``); default: ``model.speech_logits``.
        native: a :class:`~mgm_omni.generation.speech.native_step.NativeStep` of ``model`` to run the decode
            steps with (the prefill stays in PyTorch; both write the same caches).
        window_rows: decoded rows kept besides the prompt block (the long-form policy in the module
            docstring); ``None`` = all.
    """

    def __init__(self, model: SpeechLM, max_rows: int | None = None, initial_rows: int = 512,
                 head: Head | None = None, native=None, window_rows: int | None = DEFAULT_WINDOW_ROWS) -> None:
        if max_rows is not None and max_rows < 2:
            raise ValueError(f"max_rows must be >= 2, got {max_rows}")
        if window_rows is not None and window_rows < 4:
            raise ValueError(f"window_rows must be >= 4 or None, got {window_rows}")
        self.window_rows = window_rows
        self.slack = 0 if window_rows is None else max(1, window_rows // 4)  # rows dropped at a time
        self.model = model
        self.head = head or model.speech_logits
        self.native = native
        self.max_rows = max_rows
        self.initial_rows = initial_rows
        # Rows a request may still add (the engine sets max_new_rows): the caches never grow past
        # prompt + budget, so doubling cannot overshoot what the request can use.
        self.row_budget: int | None = None
        self.caches: tuple[KVCache, KVCache | None] | None = None
        self.positions: list[int] = []  # each sequence's next RoPE position (rows so far)
        self.slots: list[int] = []  # where its next row goes in the cache (= position until rows are dropped)
        self.prompt_rows: list[int] = []
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def num_slots(self) -> int:
        return self.model.num_slots

    def reset(self) -> None:
        """Drop the batch (caches are freed)."""
        self.caches, self.positions, self.slots, self.prompt_rows, self._rope = None, [], [], [], None

    def _rope_table(self, upto: int) -> tuple[torch.Tensor, torch.Tensor]:
        # One cos/sin table for all positions, shared by backbone and adapter, extended by doubling.
        if self._rope is None or self._rope[0].shape[0] < upto:
            size = max(upto, 2 * (0 if self._rope is None else self._rope[0].shape[0]))
            pos = torch.arange(size, device=self._device)[None]
            cos, sin = rope_cos_sin(pos, self.model.model.inv_freq)
            self._rope = (cos[0], sin[0])  # (P, D) each
        return self._rope

    @property
    def _device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def start(self, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Prefill a new batch of (T_b, 1 + k) prompts; (B, k, S) float32 logits for their first rows."""
        if not prompts:
            raise ValueError("start needs at least one prompt")
        lengths = [int(p.shape[0]) for p in prompts]
        t_max = max(lengths)
        if self.max_rows is not None and t_max >= self.max_rows:
            raise CacheBoundError(f"a prompt of {t_max} rows leaves no room under max_rows={self.max_rows}")
        cfg, k = self.model.cfg, self.num_slots
        rows = torch.full((len(prompts), t_max, k + 1), cfg.speech_pad, dtype=torch.long)
        rows[:, :, 0] = 0
        for i, p in enumerate(prompts):
            rows[i, : lengths[i]] = p
        rows = rows.to(self._device)
        limit = self.max_rows
        if self.row_budget is not None:
            budget = t_max + self.row_budget
            limit = budget if limit is None else min(limit, budget)
        if self.window_rows is not None:  # slots never go past prompt + window + slack
            bound = t_max + self.window_rows + self.slack
            limit = bound if limit is None else min(limit, bound)
        capacity = t_max + self.initial_rows if limit is None else min(t_max + self.initial_rows, limit)
        dtype = self.model.lm_head.weight.dtype
        llm = cache_for(cfg, len(prompts), capacity, dtype, self._device, limit)
        adapter = (cache_for(self.model.tts_adapter.cfg, len(prompts), capacity, dtype, self._device, limit)
                   if self.model.tts_adapter is not None else None)
        self.caches = (llm, adapter)
        self.positions, self.slots, self.prompt_rows = list(lengths), list(lengths), list(lengths)
        cos, sin = self._rope_table(t_max)
        rope = (cos[:t_max].expand(len(prompts), t_max, -1), sin[:t_max].expand(len(prompts), t_max, -1))
        last = torch.tensor(lengths, device=self._device) - 1
        return prefill(self.model, rows, last, self.caches, rope, self.head)

    def room(self, index: int) -> bool:
        """Whether sequence ``index`` can take one more row under ``max_rows``."""
        return self.max_rows is None or self.positions[index] < self.max_rows

    def step(self, rows: torch.Tensor) -> torch.Tensor:
        """Append one (B, 1 + k) row per sequence; (B, k, S) float32 logits for the next rows."""
        if self.caches is None:
            raise RuntimeError("step before start")
        b = len(self.positions)
        if rows.shape[0] != b:
            raise ValueError(f"step got {rows.shape[0]} rows for a batch of {b}")
        top = max(self.positions)
        if self.max_rows is not None and top >= self.max_rows:
            raise CacheBoundError(f"cache bound max_rows={self.max_rows} reached")
        if self.window_rows is not None:
            self._drop_old_rows()
        if self.native is not None:
            logits = self.native(rows, self.slots, self.caches, rope_positions=self.positions)
        else:
            cos, sin = self._rope_table(top + 1)
            pos = torch.tensor(self.positions, device=self._device)[:, None]  # (B, 1)
            rope = (cos[pos], sin[pos])  # (B, 1, D)
            slot = self.slots[0]
            cache_pos: int | torch.Tensor = slot
            if any(s != slot for s in self.slots):
                cache_pos = torch.tensor(self.slots, device=self._device)[:, None]  # (B, 1)
            logits = decode_step(self.model, rows.to(self._device), cache_pos, self.caches, rope, self.head)
        self.positions = [p + 1 for p in self.positions]
        self.slots = [s + 1 for s in self.slots]
        return logits

    @torch.inference_mode()
    def _drop_old_rows(self) -> None:
        """Sequences whose window is full keep their prompt block and their last ``window_rows`` rows."""
        w, drop = self.window_rows, self.slack
        for i, (slot, prompt) in enumerate(zip(self.slots, self.prompt_rows)):
            if slot < prompt + w + drop:
                continue
            for cache in self.caches:
                if cache is None:
                    continue
                for store in (*cache.k, *cache.v):  # (B, H_kv, capacity, D): rows [p+drop, p+drop+w) -> [p, p+w)
                    store[i, :, prompt:prompt + w] = store[i, :, prompt + drop:prompt + drop + w].clone()
                cache.lengths[i] = prompt + w
            self.slots[i] = slot - drop

    def keep(self, index: Sequence[int]) -> None:
        """Keep only the sequences at ``index`` (in that order); finished requests leave the batch."""
        if list(index) == list(range(len(self.positions))):
            return
        self.positions = [self.positions[i] for i in index]
        self.slots = [self.slots[i] for i in index]
        self.prompt_rows = [self.prompt_rows[i] for i in index]
        if not index:
            self.reset()
            return
        sel = torch.tensor(list(index), device=self._device)
        for cache in self.caches:
            if cache is None:
                continue
            cache.k = [t.index_select(0, sel) for t in cache.k]
            cache.v = [t.index_select(0, sel) for t in cache.v]
            cache.lengths = cache.lengths.index_select(0, sel)
