"""Score one item: load its audio, ask the judge, compare with the references, add similarity and drift.

Every failure of one item (no audio file, unreadable audio, a bad list line, a judge error, a reference that
is empty after normalisation) becomes a record with a ``status`` and a one-line ``error``; nothing here raises
for a single bad item, so one bad file never stops a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mgm_omni.audio import AudioError, load_audio
from mgm_omni.eval.datasets import EvalItem
from mgm_omni.eval.drift import minute_similarity, minute_wer
from mgm_omni.eval.judges import PIECE_SECONDS, SAMPLE_RATE, AsrJudge, Segment, get_judge, transcribe_long
from mgm_omni.eval.metrics import MetricError, score_transcript
from mgm_omni.eval.normalize import ZH_DIGITS_OFFICIAL, ZH_DIGITS_READ

STATUS_OK = "ok"
STATUSES = (STATUS_OK, "bad_input", "missing_audio", "unreadable_audio", "judge_error", "bad_reference")


@dataclass(frozen=True)
class ScoreConfig:
    """What decides a score; a stored item is reused on resume only if its config matches exactly.

    Args:
        judge: judge spec for ``get_judge`` (ignored for items with a given hypothesis).
        speaker_encoder: encoder spec for ``get_similarity_encoder`` (``none``: no similarity).
        ref_audio: one reference voice for every item (Long-TTS-Eval); an item's own ``ref_audio`` wins.
        zh_digits: ``official`` or ``read`` (see ``normalize``).
        drift: compute per-minute WER (and similarity with an encoder).
        piece_seconds: judge piece length (official 28 s).
    """

    judge: str = "whisper-base"
    speaker_encoder: str = "none"
    ref_audio: str | None = None
    zh_digits: str = ZH_DIGITS_OFFICIAL
    drift: bool = True
    piece_seconds: float = PIECE_SECONDS

    def __post_init__(self) -> None:
        if self.zh_digits not in (ZH_DIGITS_OFFICIAL, ZH_DIGITS_READ):
            raise ValueError(f"zh_digits must be 'official' or 'read', got {self.zh_digits!r}")
        if not 1.0 <= self.piece_seconds <= 30.0:
            raise ValueError(
                f"piece_seconds must be in [1, 30] (Whisper's window is 30 s), got {self.piece_seconds}"
            )

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def audio_stamp(path: Path) -> str | None:
    """Size and modification time: a regenerated file is scored again on resume."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


