"""Timing one streamed synthesis from the caller's side: first audio, wall time, real-time factor.

``timed_stream`` runs ``TTSPipeline.stream`` as a user of it would (optionally writing every chunk to a WAV as
it comes) and clocks what the user waits for: the first chunk after the call (text front-end, prompt prefill,
the first rows and the first hop of token-to-wave included) and the whole call. ``speed_test`` measures a
voice's first stream (its prompt not yet prefilled) and then ``repeats`` later ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.generation.wave.writer import StreamingWavWriter


@dataclass
class StreamTiming:
    """One streamed synthesis: seconds as the caller saw them, and the pipeline's own counts."""

    first_audio_s: float | None
    wall_s: float
    audio_s: float
    rows: int
    finish_reason: str | None
    tts_error: bool
    lm_s: float
    vocoder_s: float

    @property
    def rtf(self) -> float:
        """Wall time of the whole call over the audio it made."""
        return self.wall_s / self.audio_s if self.audio_s else float("inf")

    def as_dict(self) -> dict:
        return {"first_audio_s": self.first_audio_s, "wall_s": self.wall_s, "audio_s": self.audio_s,
                "rtf": self.rtf, "rows": self.rows, "finish_reason": self.finish_reason,
                "tts_error": self.tts_error, "lm_s": self.lm_s, "vocoder_s": self.vocoder_s}


def timed_stream(pipe, text: str, out: str | os.PathLike | None = None,
                 keep: bool = False) -> tuple[StreamTiming, np.ndarray | None]:
    """Speak ``text`` with ``pipe`` (a :class:`TTSPipeline`), writing the chunks to the WAV ``out`` if given.

    Returns the timing and, with ``keep``, the whole audio (float32 at ``pipe.sample_rate``).
    """
    writer = StreamingWavWriter(Path(out), pipe.sample_rate) if out is not None else None
    kept: list[np.ndarray] = []
    first = None
    start = time.perf_counter()
    try:
        for chunk in pipe.stream(text):
            if first is None and chunk.size:
                first = time.perf_counter() - start
            if writer is not None:
                writer.write(chunk)
            if keep:
                kept.append(chunk)
    finally:
        wall = time.perf_counter() - start
        if writer is not None:
            writer.close()
    r = pipe.last
    timing = StreamTiming(first, wall, r.audio_seconds, r.rows, r.finish_reason, r.tts_error, r.lm_seconds,
                          r.vocoder_seconds)
    audio = (np.concatenate(kept) if kept else np.zeros(0, np.float32)) if keep else None
    return timing, audio


def speed_test(pipe, voice, text: str, repeats: int = 2, threads: int = 2) -> dict:
    """First audio and RTF at ``threads`` torch threads: the voice's first stream (cold: its prompt is
    prefilled inside the call), then ``repeats`` streams of the same text (prompt prefilled once per voice).

    ``voice`` must be a voice object this pipeline has not spoken with yet, for the cold figure to be cold.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pipe.voice = voice
        cold, _ = timed_stream(pipe, text)
        warm = [timed_stream(pipe, text)[0] for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)
    firsts = [w.first_audio_s for w in warm if w.first_audio_s is not None]
    audio, wall = sum(w.audio_s for w in warm), sum(w.wall_s for w in warm)
    return {
        "threads": threads, "text_chars": len(text), "repeats": repeats,
        "first_audio_cold_s": cold.first_audio_s,
        "first_audio_s": float(np.median(firsts)) if firsts else None,
        "rtf": wall / audio if audio else None,
        "audio_s_per_run": audio / repeats,
        "cold": cold.as_dict(), "runs": [w.as_dict() for w in warm],
    }
