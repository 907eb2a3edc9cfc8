"""The official reference front-end: (speech tokens, prompt mel, x-vector) of one reference clip (spec §3.2).

Steps, on the clip resampled to 16 kHz (the official loader reads references at 16 kHz):

1. checks: finite samples, at least ``min_seconds`` (1 s), at most ``max_seconds`` (30 s; typical references are
   3-15 s), and at least ``min_voiced_seconds`` of 20 ms frames louder than ``silence_dbfs``. A longer clip is an
   error by default; ``too_long="trim"`` keeps its first ``max_seconds`` instead, with a warning (the transcript
   must then be cut to match, which this module cannot do);
2. prompt mel: resample 16 -> 24 kHz (soxr here; the official code uses torchaudio's resampler), CosyVoice2 log-mel
   (``audio.COSYVOICE2_24K``), (T_mel, 80) at 50 fps;
3. x-vector: the speaker encoder on the 16 kHz clip; the flow needs the 192-d CAMPPlus x-vector;
4. speech tokens: the S3 tokenizer on the 16 kHz clip (30 s blocks), 25 Hz;
5. align: ``n = min(T_mel // 2, n_tokens)``; keep n tokens and 2n mel frames.

The result is a :class:`~mgm_omni.generation.voice.Voice`. Without the official ONNX files there is no faithful
reference prompt: ``load_reference_frontends`` names the missing files. :class:`OfficialFrontEnd` is this
front-end behind the ``VoiceFrontEnd`` protocol (loaded on first use), for mouths that declare
``speech_tokenizer: s3-v2`` and ``speaker_encoder: campplus``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from mgm_omni.audio import COSYVOICE2_24K, MelConfig, log_mel, resample
from mgm_omni.generation.voice import Voice, VoiceError
from mgm_omni.models.onnx_session import OnnxAssetError
from mgm_omni.models.speaker import CAMPPLUS_FILE, CampPlusOnnx, SpeakerEncoder
from mgm_omni.models.speech_tokenizer import S3_TOKENIZER_FILE, S3Tokenizer


class ReferencePromptError(VoiceError):
    """A reference prompt that cannot be built (wrong encoder, inconsistent parts)."""


class ReferenceAudioError(ReferencePromptError):
    """Reference audio that cannot serve as a voice prompt: too short, too long, silent, non-finite, badly shaped."""


class SpeechTokenizer(Protocol):
    """What the reference prompt needs from a speech tokenizer (``S3Tokenizer`` is one)."""

    sample_rate: int

    def tokenize(self, wave16k: torch.Tensor) -> torch.Tensor:  # (S,) -> (1, L) int64
        ...


@dataclass(frozen=True)
class ReferenceConfig:
    """Limits and front-end settings for reference clips."""

    sample_rate: int = 16000  # rate of the tokenizer and speaker encoder
    mel: MelConfig = COSYVOICE2_24K
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    too_long: str = "error"  # "error" or "trim" (keep the first max_seconds, warn)
    silence_dbfs: float = -50.0  # a 20 ms frame counts as voiced above this RMS level (0 dBFS = RMS 1)
    min_voiced_seconds: float = 0.5
    xvector_dim: int = 192

    def __post_init__(self):
        if self.sample_rate <= 0 or self.xvector_dim <= 0:
            raise ValueError("ReferenceConfig needs sample_rate > 0 and xvector_dim > 0")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"ReferenceConfig needs 0 < min_seconds <= max_seconds, got {self.min_seconds}, "
                             f"{self.max_seconds}")
        if self.too_long not in ("error", "trim"):
            raise ValueError(f"ReferenceConfig.too_long must be 'error' or 'trim', got {self.too_long!r}")
        if not 0 <= self.min_voiced_seconds <= self.min_seconds or self.silence_dbfs >= 0:
            raise ValueError("ReferenceConfig needs 0 <= min_voiced_seconds <= min_seconds and silence_dbfs < 0")


def prepare_reference_audio(wave: torch.Tensor, sr: int, config: ReferenceConfig | None = None) -> torch.Tensor:
    """Validate a reference clip and return it as a float32 (S,) waveform at ``config.sample_rate``.

    Raises ``ReferenceAudioError`` (one line) for non-finite samples, a wrong shape, a clip shorter than
    ``min_seconds``, longer than ``max_seconds`` (unless ``too_long="trim"``) or without ``min_voiced_seconds``
    of sound above ``silence_dbfs``.
    """
    cfg = config or ReferenceConfig()
    wave = torch.as_tensor(wave)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1 or not wave.is_floating_point():
        raise ReferenceAudioError(
            f"reference audio must be a float mono (S,) or (1, S) waveform, got {wave.dtype} {tuple(wave.shape)}"
        )
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ReferenceAudioError(f"reference sample rate must be a positive int, got {sr!r}")
    if not bool(torch.isfinite(wave).all()):
        raise ReferenceAudioError("reference audio contains NaN or Inf samples")
    seconds = wave.shape[0] / sr
    if seconds < cfg.min_seconds:
        raise ReferenceAudioError(
            f"reference audio is {seconds:.2f} s long; at least {cfg.min_seconds:g} s is needed (3-15 s is typical)"
        )
    if seconds > cfg.max_seconds:
        if cfg.too_long == "error":
            raise ReferenceAudioError(
                f"reference audio is {seconds:.1f} s long, over the {cfg.max_seconds:g} s limit (3-15 s is typical); "
                f"cut it, or use too_long='trim' to keep the first {cfg.max_seconds:g} s"
            )
        warnings.warn(
            f"reference audio is {seconds:.1f} s long; keeping its first {cfg.max_seconds:g} s "
            "(cut the transcript to match)",
            stacklevel=2,
        )
        wave = wave[: math.floor(cfg.max_seconds * sr)]
    wave = resample(wave.detach().float().cpu(), int(sr), cfg.sample_rate)
    voiced = voiced_seconds(wave, cfg.sample_rate, cfg.silence_dbfs)
    if voiced < cfg.min_voiced_seconds:
        raise ReferenceAudioError(
            f"reference audio is silent or nearly so: {voiced:.2f} s above {cfg.silence_dbfs:g} dBFS, "
            f"{cfg.min_voiced_seconds:g} s needed"
        )
    return wave


def voiced_seconds(wave: torch.Tensor, sr: int, threshold_dbfs: float, frame_seconds: float = 0.02) -> float:
    """Seconds of ``wave`` (S,) in non-overlapping frames whose RMS level exceeds ``threshold_dbfs``."""
    frame = max(1, round(frame_seconds * sr))
    if wave.shape[0] < frame:
        return 0.0
    rms = wave[: wave.shape[0] // frame * frame].double().reshape(-1, frame).square().mean(dim=1).sqrt()
    loud = rms > 10.0 ** (threshold_dbfs / 20.0)
    return int(loud.sum()) * frame / sr


def build_reference_prompt(
    wave: torch.Tensor,
    sr: int,
    speech_tokenizer: SpeechTokenizer,
    speaker_encoder: SpeakerEncoder,
    text: str = "",
    config: ReferenceConfig | None = None,
) -> Voice:
    """Build the reference prompt of one clip (spec §3.2).

    Args:
        wave: (S,) or (1, S) float waveform in [-1, 1] at ``sr`` Hz (e.g. from ``audio.load_audio``).
        sr: its sample rate.
        speech_tokenizer: an ``S3Tokenizer`` (official speech_tokenizer_v2.onnx).
        speaker_encoder: a 192-d x-vector encoder, i.e. ``CampPlusOnnx`` (official campplus.onnx).
        text: the reference transcript, stored as is.
        config: limits; see ``ReferenceConfig``.
    Returns:
        a ``Voice`` with tokens (1, L), mel (1, 2L, 80), xvector (1, 192).
    """
    cfg = config or ReferenceConfig()
    if speaker_encoder.dim != cfg.xvector_dim:
        raise ReferencePromptError(
            f"speaker encoder {speaker_encoder.name!r} gives {speaker_encoder.dim}-d embeddings but the flow needs "
            f"the {cfg.xvector_dim}-d CAMPPlus x-vector ({CAMPPLUS_FILE}); the offline encoders are for scoring only"
        )
    if speech_tokenizer.sample_rate != cfg.sample_rate or speaker_encoder.sample_rate != cfg.sample_rate:
        raise ReferencePromptError(f"the tokenizer and speaker encoder must both take {cfg.sample_rate} Hz audio")
    wave16k = prepare_reference_audio(wave, sr, cfg)
    wave_mel = resample(wave16k, cfg.sample_rate, cfg.mel.sample_rate)  # official: from the 16 kHz clip
    mel = log_mel(wave_mel, cfg.mel).T  # (T_mel, 80)
    tokens = speech_tokenizer.tokenize(wave16k).reshape(1, -1).long()  # (1, L_tok)
    xvector = speaker_encoder.embed(wave16k).reshape(1, -1).float()  # (1, 192)
    n = min(mel.shape[0] // 2, tokens.shape[1])
    if n == 0:
        raise ReferenceAudioError("reference audio gave no speech tokens")
    return Voice(tokens[:, :n], mel[None, : 2 * n].contiguous(), xvector, text=text)


def load_reference_frontends(cosyvoice_dir: str | os.PathLike, threads: int = 1) -> tuple[S3Tokenizer, CampPlusOnnx]:
    """The official reference front ends from a ``cosyvoice2/`` asset folder (spec §3.1).

    Raises ``OnnxAssetError`` naming every missing file (``speech_tokenizer_v2.onnx``, ``campplus.onnx``).
    """
    folder = Path(cosyvoice_dir)
    missing = [name for name in (S3_TOKENIZER_FILE, CAMPPLUS_FILE) if not (folder / name).is_file()]
    if missing:
        raise OnnxAssetError(
            f"reference front ends need {' and '.join(missing)} in {folder}; without them no faithful reference "
            "prompt can be built: download cosyvoice2/* from the SpeechLM repository (e.g. wcy1122/MGM-Omni-TTS-2B-0927)"
        )
    return S3Tokenizer(folder / S3_TOKENIZER_FILE, threads=threads), CampPlusOnnx(folder / CAMPPLUS_FILE, threads=threads)


class OfficialFrontEnd:
    """The release's S3 tokenizer + CAMPPlus from a ``cosyvoice2/`` folder (loaded on first use)."""

    id = "cosyvoice2"

    def __init__(self, folder: str | os.PathLike, config: ReferenceConfig | None = None) -> None:
        self.folder, self.config = Path(folder), config or ReferenceConfig()
        self._models: tuple[S3Tokenizer, CampPlusOnnx] | None = None

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig | None = None) -> Voice:
        if self._models is None:
            self._models = load_reference_frontends(self.folder)
        return build_reference_prompt(wave, sr, *self._models, config=config or self.config)
