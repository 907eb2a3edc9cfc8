"""One speech stream: decoded rows -> vocoder tokens -> token-to-wave -> audio chunks, with its stats.

    stream = SpeechStream(token2wav, voice, generator.token_stream(), schedule, seed=0)
    for event in decoder.stream([prompt]):
        for chunk in stream.push(event):          # audio as soon as a hop of tokens is ready
            play(chunk)
    for chunk in stream.finish():                  # everything left, the withheld tail included
        play(chunk)
    stream.stats                                   # rows, tokens, samples, tts_error, timings

The pipeline, the server engine and omni mode all consume rows through this one object. The two halves
can run on different threads (the engine decodes on one and renders on another): :meth:`extract` takes
rows (decoder side), :meth:`render` and :meth:`finish` make audio (renderer side); each half writes its
own fields of :class:`StreamStats`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mgm_omni.generation.speech.chunk_state import RowEvent
from mgm_omni.generation.heap import HeapTrim
from mgm_omni.generation.speech.token_stream import VocoderTokenStream
from mgm_omni.generation.wave.token2wav import ReferencePrompt, StreamSchedule, Token2Wav


@dataclass
class StreamStats:
    """What a stream did; seconds are wall clock since ``started``.

    Decoder side: rows, tts_error, cause, finish_reason, unspoken. Renderer side: tokens, samples,
    vocoder_s, first_audio_s.
    """

    rows: int = 0
    tokens: int = 0
    samples: int = 0
    tts_error: bool = False
    cause: str | None = None
    finish_reason: str | None = None
    unspoken: int = 0
    vocoder_s: float = 0.0
    first_audio_s: float | None = None
    started: float = field(default_factory=time.perf_counter)


class SpeechStream:
    """Rows in, audio out, for one utterance in one voice.

    Args:
        token2wav: the renderer (used read-only), or None for tokens only (no audio).
        voice: the flow prompt (a :class:`~mgm_omni.generation.voice.Voice`).
        tokens: the mouth's row -> token extraction (``SpeechGenerator.token_stream()``).
        schedule: the token-to-wave hop schedule (on the mouth's streaming grid).
        seed: the vocoder's noise comes from the stream's own generator seeded with this (torch's global
            RNG if None), so the same rows and seed give the same audio whatever other threads do.
        stats: the stats object to fill (e.g. a server job's); default a fresh one.
    """

    def __init__(self, token2wav: Token2Wav | None, voice: ReferencePrompt, tokens: VocoderTokenStream,
                 schedule: StreamSchedule | None = None, seed: int | None = None,
                 stats: StreamStats | None = None) -> None:
        self.token2wav, self.voice, self.tokens = token2wav, voice, tokens
        self.stats = stats if stats is not None else StreamStats()
        self.state = token2wav.start(voice, schedule, seed=seed) if token2wav is not None else None
        self.finished = False
        self.heap = HeapTrim()  # long streams: freed pages go back to the system (mgm_omni/generation/heap.py)

    # ------------------------------------------------------------------------------ decoder side

    def extract(self, event: RowEvent) -> list[int]:
        """The vocoder tokens one decoded row releases (the request's last row releases the rest)."""
        stats = self.stats
        stats.rows += 1
        if event.abort is not None and stats.cause is None:
            stats.tts_error, stats.cause = True, str(event.abort.cause.value)
        out = self.tokens.push(event.row)
        if event.finish_reason is not None:
            stats.finish_reason = event.finish_reason
            stats.unspoken = len(event.unspoken or ())
            out += self.tokens.finish()
        return out

    # ------------------------------------------------------------------------------ renderer side

    def render(self, tokens: Sequence[int]) -> list[np.ndarray]:
        """The audio chunks that ``tokens`` complete (float32 at the mouth's sample rate)."""
        return list(self.render_iter(tokens))

    def render_iter(self, tokens: Sequence[int]) -> Iterator[np.ndarray]:
        """:meth:`render`, each chunk as soon as the renderer makes it (the first audio of a stream waits for
        the first vocoder call only, not the whole first hop). Consume it all before the next call."""
        self.stats.tokens += len(tokens)
        if self.state is None or not tokens:
            return iter(())
        return self._rendered(self.token2wav.push_iter(self.state, tokens))

    def _rendered(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        while True:
            start = time.perf_counter()
            with torch.inference_mode():
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield from self._delivered([chunk], start)

    def finish(self) -> list[np.ndarray]:
        """Render every remaining token and the withheld tail; the stream is closed afterwards."""
        if self.finished:
            return []
        self.finished = True
        if self.state is None:
            return []
        start = time.perf_counter()
        with torch.inference_mode():
            tail = self.token2wav.flush(self.state)
        return self._delivered([tail] if tail.size else [], start)

    # ------------------------------------------------------------------------------ both

    def push(self, event: RowEvent) -> list[np.ndarray]:
        """:meth:`extract` then :meth:`render` (one thread)."""
        return self.render(self.extract(event))

    def push_iter(self, event: RowEvent) -> Iterator[np.ndarray]:
        """:meth:`extract` then :meth:`render_iter` (one thread)."""
        return self.render_iter(self.extract(event))

    def _delivered(self, chunks: list[np.ndarray], start: float) -> list[np.ndarray]:
        now = time.perf_counter()
        self.stats.vocoder_s += now - start
        chunks = [c for c in chunks if c.size]
        if chunks and self.stats.first_audio_s is None:
            self.stats.first_audio_s = now - self.stats.started
        made = sum(c.shape[0] for c in chunks)
        self.stats.samples += made
        if made:
            self.heap.made(made / self.token2wav.sample_rate)
        return chunks
