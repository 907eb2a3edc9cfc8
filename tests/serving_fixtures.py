"""Shared helpers of the serving tests: a tiny-model server on 127.0.0.1 and a scripted MLLM test double."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from mgm_omni.engine.understanding import ChatDelta
from mgm_omni.engine.voices import PRESET_DIR

TEXT = "Hello there. This is a short test."


class ScriptedBackend:
    """A TEST DOUBLE of the MLLM (never shipped): it reports what it was given, so the HTTP layer's parsing
    can be checked; it understands nothing."""

    name = "scripted-test-double"

    def __init__(self, reply: str = "Sure. Here is a reply.") -> None:
        self.reply, self.seen = reply, []

    def transcribe(self, wave16k, language=None, prompt=None) -> str:
        self.seen.append(("transcribe", tuple(wave16k.shape), language, prompt))
        return f"{wave16k.shape[0]} samples at 16 kHz"

    def chat(self, messages, want_audio, max_tokens=None, temperature=None):
        """One word per token; ``max_tokens`` cuts the reply ("length"); the prompt counts one token per part."""
        kinds = [p.kind for m in messages for p in m.parts]
        self.seen.append(("chat", kinds, want_audio, [m.role for m in messages]))
        self.limits = (max_tokens, temperature)
        words = self.reply.split(" ")
        kept = words[:max_tokens] if max_tokens else words
        for i, w in enumerate(kept):
            yield ChatDelta(w if i == 0 else " " + w)
        yield ChatDelta("", "length" if len(kept) < len(words) else "stop", len(kinds), len(kept))


def wav_bytes(wave: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def preset_clip() -> bytes:
    return (PRESET_DIR / "rms.flac").read_bytes()


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")
