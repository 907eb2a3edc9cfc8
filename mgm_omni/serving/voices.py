"""The voice registry: named reference voices, computed once from a clip and stored on disk.

A voice is what the models need to speak in it: the reference transcript (SpeechLM prompt) and the flow
prompt (tokens (1, L), mel (1, 2L, 80), x-vector (1, 192)). Uploads are stored under
``<root>/<frontend id>/<name>/`` as ``prompt.safetensors`` + ``voice.json`` (written to a temporary
folder, then renamed, so a crash never leaves half a voice), so they survive restarts. Voices made by
one front-end are invisible to another (the tiny stand-in's tokens mean nothing to a real model).

Presets are read-only voices bundled with the package (``presets/``, computed on first use, kept in
memory); ``default`` always exists: the tiny model's built-in reference, else the ``slt`` preset.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from mgm_omni.audio import AudioError, load_audio
from mgm_omni.generation.wave.reference import ReferenceConfig, ReferencePromptError
from mgm_omni.generation.wave.token2wav import ReferencePrompt
from mgm_omni.models.onnx_session import OnnxAssetError
from mgm_omni.models.speaker import SpeakerEncoderError
from mgm_omni.serving.voice_frontends import VoiceFrontend

PRESET_DIR = Path(__file__).parent / "presets"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_TRANSCRIPT_CHARS = 1000


class VoiceError(ValueError):
    """Base of registry errors; ``status`` and ``code`` say how the HTTP layer reports it."""

    status, code = 400, "invalid_voice"


class VoiceNameError(VoiceError):
    code = "invalid_voice_name"


class VoiceNotFound(VoiceError):
    status, code = 404, "voice_not_found"


class VoiceExists(VoiceError):
    status, code = 409, "voice_exists"


class VoiceReadOnly(VoiceError):
    status, code = 403, "voice_is_preset"


class VoiceAudioError(VoiceError):
    code = "invalid_audio"


class FrontendUnavailable(VoiceError):
    status, code = 503, "frontend_unavailable"


@dataclass
class Voice:
    """A named voice: transcript, flow prompt, and where it came from."""

    name: str
    text: str
    prompt: ReferencePrompt
    preset: bool = False
    created: int = 0
    seconds: float | None = None
    description: str = ""

    def info(self) -> dict:
        """The public description returned by ``GET /v1/audio/voices``."""
        return {"object": "voice", "name": self.name, "preset": self.preset, "created_at": self.created,
                "transcript": self.text, "seconds": self.seconds, "prompt_tokens": self.prompt.n_tokens,
                "description": self.description}


def check_name(name: str) -> str:
    """A voice name: 1-64 of ``A-Z a-z 0-9 _ -``, starting with a letter or digit (never a path)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = name if isinstance(name, str) and len(name) <= 80 else f"{str(name)[:80]}..."
        raise VoiceNameError(f"invalid voice name {shown!r}: use 1-64 letters, digits, '_' or '-', "
                             "starting with a letter or digit")
    return name


