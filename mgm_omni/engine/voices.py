"""The voice registry: named :class:`~mgm_omni.generation.voice.Voice` s, computed once from a clip and stored.

One registry serves the CLI (``mgm-omni voices``, ``tts --voice``), the server, the web demo and the eval
harness. Uploads are stored under ``<root>/<frontend id>/<name>/`` (``Voice.save``: ``prompt.safetensors`` +
``voice.json``, written to a temporary folder, then renamed, so a crash never leaves half a voice), so they
survive restarts. Voices made by one front-end are invisible to another (the tiny stand-in's tokens mean
nothing to a real model).

Presets are read-only voices bundled with the package (``presets/``, computed on first use, kept in
memory); ``default`` always exists: the voice a mouth ships (``MouthSpec.default_voice``), else ``alpha``.

    registry = registry_for(model_dir, cache_root() / "voices")
    voice = registry.get("default")
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from mgm_omni.audio import AudioError
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.voice import Voice, VoiceError, VoiceFrontEnd, shipped_voice
from mgm_omni.generation.wave.frontends import FrontEndUnavailable, reference_config, voice_frontend
from mgm_omni.generation.wave.reference import ReferenceConfig
from mgm_omni.models.onnx_session import OnnxAssetError
from mgm_omni.models.speaker import SpeakerEncoderError

PRESET_DIR = Path(__file__).parent / "presets"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_TRANSCRIPT_CHARS = 1000
FrontendUnavailable = FrontEndUnavailable  # 503: the mouth's front-end cannot run here


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
        frontend: computes voices from clips; ``None`` = uploads are refused (503) with ``why``.
        presets: name -> a function making the preset :class:`Voice` (called once, on first use).
        config: limits of reference clips (duration, silence).
    """

    def __init__(self, root: str | Path, frontend: VoiceFrontEnd | None,
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
            try:
                voice = self.presets[name]() if name in self.presets else self._load(name)
            except OnnxAssetError as exc:  # a preset needs the front-end's files, which are missing here
                raise FrontendUnavailable(str(exc)) from None
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
        try:  # bounded decode: refuses longer clips early
            voice = Voice.from_audio(audio, text, self.frontend, self.config, name=name, max_seconds=limit)
        except OnnxAssetError as exc:
            raise FrontendUnavailable(str(exc)) from None
        except FrontEndUnavailable:
            raise
        except (AudioError, VoiceError, SpeakerEncoderError) as exc:
            raise VoiceAudioError(str(exc)) from None
        with self._lock:
            if (self.dir / name).exists():
                raise VoiceExists(f"a voice named {name!r} exists; delete it first")
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
            voice.save(tmp)
            tmp.rename(self.dir / name)
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

    def _load(self, name: str) -> Voice:
        folder = self.dir / name
        if not (folder / "voice.json").is_file():
            raise VoiceNotFound(f"no voice named {name!r}; GET /v1/audio/voices lists them")
        return Voice.load(folder, name=name)


def bundled_presets(frontend: VoiceFrontEnd | None, config: ReferenceConfig | None = None,
                    default: Callable[[], Voice] | None = None) -> dict[str, Callable[[], Voice]]:
    """Presets from ``presets/presets.json`` through ``frontend``; ``default`` = ``default`` or the first one."""
    specs = json.loads((PRESET_DIR / "presets.json").read_text())
    cfg = config or ReferenceConfig()

    def make(name: str, spec: dict) -> Callable[[], Voice]:
        def build() -> Voice:
            if frontend is None:
                raise FrontendUnavailable(f"preset {name!r} needs a voice front-end, and none is loaded")
            voice = Voice.from_audio(PRESET_DIR / spec["file"], spec["text"], frontend, cfg, name=name)
            return voice.renamed(name, preset=True, created=0, description=spec.get("description", ""))
        return build

    presets = {name: make(name, spec) for name, spec in specs.items()}
    if default is None:
        first = next(iter(specs))

        def default() -> Voice:
            return presets[first]().renamed("default", description=f"alias of {first!r}")
    return {"default": default, **presets}


def registry_for(model_dir: str | Path, root: str | Path, spec: MouthSpec | None = None) -> VoiceRegistry:
    """The registry of a mouth directory: its front-end, the presets through it, and as ``default`` the voice
    the mouth ships (``MouthSpec.default_voice``) or the first preset. ``root``: the registry folder."""
    spec = spec or MouthSpec.from_dir(model_dir)
    frontend, why = None, ""
    config = ReferenceConfig()
    try:
        config = reference_config(spec)
        frontend = voice_frontend(spec, model_dir)
    except FrontEndUnavailable as exc:
        why = str(exc)
    default = None
    if spec.default_voice is not None:
        def default() -> Voice:
            return shipped_voice(model_dir, spec)
    return VoiceRegistry(root, frontend, bundled_presets(frontend, config, default), config,
                         why=why or "no voice front-end is loaded")


__all__ = ["MAX_TRANSCRIPT_CHARS", "NAME_RE", "PRESET_DIR", "FrontendUnavailable", "Voice", "VoiceAudioError",
           "VoiceError", "VoiceExists", "VoiceNameError", "VoiceNotFound", "VoiceReadOnly", "VoiceRegistry",
           "bundled_presets", "check_name", "registry_for", "shipped_voice"]
