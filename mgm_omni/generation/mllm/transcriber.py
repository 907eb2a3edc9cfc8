"""Speech to text with the brain: the one transcriber behind the CLI, the server and the evaluation.

    transcriber = Transcriber(MLLM.from_pretrained(path, towers=("audio",)))
    text = transcriber.transcribe(wave16k)              # any length: an hour is one pass
    prepared = transcriber.prepare(wave16k)             # or: encode and splice ...
    for step in transcriber.decode(prepared): ...       # ... then decode step by step (transcriber.last: counts)

The audio goes through the long-audio windows (30 s each, bounded memory, :mod:`long_audio`) into one
``<speech>`` placeholder, and the reply is decoded until the MLLM's eos. There is no fixed 4096-token cut: the
budget grows with the audio, ``tokens_per_second`` per second of it (8: about twice a fast speaker's rate in
English or Chinese) plus ``min_new_tokens``, unless ``max_new_tokens`` caps it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

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
    """

    prompt: str = TRANSCRIBE_PROMPT
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0))
    tokens_per_second: float = 8.0
    min_new_tokens: int = 64
    max_new_tokens: int | None = None
    trim_padding: bool = False
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise TranscribeError("the transcription prompt is empty")
        if not self.tokens_per_second > 0 or self.min_new_tokens < 1:
            raise TranscribeError("tokens_per_second must be > 0 and min_new_tokens >= 1")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise TranscribeError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def budget(self, n_samples: int) -> int:
        """Text tokens allowed for ``n_samples`` of 16 kHz audio."""
        tokens = -(-int(n_samples * self.tokens_per_second) // SAMPLE_RATE) + self.min_new_tokens
        return tokens if self.max_new_tokens is None else min(tokens, self.max_new_tokens)


@dataclass
class TranscriptStats:
    """What the last transcription did: audio length, audio tokens, text tokens, why it stopped, wall time."""

    audio_seconds: float = 0.0
    audio_tokens: int = 0
    text_tokens: int = 0
    budget: int = 0
    finish_reason: str | None = None
    language: str | None = None
    seconds: float = 0.0


@dataclass
class PreparedAudio:
    """Encoded audio spliced into the transcription prompt, ready to decode, and its running stats."""

    prompt: MLLMPrompt
    stats: TranscriptStats


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

    def prepare(self, wave16k: torch.Tensor, language: str | None = None) -> PreparedAudio:
        """Check the audio, encode it window by window and splice the transcription prompt.

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
        stats = TranscriptStats(wave.shape[0] / SAMPLE_RATE, budget=self.config.budget(wave.shape[0]),
                                language=language)
        self.last = stats
        with torch.inference_mode():
            audio = self.mllm.encode_audio(wave, trim_padding=self.config.trim_padding)
            prompt = self.mllm.prompt([("user", mllm_user_content(self.config.prompt, speech=True))], [audio])
        stats.audio_tokens = audio.embeddings.shape[0]
        stats.seconds = time.perf_counter() - start
        return PreparedAudio(prompt, stats)

    def decode(self, prepared: PreparedAudio) -> Iterator[TextStep]:
        """Decode the transcript of prepared audio step by step (until eos or the budget)."""
        cfg, stats = self.config, prepared.stats
        self.last = stats
        text = TextDecodeConfig(cfg.sampling, max_new_tokens=stats.budget, mask_from=self.mllm.config.mask_from,
                                seed=cfg.seed)
        start = time.perf_counter() - stats.seconds
        with torch.inference_mode():
            for step in self.mllm.stream(prepared.prompt, text):
                stats.text_tokens += step.finish_reason != "eos"
                stats.finish_reason = step.finish_reason
                stats.seconds = time.perf_counter() - start
                yield step

    def stream(self, wave16k: torch.Tensor, language: str | None = None) -> Iterator[TextStep]:
        """:meth:`prepare` then :meth:`decode`: the decode steps of mono 16 kHz samples (S,)."""
        return self.decode(self.prepare(wave16k, language))

    def transcribe(self, wave16k: torch.Tensor, language: str | None = None) -> str:
        """The whole transcript (surrounding whitespace removed)."""
        return "".join(step.text for step in self.stream(wave16k, language)).strip()