class VoiceRegistry:
    """Presets plus uploaded voices on disk, for one front-end.

    Args:
        root: the registry folder (voices go in ``root / frontend.id``).
        frontend: computes prompts from clips; ``None`` = uploads are refused (503) with ``why``.
        presets: name -> a function making the preset :class:`Voice` (called once, on first use).
        config: limits of reference clips (duration, silence).
    """

    def __init__(self, root: str | Path, frontend: VoiceFrontend | None,
                 presets: dict[str, Callable[[], Voice]], config: ReferenceConfig | None = None,
                 why: str = "no voice front-end is loaded") -> None:
        self.frontend, self.presets, self.why = frontend, dict(presets), why
        self.config = config or ReferenceConfig()
        self.dir = Path(root).expanduser() / (frontend.id if frontend else "no-frontend")
        self._lock = threading.Lock()
        self._cache: dict[str, Voice] = {}

    def names(self) -> list[str]:
        stored = sorted(p.name for p in self.dir.glob("*") if p.is_dir() and NAME_RE.fullmatch(p.name)) \
            if self.dir.is_dir() else []
        return list(self.presets) + [n for n in stored if n not in self.presets]

    def list(self) -> list[Voice]:
        return [self.get(name) for name in self.names()]

    def get(self, name: str) -> Voice:
        check_name(name)
        with self._lock:
            if name in self._cache:
                return self._cache[name]
            if name in self.presets:
                voice = self.presets[name]()
            else:
                voice = self._load(name)
            self._cache[name] = voice
            return voice

    def add(self, name: str, audio: bytes, text: str | None, max_seconds: float | None = None) -> Voice:
        """Compute and store a voice from an uploaded clip; raises a :class:`VoiceError`."""
        check_name(name)
        if name in self.presets:
            raise VoiceReadOnly(f"{name!r} is a preset voice; choose another name")
        text = (text or "").strip()
        if len(text) > MAX_TRANSCRIPT_CHARS:
            raise VoiceError(f"the transcript has {len(text)} characters; the limit is {MAX_TRANSCRIPT_CHARS}")
        if self.frontend is None:
            raise FrontendUnavailable(self.why)
        limit = min(max_seconds or self.config.max_seconds, self.config.max_seconds)
        try:
            wave, sr = load_audio(audio, max_seconds=limit)  # bounded decode: refuses longer clips early
            prompt = self.frontend.prompt(wave, sr, self.config)
        except (AudioError, ReferencePromptError, SpeakerEncoderError) as exc:
            raise VoiceAudioError(str(exc)) from None
        except OnnxAssetError as exc:
            raise FrontendUnavailable(str(exc)) from None
        voice = Voice(name, text, prompt, created=int(time.time()), seconds=round(wave.shape[0] / sr, 3))
        with self._lock:
            if (self.dir / name).exists():
                raise VoiceExists(f"a voice named {name!r} exists; delete it first")
            self._store(voice)
            self._cache[name] = voice
        return voice

    def remove(self, name: str) -> None:
        check_name(name)
        if name in self.presets:
            raise VoiceReadOnly(f"{name!r} is a preset voice and cannot be deleted")
        with self._lock:
            folder = self.dir / name
            if not folder.is_dir():
                raise VoiceNotFound(f"no voice named {name!r}")
            trash = self.dir / f".trash-{uuid.uuid4().hex}"
            folder.rename(trash)  # atomic: the name is gone at once
            self._cache.pop(name, None)
        shutil.rmtree(trash, ignore_errors=True)

    def _store(self, voice: Voice) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        p = voice.prompt
        save_file({"tokens": p.tokens.contiguous(), "mel": p.mel.contiguous(), "xvector": p.xvector.contiguous()},
                  str(tmp / "prompt.safetensors"))
        meta = {"name": voice.name, "text": voice.text, "created": voice.created, "seconds": voice.seconds,
                "frontend": self.frontend.id if self.frontend else None}
        (tmp / "voice.json").write_text(json.dumps(meta, ensure_ascii=False))
        tmp.rename(self.dir / voice.name)

    def _load(self, name: str) -> Voice:
        folder = self.dir / name
        if not (folder / "voice.json").is_file():
            raise VoiceNotFound(f"no voice named {name!r}; GET /v1/audio/voices lists them")
        meta = json.loads((folder / "voice.json").read_text())
        t = load_file(str(folder / "prompt.safetensors"))
        prompt = ReferencePrompt(t["tokens"].long(), t["mel"].float(), t["xvector"].float())
        return Voice(name, meta.get("text", ""), prompt, created=int(meta.get("created", 0)),
                     seconds=meta.get("seconds"))


def bundled_presets(frontend: VoiceFrontend | None, config: ReferenceConfig | None = None,
                    default: Callable[[], Voice] | None = None) -> dict[str, Callable[[], Voice]]:
    """Presets from ``presets/presets.json`` through ``frontend``; ``default`` = ``default`` or the first one."""
    specs = json.loads((PRESET_DIR / "presets.json").read_text())
    cfg = config or ReferenceConfig()

    def make(name: str, spec: dict) -> Callable[[], Voice]:
        def build() -> Voice:
            if frontend is None:
                raise FrontendUnavailable(f"preset {name!r} needs a voice front-end, and none is loaded")
            wave, sr = load_audio(PRESET_DIR / spec["file"])
            prompt = frontend.prompt(wave, sr, cfg)
            return Voice(name, spec["text"], prompt, preset=True, seconds=round(wave.shape[0] / sr, 3),
                         description=spec.get("description", ""))
        return build

    presets = {name: make(name, spec) for name, spec in specs.items()}
    if default is None:
        first = next(iter(specs))

        def default() -> Voice:
            voice = presets[first]()
            return Voice("default", voice.text, voice.prompt, True, 0, voice.seconds, f"alias of {first!r}")
    return {"default": default, **presets}