class Scorer:
    """Scores items with one judge and one speaker encoder, both built on first use and kept."""

    def __init__(
        self,
        config: ScoreConfig,
        judge: AsrJudge | None = None,
        encoder=None,
        device: str = "cpu",
        threads: int = 1,
    ) -> None:
        self.config, self.device, self.threads = config, device, threads
        self._judge, self._encoder = judge, encoder
        self._ref_cache: dict[str, object] = {}

    @property
    def judge(self) -> AsrJudge:
        if self._judge is None:
            self._judge = get_judge(self.config.judge, device=self.device, threads=self.threads)
        return self._judge

    @property
    def encoder(self):
        if self._encoder is None and self.config.speaker_encoder != "none":
            from mgm_omni.eval.similarity import get_similarity_encoder

            self._encoder = get_similarity_encoder(self.config.speaker_encoder, device=self.device)
        return self._encoder

    def _reference_embedding(self, path: Path):
        from mgm_omni.eval.similarity import embed_long

        key = str(path)
        if key not in self._ref_cache:
            wave, _ = load_audio(path, sample_rate=SAMPLE_RATE)
            self._ref_cache[key] = embed_long(self.encoder, wave)
        return self._ref_cache[key]

    def score(
        self,
        item: EvalItem,
        split: str,
        audio_path: Path | None,
        hypothesis: str | None = None,
        generation: dict | None = None,
    ) -> dict:
        """The record of one item (see the module docstring); never raises for a bad item."""
        rec: dict = {
            "id": item.id,
            "split": split,
            "status": STATUS_OK,
            "error": None,
            "language": item.language,
            "judge": None,
            "audio_path": None if audio_path is None else str(audio_path),
            "audio_stamp": None,
            "audio_seconds": None,
            "config_key": self.config.key(),
        }
        if generation is not None:
            rec["generation"] = generation
        if item.problem:
            return {**rec, "status": "bad_input", "error": item.problem}
        wave = None
        if hypothesis is None or self.config.speaker_encoder != "none":
            if audio_path is None or not audio_path.exists():
                return {**rec, "status": "missing_audio", "error": f"no audio file {audio_path}"}
            rec["audio_stamp"] = audio_stamp(audio_path)
            try:
                wave_t, _ = load_audio(audio_path, sample_rate=SAMPLE_RATE)
                wave = wave_t.numpy()
            except AudioError as exc:
                return {**rec, "status": "unreadable_audio", "error": _one_line(exc)}
            rec["audio_seconds"] = wave.shape[0] / SAMPLE_RATE
        if hypothesis is None:
            judge = self.judge  # a judge that cannot be loaded stops the run (JudgeError), not just this item
            try:
                transcript = transcribe_long(judge, wave, item.language, self.config.piece_seconds)
            except Exception as exc:  # noqa: BLE001 - any judge failure is this item's failure
                return {**rec, "status": "judge_error", "error": _one_line(exc)}
            rec["judge"] = judge.describe(item.language)
            hypothesis, segments = transcript.text, transcript.segments
        else:
            rec["judge"] = "given-transcript"
            segments = [Segment(0.0, rec["audio_seconds"] or 0.0, hypothesis)]
        try:
            score = score_transcript(
                hypothesis, item.text, item.text_norm, item.language, self.config.zh_digits
            )
        except MetricError as exc:
            return {
                **rec,
                "status": "bad_reference",
                "error": _one_line(exc),
                "raw_transcription": hypothesis,
            }
        rec.update(score.as_dict())
        rec["raw_transcription"] = hypothesis
        rec.update(self._similarity(item, wave))
        if self.config.drift and wave is not None:
            rec["drift"] = self._drift(score, segments, wave, item, rec.get("speaker_similarity_reference"))
        return rec

    def _reference_path(self, item: EvalItem) -> Path | None:
        ref = item.ref_audio or (Path(self.config.ref_audio) if self.config.ref_audio else None)
        return None if ref is None else Path(ref)

    def _similarity(self, item: EvalItem, wave: np.ndarray | None) -> dict:
        if self.config.speaker_encoder == "none" or wave is None:
            return {}
        from mgm_omni.eval.similarity import speaker_similarity

        out = {"speaker_encoder": None, "speaker_similarity": None, "speaker_similarity_error": None}
        ref = self._reference_path(item)
        try:
            out["speaker_encoder"] = self.encoder.name
            if ref is None:
                out["speaker_similarity_error"] = "no reference voice (pass --ref-audio)"
                return out
            out["speaker_similarity_reference"] = str(ref)
            out["speaker_similarity"] = speaker_similarity(
                self.encoder, wave, reference_embedding=self._reference_embedding(ref)
            )
        except (ValueError, RuntimeError, OSError) as exc:  # encoder or reference audio problem: keep the WER
            out["speaker_similarity_error"] = _one_line(exc)
        return out

    def _drift(self, score, segments, wave: np.ndarray, item: EvalItem, ref: str | None) -> dict:
        use_first = score.wer1 is not None and (score.wer2 is None or score.wer1 < score.wer2)
        best_ref = score.ground_truth1 if use_first else score.ground_truth2  # the reference the score used
        out = minute_wer(
            best_ref, segments, wave.shape[0] / SAMPLE_RATE, item.language, self.config.zh_digits
        )
        if self.config.speaker_encoder != "none" and self._encoder is not None:
            try:
                emb = self._reference_embedding(Path(ref)) if ref else None
                out.update(minute_similarity(self._encoder, wave, emb))
            except (ValueError, RuntimeError, OSError) as exc:
                out["sim_error"] = _one_line(exc)
        return out


def is_reusable(record: dict, config: ScoreConfig, audio_path: Path | None, generation: dict | None) -> bool:
    """A stored record counts as finished if it was scored with the same config, audio file and timings."""
    if record.get("config_key") != config.key() or record.get("status") == "bad_input":
        return False
    if audio_path is not None and record.get("status") not in ("bad_input", "missing_audio"):
        if record.get("audio_stamp") != audio_stamp(audio_path):
            return False
    if audio_path is not None and record.get("status") == "missing_audio" and audio_path.exists():
        return False
    return record.get("generation") == generation


def write_record(path: Path, record: dict) -> None:
    """Atomic write, so an interrupted run never leaves a half-written item behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
