"""JSONL manifests of the corpus: typed rows, atomic writes, appendable shards, checked audio I/O.

A corpus directory holds ``manifest.jsonl`` (one ``ManifestRow`` per item), ``pairs.jsonl`` (one
``PairRow`` per voice-cloning pair), ``build.json`` and ``audio/``. Audio paths in rows are relative to the
corpus directory. ``Manifest.write`` writes a temporary file and renames it, so a reader never sees a
half-written manifest; ``ShardWriter`` appends one whole line per ``write`` call, and ``Manifest.read`` with
``partial_tail=True`` drops a last line cut by a crash.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf


class ManifestError(ValueError):
    """A manifest line or an audio file that does not match its row."""


@dataclass
class ManifestRow:
    """One rendered item: an utterance, or a long-form item with per-sentence ``segments``."""

    id: str
    audio: str  # relative to the corpus directory
    text: str
    lang: str  # "en" | "zh"
    speaker: str
    family: str  # espeak | flite | festival | kokoro
    engine: str  # the engine voice's engine (same as family)
    voice: str  # engine:name of the voice that rendered it (a Kokoro blend: kokoro:a@w+b@w)
    speaker_made: str  # how the (pseudo-)speaker was made
    transform: dict[str, float]  # p (native pitch), s (native speed), vtl (warp); {} for a plain voice
    split: str  # train | dev | test | dev_speakers
    kind: str  # utterance | longform
    duration: float  # seconds
    sample_rate: int
    num_samples: int
    source: str  # text source, e.g. "wordnet:noun"
    source_line: int  # 1-based line (first sentence's for long-form)
    engine_version: str
    builder_version: str
    segments: list[dict] = field(default_factory=list)  # long-form: {start, end, text, source_line}

    @classmethod
    def from_dict(cls, d: dict) -> ManifestRow:
        return _from_dict(cls, d)


@dataclass
class PairRow:
    """A voice-cloning pair: reference and target are different items of one speaker."""

    id: str
    speaker: str
    split: str
    reference_id: str
    reference_audio: str
    reference_text: str
    reference_lang: str
    reference_duration: float
    target_id: str
    target_audio: str
    target_text: str
    target_lang: str
    target_kind: str
    target_duration: float

    @classmethod
    def from_dict(cls, d: dict) -> PairRow:
        return _from_dict(cls, d)


def _from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not isinstance(d, dict):
        raise ManifestError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    missing, extra = required - set(d), set(d) - names
    if missing or extra:
        raise ManifestError(f"{cls.__name__}: missing fields {sorted(missing)}, unknown fields {sorted(extra)}")
    return cls(**d)


def row_json(row) -> str:
    return json.dumps(dataclasses.asdict(row), ensure_ascii=False, separators=(",", ":"))


class Manifest:
    """Read and write JSONL manifests of ``ManifestRow`` (default) or ``PairRow``."""

    @staticmethod
    def read(path: str | Path, row_type=ManifestRow, partial_tail: bool = False) -> list:
        """All rows of ``path``; ``partial_tail`` drops an unterminated, unparsable last line (a crashed append)."""
        data = Path(path).read_bytes().decode("utf-8")
        lines = data.split("\n")
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(row_type.from_dict(json.loads(line)))
            except (json.JSONDecodeError, ManifestError, TypeError) as exc:
                if partial_tail and i == len(lines) and not data.endswith("\n"):
                    break
                raise ManifestError(f"{path}:{i}: {exc}") from exc
        return rows

    @staticmethod
    def write(path: str | Path, rows) -> None:
        """Write all rows to a temporary file, fsync it, and rename it over ``path`` (atomic)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(row_json(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class ShardWriter:
    """Appends rows to a shard file, one whole line per ``os.write`` (O_APPEND)."""

    def __init__(self, path: str | Path, fsync_every: int = 50):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fsync_every, self._n = fsync_every, 0

    def append(self, row) -> None:
        data = (row_json(row) + "\n").encode("utf-8")
        if os.write(self._fd, data) != len(data):
            raise OSError(f"short write to {self.path}")
        self._n += 1
        if self._n % self._fsync_every == 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def audio_matches(row: ManifestRow, root: str | Path) -> bool:
    """True when the row's audio file exists, is readable, and has the row's rate and length."""
    try:
        info = sf.info(str(Path(root) / row.audio))
    except (RuntimeError, sf.LibsndfileError, OSError):
        return False
    return info.samplerate == row.sample_rate and info.frames == row.num_samples and info.channels == 1


def load_audio(row: ManifestRow, root: str | Path) -> np.ndarray:
    """The row's audio as float32 mono at ``row.sample_rate``; ``ManifestError`` if it does not match the row."""
    path = Path(root) / row.audio
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise ManifestError(f"{row.id}: cannot read {path}: {exc}") from exc
    if sr != row.sample_rate or audio.shape != (row.num_samples, 1):
        raise ManifestError(f"{row.id}: {path} is {audio.shape[0]} samples at {sr} Hz, the row says "
                            f"{row.num_samples} at {row.sample_rate}")
    return audio[:, 0]


def write_audio(path: str | Path, audio: np.ndarray, sr: int) -> None:
    """16-bit PCM in the format of the suffix (.flac or .wav), written to a temporary name and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16", format=path.suffix[1:].upper())
    os.replace(tmp, path)
