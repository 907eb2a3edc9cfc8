"""The reference front-end a mouth declares (``MouthSpec.speech_tokenizer`` + ``speaker_encoder``).

    frontend = voice_frontend(spec, model_dir)        # OfficialFrontEnd, TinyFallbackFrontEnd or OwnFrontEnd
    voice = Voice.from_audio("ref.wav", "Its transcript.", frontend)
"""

from __future__ import annotations

import os
from pathlib import Path

from mgm_omni.audio import HIFIGAN_22K
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.voice import VoiceError, VoiceFrontEnd
from mgm_omni.generation.wave.reference import OfficialFrontEnd, ReferenceConfig
from mgm_omni.generation.wave.tiny_frontend import TinyFallbackFrontEnd


class FrontEndUnavailable(VoiceError):
    """The mouth declares a reference front-end this installation cannot build."""

    status, code = 503, "frontend_unavailable"


def reference_config(spec: MouthSpec) -> ReferenceConfig:
    """Limits and rates of the mouth's reference clips (its front-end rate, its x-vector width)."""
    if spec.token2wav == "flow-hifigan":
        return ReferenceConfig(sample_rate=spec.reference_rate, xvector_dim=spec.xvector_dim, mel=HIFIGAN_22K)
    if spec.token2wav != "cosyvoice2":
        raise FrontEndUnavailable(f"no prompt-mel recipe for the token2wav stack {spec.token2wav!r} yet")
    return ReferenceConfig(sample_rate=spec.reference_rate, xvector_dim=spec.xvector_dim)


def voice_frontend(spec: MouthSpec, model_dir: str | os.PathLike,
                   token2wav_dir: str | os.PathLike | None = None) -> VoiceFrontEnd:
    """The front-end that makes this mouth's voices (loaded lazily where it reads files; the official one
    reads its ONNX files from the decoder folder, ``token2wav_dir`` or ``<model_dir>/<spec.token2wav_dir>``)."""
    config = reference_config(spec)
    pair = (spec.speech_tokenizer, spec.speaker_encoder)
    if pair == ("s3-v2", "campplus"):
        return OfficialFrontEnd(Path(token2wav_dir) if token2wav_dir else Path(model_dir) / spec.token2wav_dir,
                                config)
    if pair == ("tiny-hash", "tiny-dvector"):
        return TinyFallbackFrontEnd(spec.speech_codes, spec.xvector_dim, config)
    if pair == ("whisper-units", "ge2e"):
        from mgm_omni.generation.wave.own_frontend import OwnFrontEnd

        return OwnFrontEnd(model_dir, spec, config)
    raise FrontEndUnavailable(f"no reference front-end pairs the speech tokenizer {pair[0]!r} with the speaker "
                              f"encoder {pair[1]!r}")
