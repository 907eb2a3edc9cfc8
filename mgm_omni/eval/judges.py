"""ASR judges: the models that transcribe generated speech so it can be scored.

Official Long-TTS-Eval / seed-tts-eval judges: Whisper-large-v3 (English, transformers) and Paraformer-zh
(Chinese, FunASR). They are used when their weights are on this machine. The offline judge is Whisper base
through faster-whisper (shared ``ASSETS.md`` §1): beam 5, temperature 0, no conditioning on earlier text, and
for Chinese the prompt "以下是普通话的句子。" (without it Whisper writes traditional characters). Numbers from
different judges are not comparable; the judge's name is recorded with every score.

Long files are cut into 28 s pieces (the official piece length, under Whisper's 30 s window); pieces are
joined with spaces in English and with nothing in Chinese, as the official scorer does.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIECE_SECONDS = 28.0
SAMPLE_RATE = 16000
ZH_PROMPT = "以下是普通话的句子。"
JUDGE_NAMES = ("auto", "official", "whisper-base", "whisper-large-v3", "paraformer-zh")


class JudgeError(RuntimeError):
    """A judge that cannot be loaded (missing package or weights) or that failed on one input."""


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript with its time span (seconds from the start of the file)."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    segments: list[Segment]


class AsrJudge(ABC):
    """Transcribes one piece of at most 30 s of 16 kHz mono float audio."""

    name: str = ""
    long_form: bool = False  # True: takes a whole file of any length as one piece

    @abstractmethod
    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        """Segments of one piece, times relative to the piece start."""

    def describe(self, language: str) -> str:
        """The judge that scores ``language`` (a router answers with its member's name)."""
        return self.name


def transcribe_long(
    judge: AsrJudge, wave16k: np.ndarray, language: str, piece_seconds: float = PIECE_SECONDS
) -> Transcript:
    """Transcribe a file of any length in consecutive ``piece_seconds`` pieces (the last one shorter).

    A judge with ``long_form = True`` (the MGM-Omni brain reads an hour in one pass) gets the whole file.
    """
    wave = np.asarray(wave16k, dtype=np.float32).reshape(-1)
    size = max(1, wave.shape[0]) if judge.long_form else int(round(piece_seconds * SAMPLE_RATE))
    segments: list[Segment] = []
    texts: list[str] = []
    for start in range(0, wave.shape[0], size):
        offset = start / SAMPLE_RATE
        piece = judge.transcribe_piece(wave[start : start + size], language)
        segments += [
            Segment(offset + s.start, offset + s.end, s.text.strip()) for s in piece if s.text.strip()
        ]
        text = ("" if language == "zh" else " ").join(s.text.strip() for s in piece if s.text.strip()).strip()
        if text:
            texts.append(text)
    return Transcript(("" if language == "zh" else " ").join(texts), segments)


def strip_prompt_echo(text: str, prompt: str | None) -> str:
    """Whisper sometimes writes its own prompt on unintelligible audio: that counts as saying nothing."""
    if not prompt:
        return text
    core = re.sub(r"[。.！!？?\s]+$", "", prompt)
    stripped = text.strip()
    while core and stripped.startswith(core):
        stripped = stripped[len(core) :].lstrip("。.，, ")
    return stripped


class FasterWhisperJudge(AsrJudge):
    """Any CTranslate2 Whisper model directory (default: the offline Whisper base) through faster-whisper."""

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        name: str = "whisper-base",
        beam_size: int = 5,
        compute_type: str = "int8",
        threads: int = 1,
        device: str = "cpu",
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise JudgeError(
                f"the {name} judge needs faster-whisper: pip install faster-whisper==1.2.1"
            ) from exc
        if model_dir is None:
            from mgm_omni.checkpoint.whisper_ct2 import whisper_base_ct2_dir

            try:
                model_dir = whisper_base_ct2_dir()
            except Exception as exc:  # noqa: BLE001 - missing wheels, bad join: one line
                raise JudgeError(f"the {name} judge cannot be prepared: {exc}") from exc
        self.name, self.beam_size = name, beam_size
        self.model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads
        )

    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        prompt = ZH_PROMPT if language == "zh" else None
        segs, _ = self.model.transcribe(
            np.asarray(wave16k, dtype=np.float32),
            language=language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            initial_prompt=prompt,
            vad_filter=False,
        )
        out = []
        for s in segs:
            text = strip_prompt_echo(s.text, prompt)
            if text:
                out.append(Segment(float(s.start), float(s.end), text))
        return out


