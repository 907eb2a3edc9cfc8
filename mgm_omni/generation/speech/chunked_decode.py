"""Chunk-Based Parallel Decoding: the loop that turns prompts into rows (spec §2.2, §2.6).

``ChunkedDecoder.stream`` decodes a batch of independent requests together and yields every row the
moment it exists (so token-to-wave can start before decoding ends); ``generate`` collects them. Each
request has its own :class:`~mgm_omni.generation.speech.chunk_state.ChunkState`; the model work goes through a
runner (``start`` / ``step`` / ``keep`` / ``room``, see ``speech_runner.SpeechLMRunner``). Finished
requests leave the batch at once.

Stop rules (explicit, spec §2.6): a request ends with its END row (``finish_reason="end"``), after
``max_new_rows`` rows (``"max_rows"``), or when its KV cache reaches ``max_cache_rows``
(``"cache_full"``). The cache bound policy: decoding of that request stops cleanly at the bound;
the rows so far are valid (their token stream can be vocoded) and the text not yet placed is returned
in ``SpeechResult.unspoken`` so the caller can continue it as a new request. There is no sliding
window: dropping early rows would change the voice (spec §2.2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mgm_omni.generation.sampling import SamplingConfig, mark_seen, sample
from mgm_omni.generation.speech.chunk_state import (
    AbortCause,
    ChunkAbort,
    ChunkRules,
    ChunkState,
    RowEvent,
    RowKind,
    step_row,
)
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds

__all__ = ["FINISH_REASONS", "ChunkAbort", "ChunkedDecoder", "DecodeConfig", "RetryPolicy", "RowEvent",
           "SpeechResult", "generate_with_retry"]

FINISH_REASONS = ("end", "max_rows", "cache_full")


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of one decode.

    Args:
        sampling: speech sampling (temperature 0 = greedy).
        rules: chunk limits; ``None`` = the decoder's (the mouth's limits, see ``ChunkRules.for_mouth``).
        max_new_rows: stop a request after this many generated rows (official CLI: 8192).
        max_cache_rows: bound on KV-cache positions per request (prompt + rows); ``None`` = unbounded.
        initial_cache_rows: positions preallocated beyond the prompt; ``None`` = estimated from the
            text length (the cache doubles when it runs out).
        seed: seed of the sampling generator (``None``: torch's global generator).
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    rules: ChunkRules | None = None
    max_new_rows: int = 8192
    max_cache_rows: int | None = None
    initial_cache_rows: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_rows < 1:
            raise ValueError(f"max_new_rows must be >= 1, got {self.max_new_rows}")
        if self.initial_cache_rows is not None and self.initial_cache_rows < 1:
            raise ValueError(f"initial_cache_rows must be >= 1, got {self.initial_cache_rows}")


@dataclass
class SpeechResult:
    """Everything decoded for one request."""

    rows: list[tuple[int, ...]] = field(default_factory=list)
    kinds: list[RowKind] = field(default_factory=list)
    aborts: list[ChunkAbort] = field(default_factory=list)
    finish_reason: str | None = None
    unspoken: list[int] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # vocoder tokens, filled by SpeechGenerator

    @property
    def tts_error(self) -> bool:
        """True if any chunk was closed by a safeguard (blank run or step cap)."""
        return bool(self.aborts)

    @property
    def cause(self) -> AbortCause | None:
        """The cause of the first aborted chunk, if any."""
        return self.aborts[0].cause if self.aborts else None

    def rows_tensor(self) -> torch.Tensor:
        """(T, 1 + k) int64."""
        return torch.tensor(self.rows, dtype=torch.long)

    def add(self, event: RowEvent) -> None:
        self.rows.append(event.row)
        self.kinds.append(event.kind)
        if event.abort is not None:
            self.aborts.append(event.abort)
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
            self.unspoken = list(event.unspoken or ())


class ChunkedDecoder:
    """The decoding engine.

    Args:
        runner: model state of a batch (``SpeechLMRunner`` or a test double with the same methods).
        ids: special ids; ``text``: the SpeechLM's text front-end (sentence-end / skippable tests).
        config: decode settings.
        rules: chunk limits when ``config.rules`` is None (default: the release's, rescaled to the runner's k).
    """

    def __init__(self, runner, ids: SpecialIds, text, config: DecodeConfig | None = None,
                 rules: ChunkRules | None = None) -> None:
        self.runner, self.ids, self.text = runner, ids, text
        self.config = config or DecodeConfig()
        self.slots = runner.num_slots
        self.rules = rules or ChunkRules.for_slots(self.slots)

    def stream(self, prompts: Sequence[PromptRows], config: DecodeConfig | None = None) -> Iterator[RowEvent]:
        """Decode ``prompts`` together, yielding each row as it is decoded (rows of different requests
        interleave; ``event.request`` is the prompt's index). Greedy rows do not depend on the batch."""
        cfg = config or self.config
        rules = cfg.rules or self.rules
        states = [ChunkState(p.buffer, self.ids, rules, self.text, self.slots) for p in prompts]
        generator = None
        if cfg.seed is not None:
            generator = torch.Generator(device=_device_of(self.runner)).manual_seed(cfg.seed)
        self.runner.initial_rows = cfg.initial_cache_rows or _estimate_rows(prompts, cfg)
        self.runner.max_rows = cfg.max_cache_rows
        self.runner.row_budget = cfg.max_new_rows
        logits = self.runner.start([p.rows for p in prompts])  # (B, k, S)
        active = list(range(len(prompts)))  # request index of each batch slot
        counts = [0] * len(prompts)
        size = logits.shape[-1]
        seen = None
        if cfg.sampling.repetition_penalty != 1.0:
            seen = torch.zeros(len(prompts) * self.slots, size, dtype=torch.bool, device=logits.device)
        try:
            while active:
                flat = logits.reshape(-1, size)  # (B * k, S): every slot of every request is one row
                picked = sample(flat, cfg.sampling, seen, generator).view(len(active), self.slots).tolist()
                rows, kept = [], []
                for slot, req in enumerate(active):
                    event = step_row(states[req], picked[slot], req, counts[req], cfg.max_new_rows,
                                     self.runner.room(slot))
                    counts[req] += 1
                    if event.finish_reason is None:
                        rows.append(event.row)
                        kept.append(slot)
                    yield event
                if not kept:
                    break
                if len(kept) != len(active):
                    self.runner.keep(kept)
                    active = [active[s] for s in kept]
                    if seen is not None:
                        seen = seen.view(-1, self.slots, size)[kept].reshape(-1, size)
                step_rows = torch.tensor(rows, dtype=torch.long)  # (B', 1 + k)
                if seen is not None:
                    mark_seen(seen, step_rows[:, 1:].reshape(-1).to(seen.device))
                logits = self.runner.step(step_rows)
        finally:
            self.runner.reset()

    def generate(self, prompts: Sequence[PromptRows], config: DecodeConfig | None = None) -> list[SpeechResult]:
        """Decode ``prompts`` to completion; one :class:`SpeechResult` per prompt, in order."""
        results = [SpeechResult() for _ in prompts]
        for event in self.stream(prompts, config):
            results[event.request].add(event)
        return results


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of a request whose decode had an aborted chunk (``tts_error``).

    Attempt 0 uses the decode temperature T; retry i uses ``temperatures[i - 1]`` if given, else
    ``min(max_temperature, T + step * i)`` (the official drivers' ``max(1.0, T + 0.1)`` jumps to 1.0 at
    once; spec §2.9 #3). Every attempt is recorded in ``SpeechResult.attempts``; if all fail, the last
    result is returned with ``tts_error`` still set.
    """

    max_attempts: int = 3
    step: float = 0.1
    max_temperature: float = 1.0
    temperatures: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.temperatures is not None and len(self.temperatures) < self.max_attempts - 1:
            raise ValueError("temperatures must list one value per retry (max_attempts - 1)")

    def temperature(self, attempt: int, base: float) -> float:
        if attempt == 0:
            return base
        if self.temperatures is not None:
            return self.temperatures[attempt - 1]
        return min(self.max_temperature, base + self.step * attempt)


def generate_with_retry(decoder: ChunkedDecoder, prompt: PromptRows, policy: RetryPolicy,
                        config: DecodeConfig | None = None) -> SpeechResult:
    """Decode one request, retrying per ``policy`` while it has aborted chunks."""
    cfg = config or decoder.config
    attempts: list[dict] = []
    for attempt in range(policy.max_attempts):
        t = policy.temperature(attempt, cfg.sampling.temperature)
        sampling = SamplingConfig(t, cfg.sampling.top_k, cfg.sampling.top_p, cfg.sampling.repetition_penalty)
        seed = None if cfg.seed is None else cfg.seed + attempt
        run = DecodeConfig(sampling, cfg.rules, cfg.max_new_rows, cfg.max_cache_rows, cfg.initial_cache_rows, seed)
        result = decoder.generate([prompt], run)[0]
        attempts.append({"attempt": attempt, "temperature": t, "tts_error": result.tts_error,
                         "causes": [a.cause.value for a in result.aborts], "finish_reason": result.finish_reason})
        if not result.tts_error:
            break
    result.attempts = attempts
    return result


def _estimate_rows(prompts: Sequence[PromptRows], cfg: DecodeConfig) -> int:
    # About 2 rows per text id (TEXT rows, then PAD rows as long again) plus room for chunk ends, at
    # most 2048 up front (a 10-minute request grows twice); the caches double if this is short.
    longest = max((len(p.buffer) for p in prompts), default=0)
    return max(64, min(cfg.max_new_rows, 2048, 2 * longest + 64))


def _device_of(runner) -> torch.device:
    model = getattr(runner, "model", None)
    return model.lm_head.weight.device if model is not None else torch.device("cpu")
