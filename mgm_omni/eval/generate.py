"""Generation mode: speak every item of a split with our TTS pipeline into the official output layout.

Writes ``<output-dir>/samples/<split>/<id>.wav`` (24 kHz, 16-bit, exactly where the official scorer looks) and
``<output-dir>/timings/<split>/<id>.json`` with the seed, attempts, first-packet latency, compute and audio
seconds. Another system can supply the same timing files to be compared on RTF and latency. Items whose WAV
already exists are skipped (resume). Each item's seed is derived from the base seed and its id, not from its
position, so a resumed or reordered run speaks every item with the same seed.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mgm_omni.hub.tiny_mouth import TINY_NAME
from mgm_omni.eval.datasets import EvalItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateConfig:
    """Settings of the generation mode (official eval driver: temperature 0.2, 8192 rows, 5 attempts)."""

    model: str = TINY_NAME
    ref_audio: str | None = None
    ref_text: str | None = None
    temperature: float = 0.2
    max_rows: int = 8192
    seed: int = 0
    attempts: int = 5
    device: str = "cpu"
    dtype: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.max_rows < 1 or self.attempts < 1:
            raise ValueError("max_rows and attempts must be >= 1")


def item_seed(base: int, item_id: str) -> int:
    return (base * 1_000_003 + zlib.crc32(item_id.encode("utf-8"))) % (2**31)


def wav_path(output_dir: Path, split: str, item_id: str) -> Path:
    return output_dir / "samples" / split / f"{item_id}.wav"


def timing_path(output_dir: Path, split: str, item_id: str) -> Path:
    return output_dir / "timings" / split / f"{item_id}.json"


def read_timing(output_dir: Path, split: str, item_id: str) -> dict | None:
    """The timing record of one generated file, or None if there is none (or it is unreadable)."""
    path = timing_path(output_dir, split, item_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Generator:
    """Loads the pipeline once and speaks items, retrying with a rising temperature while a chunk aborts."""

    def __init__(self, config: GenerateConfig) -> None:
        from mgm_omni.generation.pipeline import TTSPipeline
        from mgm_omni.hub import resolve_mouth

        self.config = config
        self.root = resolve_mouth(config.model).path
        if config.model == TINY_NAME:
            log.warning(
                "generating with the built-in tiny RANDOM model: noise-like audio, not speech (see --model)"
            )
        self.pipe = TTSPipeline.load(
            self.root,
            ref_audio=config.ref_audio,
            ref_text=config.ref_text,
            dtype=config.dtype,
            device=config.device,
            temperature=config.temperature,
            max_rows=config.max_rows,
            seed=config.seed,
        )
        self._base = self.pipe.generator
        self._default_voice = self.pipe.voice
        self._voices: dict[tuple[str, str], object] = {}
        self._frontend = None

    def _use_voice(self, item: EvalItem) -> None:
        """Clone the item's own reference voice (seed-tts lists), else the run's ``--ref-audio``."""
        if item.ref_audio is None:
            self.pipe.voice = self._default_voice
            return
        key = (str(item.ref_audio), item.ref_text or "")
        if key not in self._voices:
            from mgm_omni.generation.voice import Voice
            from mgm_omni.generation.wave.frontends import voice_frontend

            if not item.ref_text:
                raise ValueError(f"item {item.id!r} has a reference clip but no reference transcript")
            if self._frontend is None:  # the model's own reference front-end
                self._frontend = voice_frontend(self.pipe.mouth, self.root)
            self._voices[key] = Voice.from_audio(item.ref_audio, item.ref_text, self._frontend)
        self.pipe.voice = self._voices[key]

    def speak(self, item: EvalItem, output_dir: Path, split: str) -> dict:
        """Generate one item (if its WAV is missing) and return its timing record."""
        out = wav_path(output_dir, split, item.id)
        seed = item_seed(self.config.seed, item.id)
        attempts = []
        result = None
        self._use_voice(item)
        for attempt in range(self.config.attempts):
            # fixed schedule T, T+0.1, ... capped at 1.0 (the official max(1.0, ...) jumps straight to 1.0)
            temp = min(1.0, self.config.temperature + 0.1 * attempt) if attempt else self.config.temperature
            sampling = replace(self._base.config.sampling, temperature=temp)
            self.pipe.generator = self._base.with_config(seed=seed + attempt, sampling=sampling)
            torch.manual_seed(seed + attempt)  # the vocoder's noise
            start = time.perf_counter()
            result = self.pipe.synthesize(item.text)
            attempts.append(
                {
                    "attempt": attempt,
                    "temperature": temp,
                    "tts_error": result.tts_error,
                    "cause": result.cause,
                    "seconds": time.perf_counter() - start,
                }
            )
            if not result.tts_error:
                break
        audio = np.asarray(result.audio, dtype=np.float32)
        timing = {
            "model": self.config.model,
            "seed": seed,
            "attempts": attempts,
            "tts_error": result.tts_error,
            "finish_reason": result.finish_reason,
            "first_packet_seconds": result.first_packet_seconds,
            "lm_seconds": result.lm_seconds,
            "vocoder_seconds": result.vocoder_seconds,
            "compute_seconds": result.lm_seconds + result.vocoder_seconds,  # the kept attempt
            "all_attempts_seconds": sum(a["seconds"] for a in attempts),
            "reference": str(item.ref_audio or self.config.ref_audio or "built-in"),
            "audio_seconds": audio.shape[0] / result.sample_rate,
            "rows": result.rows,
            "tokens": result.tokens,
        }
        tpath = timing_path(output_dir, split, item.id)
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_text(json.dumps(timing, indent=1), encoding="utf-8")
        # the WAV last and atomically: its presence is what marks the item as generated on resume
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")  # not *.wav: never taken for an output
        sf.write(str(tmp), audio, result.sample_rate, subtype="PCM_16", format="WAV")
        tmp.replace(out)
        log.info("generated %s/%s: %.2f s of audio", split, item.id, timing["audio_seconds"])
        return timing


def generate_missing(
    items: list[EvalItem],
    output_dir: Path,
    split: str,
    config: GenerateConfig,
    generator: Generator | None = None,
) -> tuple[int, list[str]]:
    """Speak every usable item whose WAV is missing; returns (number generated, per-item error lines)."""
    todo = [it for it in items if it.problem is None and not wav_path(output_dir, split, it.id).exists()]
    errors: list[str] = []
    if not todo:
        return 0, errors
    generator = generator or Generator(config)
    done = 0
    for it in todo:
        try:
            generator.speak(it, output_dir, split)
            done += 1
        except (ValueError, RuntimeError, OSError) as exc:  # one failed item must not stop the run
            errors.append(f"{split}/{it.id}: generation failed: {' '.join(str(exc).split())[:200]}")
    return done, errors