class HfWhisperJudge(AsrJudge):
    """openai/whisper-large-v3 (or any HF Whisper) through transformers, forced transcription in the language.

    Weights are taken from a local directory or the local hub cache only, unless ``allow_download``.
    """

    def __init__(
        self, model: str = "openai/whisper-large-v3", device: str = "cpu", allow_download: bool = False
    ):
        try:
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            kw = {} if allow_download else {"local_files_only": True}
            self.processor = WhisperProcessor.from_pretrained(model, **kw)
            self.model = WhisperForConditionalGeneration.from_pretrained(model, **kw).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - not downloaded / no transformers
            raise JudgeError(
                f"the {Path(model).name} judge is unavailable here ({' '.join(str(exc).split())[:160]})"
            ) from None
        self.name, self.device = Path(model).name, device

    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        import torch

        feats = self.processor(
            np.asarray(wave16k, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self.device, self.model.dtype)
        with torch.inference_mode():
            ids = self.model.generate(feats, language=language, task="transcribe")
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        return [Segment(0.0, len(wave16k) / SAMPLE_RATE, text)] if text else []


class ParaformerJudge(AsrJudge):
    """FunASR ``paraformer-zh`` (the official Chinese judge); needs ``funasr`` and its weights."""

    name = "paraformer-zh"

    def __init__(self, device: str = "cpu"):
        try:
            from funasr import AutoModel

            self.model = AutoModel(model="paraformer-zh", device=device, disable_update=True)
        except Exception as exc:  # noqa: BLE001
            raise JudgeError(
                f"the paraformer-zh judge is unavailable here ({' '.join(str(exc).split())[:160]})"
            ) from None

    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        res = self.model.generate(input=np.asarray(wave16k, dtype=np.float32), batch_size_s=300)
        text = res[0]["text"].strip() if res else ""
        return [Segment(0.0, len(wave16k) / SAMPLE_RATE, text)] if text else []


class BrainJudge(AsrJudge):
    """The MGM-Omni MLLM as the system under test in ASR evaluation, through the transcriber that the CLI and
    the server use too (:class:`mgm_omni.generation.mllm.transcriber.Transcriber`; any object with a
    ``transcribe(wave16k, language)`` method works)."""

    long_form = True

    def __init__(self, model: str | None = None, device: str = "cpu", backend=None):
        if backend is None:
            if not model:
                raise JudgeError("mgm-omni:MODEL needs a model directory or hub id")
            try:
                import torch

                from mgm_omni.generation.mllm.transcriber import Transcriber
                from mgm_omni.hub.tiny_brain import TINY_NAME, mllm_location

                dtype = torch.float32 if model == TINY_NAME else torch.bfloat16
                backend = Transcriber.from_pretrained(mllm_location(model), device=device, dtype=dtype)
            except Exception as exc:  # noqa: BLE001 - no weights, no tower: one line
                raise JudgeError(
                    f"the mgm-omni brain cannot transcribe here: {' '.join(str(exc).split())[:200]}"
                ) from None
        self.backend = backend
        self.name = (
            f"mgm-omni:{Path(str(model)).name}" if model else f"mgm-omni:{getattr(backend, 'name', 'brain')}"
        )

    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        import torch

        text = self.backend.transcribe(
            torch.from_numpy(np.ascontiguousarray(wave16k, dtype=np.float32)), language
        )
        text = (text or "").strip()
        return [Segment(0.0, len(wave16k) / SAMPLE_RATE, text)] if text else []


class LanguageRouter(AsrJudge):
    """One judge per language (the official pairing: Whisper-large-v3 for en, Paraformer-zh for zh)."""

    def __init__(self, judges: dict[str, AsrJudge]):
        self.judges = judges
        self.name = "+".join(f"{lang}:{j.name}" for lang, j in sorted(judges.items()))

    def transcribe_piece(self, wave16k: np.ndarray, language: str) -> list[Segment]:
        if language not in self.judges:
            raise JudgeError(f"judge {self.name} has no model for language {language!r}")
        return self.judges[language].transcribe_piece(wave16k, language)

    def describe(self, language: str) -> str:
        return self.judges[language].name if language in self.judges else self.name


def get_judge(spec: str = "auto", device: str = "cpu", threads: int = 1) -> AsrJudge:
    """Build a judge from its name.

    ``whisper-base`` (offline), ``whisper-large-v3``, ``paraformer-zh``, ``official`` (large-v3 for en,
    Paraformer for zh; fails if either is missing), ``auto`` (each language's official judge where available,
    else Whisper base), ``ct2:DIR`` (a CTranslate2 Whisper directory), ``hf:DIR_OR_ID`` (a transformers
    Whisper) or ``mgm-omni:MODEL`` (the MGM-Omni brain, for ASR evaluation).
    """
    if spec == "whisper-base":
        return FasterWhisperJudge(threads=threads, device=device)
    if spec == "whisper-large-v3":
        return HfWhisperJudge(device=device)
    if spec == "paraformer-zh":
        return ParaformerJudge(device=device)
    if spec.startswith("ct2:"):
        return FasterWhisperJudge(spec[4:], name=Path(spec[4:]).name, threads=threads, device=device)
    if spec.startswith("hf:"):
        return HfWhisperJudge(spec[3:], device=device)
    if spec.startswith("mgm-omni:"):
        return BrainJudge(spec.partition(":")[2], device=device)
    if spec == "official":
        return LanguageRouter({"en": HfWhisperJudge(device=device), "zh": ParaformerJudge(device=device)})
    if spec == "auto":
        judges: dict[str, AsrJudge] = {}
        fallback = None
        for lang, build in (
            ("en", lambda: HfWhisperJudge(device=device)),
            ("zh", lambda: ParaformerJudge(device)),
        ):
            try:
                judges[lang] = build()
            except JudgeError:
                fallback = fallback or FasterWhisperJudge(threads=threads, device=device)
                judges[lang] = fallback
        return LanguageRouter(judges)
    raise JudgeError(
        f"unknown judge {spec!r}; choose one of {', '.join(JUDGE_NAMES)}, "
        "ct2:DIR, hf:DIR_OR_ID or mgm-omni:MODEL"
    )
