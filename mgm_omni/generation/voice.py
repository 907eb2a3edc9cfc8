"""A voice: what a mouth needs to speak like a reference clip, made by that mouth's own front-end.

    voice = Voice.from_audio("ref.wav", "Transcript of ref.wav.", frontend)   # frontend: voice_frontend(spec, dir)
    voice.save(folder); Voice.load(folder)                                   # the registry's storage format

A :class:`Voice` holds the reference transcript (the SpeechLM's speech block reads it), the reference speech
tokens (SpeechLM speech block and flow prompt), the prompt mel and the speaker embedding (flow), and where it
came from. It *is* the flow's prompt (a ``token2wav.ReferencePrompt``), so the renderer takes it as is. The
CLI, the server, the eval harness and the web demo all pass this one type around.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file

from mgm_omni.audio import DEFAULT_MAX_SECONDS, load_audio
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.wave.token2wav import ReferencePrompt

VOICE_FILE = "voice.json"
PROMPT_FILE = "prompt.safetensors"


class VoiceError(ValueError):
    """A voice that cannot be made or used; ``status`` and ``code`` say how an HTTP layer reports it."""

    status, code = 400, "invalid_voice"


class VoiceFrontEnd(Protocol):
    """Turns a reference clip into a voice prompt; ``id`` names the voices it makes (and their storage)."""

    id: str

    def prompt(self, wave: torch.Tensor, sr: int, config=None) -> Voice:
        """(tokens (1, L), mel (1, 2L, n_mels), x-vector (1, D)) of a mono clip ``wave`` (S,) at ``sr``."""


@dataclass
class Voice(ReferencePrompt):
    """A reference voice.

    Attributes:
        tokens: (1, L) int64 speech codes of the clip; mel: (1, 2L, n_mels) float32 prompt log-mel;
            xvector: (1, D) float32 raw speaker embedding.
        text: the reference transcript.
        name: registry name ("" when unnamed); frontend: id of the front-end that made it (its tokens mean
            nothing to another front-end's model); seconds: clip length; audio: the clip's path, if any.
        preset, created, description: registry metadata.
        frames_per_token: prompt-mel frames per token (2 for CosyVoice2; 441/128 for the HiFi-GAN mel at 25 Hz);
            the mel holds ``round_half_up(L * frames_per_token)`` frames.
    """

    text: str = ""
    name: str = ""
    frontend: str = ""
    seconds: float | None = None
    audio: str | None = None
    preset: bool = False
    created: int = 0
    description: str = ""
    frames_per_token: float = 2.0  # prompt-mel frames per speech token (the mouth's vocoder grid)

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.shape[0] != 1 or self.tokens.dtype != torch.int64:
            raise VoiceError(f"tokens must be (1, L) int64, got {self.tokens.dtype} {tuple(self.tokens.shape)}")
        n = self.tokens.shape[1]
        if n == 0:
            raise VoiceError("a voice needs at least one speech token")
        frames = int(n * self.frames_per_token + 0.5)  # round half up, as the frame grid counts
        if self.mel.dim() != 3 or self.mel.shape[:2] != (1, frames):
            raise VoiceError(f"mel must be (1, {self.frames_per_token:g}L={frames}, n_mels), got {tuple(self.mel.shape)}")
        if self.xvector.dim() != 2 or self.xvector.shape[0] != 1:
            raise VoiceError(f"xvector must be (1, D), got {tuple(self.xvector.shape)}")
        if not isinstance(self.text, str):
            raise VoiceError(f"the transcript must be a str, got {type(self.text).__name__}")
        super().__post_init__()

    # ---------------------------------------------------------------------------------------- making

    @classmethod
    def from_audio(cls, audio: str | os.PathLike | bytes, text: str, frontend: VoiceFrontEnd, config=None,
                   name: str = "", max_seconds: float = DEFAULT_MAX_SECONDS) -> Voice:
        """The voice of a reference clip (a path or the file's bytes) and its transcript.

        The clip is read first, so a missing file is reported as such before any front-end loads. An empty
        transcript is kept as such (a registry may store a voice whose transcript comes later).
        ``config``: the front-end's limits (``reference.ReferenceConfig``); ``max_seconds`` bounds decoding.
        Raises ``AudioError`` (unreadable clip), ``VoiceError`` (a clip the front-end refuses) or the
        front-end's asset error.
        """
        if not isinstance(text, str):
            raise VoiceError(f"the transcript must be a str, got {type(text).__name__}")
        wave, sr = load_audio(audio, max_seconds=max_seconds)
        prompt = frontend.prompt(wave, sr, config)
        where = str(audio) if isinstance(audio, (str, os.PathLike)) else None
        return cls(prompt.tokens, prompt.mel, prompt.xvector, text=text.strip(), name=name, frontend=frontend.id,
                   seconds=round(wave.shape[0] / sr, 3), audio=where, created=int(time.time()),
                   frames_per_token=getattr(prompt, "frames_per_token", 2.0))

    def renamed(self, name: str, **changes) -> Voice:
        """The same voice under another name (and other metadata)."""
        return dataclasses.replace(self, name=name, **changes)

    # ---------------------------------------------------------------------------------------- using

    @property
    def reference_tokens(self) -> list[int]:
        """The speech tokens as a list (what the SpeechLM's speech block reads)."""
        return self.tokens[0].tolist()

    def info(self) -> dict:
        """The public description (``GET /v1/audio/voices``, ``mgm-omni voices list``)."""
        return {"object": "voice", "name": self.name, "preset": self.preset, "created_at": self.created,
                "transcript": self.text, "seconds": self.seconds, "prompt_tokens": self.n_tokens,
                "description": self.description}

    # ---------------------------------------------------------------------------------------- storage

    def save(self, folder: str | os.PathLike) -> None:
        """``prompt.safetensors`` (tokens, mel, xvector) and ``voice.json`` (the rest) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"tokens": self.tokens.contiguous(), "mel": self.mel.contiguous(),
                   "xvector": self.xvector.contiguous()}, str(folder / PROMPT_FILE))
        meta = {"name": self.name, "text": self.text, "frontend": self.frontend, "seconds": self.seconds,
                "audio": self.audio, "created": self.created, "description": self.description,
                "frames_per_token": self.frames_per_token}
        (folder / VOICE_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | os.PathLike, **changes) -> Voice:
        """A voice written by :meth:`save` (``changes`` override stored metadata, e.g. ``preset=True``)."""
        folder = Path(folder)
        if not (folder / VOICE_FILE).is_file() or not (folder / PROMPT_FILE).is_file():
            raise VoiceError(f"{folder}: not a stored voice (needs {VOICE_FILE} and {PROMPT_FILE})")
        meta = json.loads((folder / VOICE_FILE).read_text(encoding="utf-8"))
        t = load_file(str(folder / PROMPT_FILE))
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in meta.items() if k in fields and k not in ("tokens", "mel", "xvector")}
        return cls(t["tokens"].long(), t["mel"].float(), t["xvector"].float(), **{**kept, **changes})


def shipped_voice(model_dir: str | os.PathLike, spec: MouthSpec | None = None) -> Voice | None:
    """The voice a mouth directory ships (``MouthSpec.default_voice``), or None."""
    spec = spec or MouthSpec.from_dir(model_dir)
    if spec.default_voice is None:
        return None
    return Voice.load(Path(model_dir) / spec.default_voice, name="default", preset=True)
