"""Speech to text with the brain: the one transcriber behind the CLI, the server and the evaluation.

    transcriber = Transcriber(MLLM.from_pretrained(path, towers=("audio",)))
    text = transcriber.transcribe(wave16k)              # any length: an hour is one pass
    prepared = transcriber.prepare(wave16k)             # or: encode and splice ...
    for step in transcriber.decode(prepared): ...       # ... then decode step by step (transcriber.last: counts)

The audio goes through the long-audio windows (30 s each, bounded memory, :mod:`long_audio`) into one
``<speech>`` placeholder, and the reply is decoded until the MLLM's eos. There is no fixed 4096-token cut: the
budget grows with the audio, ``tokens_per_second`` per second of it (8: about twice a fast speaker's rate in
English or Chinese) plus ``min_new_tokens``, unless ``max_new_tokens`` caps it.

A brain trained on short items (its config's ``speech_segment_seconds``, e.g. the default brain's 12)
hears long audio as segments of at most that length, each cut at a pause (:mod:`pause_split`) and transcribed
as its own prompt, one after the other; the texts are joined with a space and streamed as one transcript.
The official brains read an hour in one prompt, as they were trained.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from mgm_omni.generation.mllm.pause_split import pause_spans
from mgm_omni.generation.mllm.runner import MLLM, MLLMPrompt, TextDecodeConfig, TextStep
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.text import mllm_user_content

TRANSCRIBE_PROMPT = "Please transcribe the audio."
SAMPLE_RATE = 16000


class TranscribeError(ValueError):
    """Audio or settings that cannot be transcribed (empty, not mono 16 kHz samples, bad budget)."""


@dataclass(frozen=True)
class TranscribeConfig:
    """How a transcript is asked for and decoded.

    Args:
        prompt: the instruction after the ``<speech>`` placeholder (the official CLI's wording).
        sampling: text sampling (default greedy: a transcript should not vary between runs).
        tokens_per_second, min_new_tokens: the budget, ``ceil(seconds * tokens_per_second) + min_new_tokens``.
        max_new_tokens: a hard cap on top of the budget (``None``: the budget alone).
        trim_padding: drop audio tokens lying wholly in the last window's zero padding.
        seed: text sampling seed (only matters when sampling).
        segment_seconds: transcribe audio longer than this as segments of at most this length, cut at pauses,
            each its own prompt (``None``: the brain's ``speech_segment_seconds``, else one prompt for the
            whole audio; ``math.inf``: always one prompt).
        pause_search_seconds: where a segment's cut is looked for: the quietest moment of its last this-many
            seconds (at most ``segment_seconds``).
        stop_loops: end a segment once its text has fallen into a loop (:func:`looping_tail`: the same block of
            ids over and over); the rest of the audio goes on from the next segment. A small brain that loses
            its place repeats its last sentence until the budget is spent; this keeps one extra copy instead.
    """

    prompt: str = TRANSCRIBE_PROMPT
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0))
    tokens_per_second: float = 8.0
    min_new_tokens: int = 64
    max_new_tokens: int | None = None
    trim_padding: bool = False
    seed: int | None = 0
    segment_seconds: float | None = None
    pause_search_seconds: float = 10.0
    stop_loops: bool = True

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise TranscribeError("the transcription prompt is empty")
        if not self.tokens_per_second > 0 or self.min_new_tokens < 1:
            raise TranscribeError("tokens_per_second must be > 0 and min_new_tokens >= 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise TranscribeError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.segment_seconds is not None and not self.segment_seconds >= 1.0:
            raise TranscribeError(f"segment_seconds must be >= 1 (or None), got {self.segment_seconds}")
        if not 0 < self.pause_search_seconds:
            raise TranscribeError(f"pause_search_seconds must be > 0, got {self.pause_search_seconds}")

    def budget(self, n_samples: int) -> int:
        """Text tokens allowed for ``n_samples`` of 16 kHz audio."""
        tokens = _uncapped_budget(self, n_samples)
        return tokens if self.max_new_tokens is None else min(tokens, self.max_new_tokens)

    def spans(self, n_samples: int, wave: torch.Tensor, segment_seconds: float | None) -> list[tuple[int, int]]:
        """The ``(start, stop)`` sample spans transcribed one prompt each (one span: the whole audio)."""
        if segment_seconds is None or math.isinf(segment_seconds) or n_samples <= segment_seconds * SAMPLE_RATE:
            return [(0, n_samples)]
        limit = int(segment_seconds * SAMPLE_RATE)
        return pause_spans(wave, limit, min(limit, int(self.pause_search_seconds * SAMPLE_RATE)))


@dataclass
class TranscriptStats:
    """What the last transcription did: audio length, audio tokens, text tokens, why it stopped, wall time."""

    audio_seconds: float = 0.0
    audio_tokens: int = 0
    text_tokens: int = 0
    budget: int = 0
    segments: int = 1
    cut_segments: int = 0
    loops: int = 0
    finish_reason: str | None = None
    language: str | None = None
    seconds: float = 0.0


@dataclass
class PreparedAudio:
    """Encoded audio spliced into the transcription prompt, ready to decode, and its running stats.

    With segments, ``prompt`` is the first segment's; the others (``spans[1:]`` of ``wave``) are encoded as
    decoding reaches them, so memory holds one segment's tokens at a time.
    """

    prompt: MLLMPrompt
    stats: TranscriptStats
    wave: torch.Tensor | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)


class Transcriber:
    """An :class:`MLLM` with an audio tower, asked for transcripts.

    Args:
        mllm: the brain (its audio tower and speech projector loaded).
        config: prompt, sampling and budget (default :class:`TranscribeConfig`).
    """

    def __init__(self, mllm: MLLM, config: TranscribeConfig | None = None) -> None:
        self.mllm = mllm
        self.config = config or TranscribeConfig()
        self.last = TranscriptStats()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.bfloat16, config: TranscribeConfig | None = None) -> Transcriber:
        """The brain at ``path`` (a directory or cached hub id) with only its audio tower."""
        return cls(MLLM.from_pretrained(path, dtype=dtype, device=device, towers=("audio",)), config)

    def segment_seconds(self) -> float | None:
        """The segment length in force: the config's, else the brain's ``speech_segment_seconds`` (or None)."""
        if self.config.segment_seconds is not None:
            return self.config.segment_seconds
        return getattr(getattr(getattr(self.mllm, "model", None), "cfg", None), "speech_segment_seconds", None)

    def prepare(self, wave16k: torch.Tensor, language: str | None = None) -> PreparedAudio:
        """Check the audio, encode it window by window and splice the transcription prompt (with segments: the
        first segment's; see :attr:`PreparedAudio.spans`).

        ``language`` (e.g. "en", "zh") is checked and recorded; MGM-Omni has no language switch in its prompt,
        so it does not change what is asked.
        """
        wave = torch.as_tensor(wave16k)
        if wave.dim() != 1 or wave.numel() == 0 or not wave.is_floating_point():
            raise TranscribeError(f"expected mono 16 kHz float samples of shape (S,), got {tuple(wave.shape)} "
                                  f"{wave.dtype}")
        if language is not None and not (isinstance(language, str) and language.isalpha() and len(language) <= 8):
            raise TranscribeError(f"language must be a code such as 'en' or 'zh', got {language!r}")
        start = time.perf_counter()
        cfg, n = self.config, wave.shape[0]
        spans = cfg.spans(n, wave, self.segment_seconds())
        budget = cfg.budget(n)
        if len(spans) > 1:  # each segment gets its own budget: a loop in one does not starve the others
            budget = sum(_uncapped_budget(cfg, stop - begin) for begin, stop in spans)
            budget = budget if cfg.max_new_tokens is None else min(budget, cfg.max_new_tokens)
        stats = TranscriptStats(n / SAMPLE_RATE, budget=budget, segments=len(spans), language=language)
        self.last = stats
        first = wave if len(spans) == 1 else wave[spans[0][0]:spans[0][1]]
        prompt = self._prompt(first, stats)
        stats.seconds = time.perf_counter() - start
        return PreparedAudio(prompt, stats, wave if len(spans) > 1 else None, spans)

    def _prompt(self, wave: torch.Tensor, stats: TranscriptStats) -> MLLMPrompt:
        with torch.inference_mode():
            audio = self.mllm.encode_audio(wave, trim_padding=self.config.trim_padding)
            prompt = self.mllm.prompt([("user", mllm_user_content(self.config.prompt, speech=True))], [audio])
        stats.audio_tokens += audio.embeddings.shape[0]
        return prompt

    def decode(self, prepared: PreparedAudio) -> Iterator[TextStep]:
        """Decode the transcript of prepared audio step by step (until eos or the budget).

        With segments, the steps of all segments come as one stream: a segment's eos is not yielded (its
        flushed text moves to the next piece), the next segment's first text is preceded by a space, and only
        the last step has a ``finish_reason`` (``"max_tokens"`` when the whole budget ran out, ``"repetition"``
        when the last segment ended in a loop: ``TranscribeConfig.stop_loops``).
        """
        cfg, stats = self.config, prepared.stats
        self.last = stats
        spans = prepared.spans or [(0, 0)]
        start = time.perf_counter() - stats.seconds
        remaining, carry, emitted = stats.budget, "", False
        for i, (begin, stop) in enumerate(spans):
            if i == 0:
                prompt, limit = prepared.prompt, remaining
            else:
                prompt = self._prompt(prepared.wave[begin:stop], stats)
            if len(spans) > 1:
                limit = min(_uncapped_budget(cfg, stop - begin), remaining)
            sep = " " if i and emitted else ""
            text = TextDecodeConfig(cfg.sampling, max_new_tokens=limit, mask_from=self.mllm.config.mask_from,
                                    seed=cfg.seed)
            ids: list[int] = []
            with torch.inference_mode():
                for step in self.mllm.stream(prompt, text):
                    stats.seconds = time.perf_counter() - start
                    if step.finish_reason != "eos":
                        stats.text_tokens += 1
                        remaining -= 1
                        ids.append(step.token)
                    final = i == len(spans) - 1 or (step.finish_reason == "max_tokens" and remaining == 0)
                    if step.finish_reason == "eos" and not final:
                        carry += step.text  # a segment's end: its unfinished bytes, if any, go on
                        break
                    piece = step.text
                    if piece and sep:
                        piece = piece if piece[0].isspace() else sep + piece
                        sep = ""
                    piece, carry = carry + piece, ""
                    emitted = emitted or bool(piece.strip())
                    if step.finish_reason == "max_tokens" and not final:
                        stats.cut_segments += 1
                    reason = step.finish_reason if final else None
                    stats.finish_reason = reason
                    yield TextStep(step.token, piece, reason)
                    if final and step.finished:
                        return
                    if cfg.stop_loops and not step.finished and looping_tail(ids):
                        stats.loops += 1
                        if i == len(spans) - 1:
                            stats.finish_reason = "repetition"
                            yield TextStep(step.token, "", "repetition")
                            return
                        break

    def stream(self, wave16k: torch.Tensor, language: str | None = None) -> Iterator[TextStep]:
        """:meth:`prepare` then :meth:`decode`: the decode steps of mono 16 kHz samples (S,)."""
        return self.decode(self.prepare(wave16k, language))

    def transcribe(self, wave16k: torch.Tensor, language: str | None = None) -> str:
        """The whole transcript (surrounding whitespace removed)."""
        return "".join(step.text for step in self.stream(wave16k, language)).strip()


LOOP_RULES = ((8, 2), (4, 3), (1, 6))  # (shortest block, times in a row): a loop when the tail repeats so


def looping_tail(ids: list[int], max_block: int = 64) -> int:
    """Length of the block of ids that the end of ``ids`` repeats as a loop, or 0: a block of 8+ ids twice in a
    row, of 4-7 ids three times, of 1-3 ids six times (:data:`LOOP_RULES`). Dictation repeats a short phrase
    now and then ("beautiful gun, beautiful gun"); a whole sentence again and again is the decoder's loop."""
    n = len(ids)
    for length in range(1, min(max_block, n) + 1):
        times = next(t for shortest, t in LOOP_RULES if length >= shortest)
        if n < length * times:
            continue
        block = ids[n - length:]
        if all(ids[n - (k + 1) * length:n - k * length] == block for k in range(1, times)):
            return length
    return 0


def _uncapped_budget(cfg: TranscribeConfig, n_samples: int) -> int:
    return -(-int(n_samples * cfg.tokens_per_second) // SAMPLE_RATE) + cfg.min_new_tokens
