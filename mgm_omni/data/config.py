"""The corpus build configuration: one dataclass, checked when made, read from YAML and/or CLI options.

Budgets are per voice family and language, written ``family/lang`` (``espeak/en``, ``kokoro/zh``), either in
hours (``hours``) or in sentences (``sentences``). The team corpus (about 21 h) as YAML::

    out: /work/corpus
    langs: [en, zh]
    hours: {espeak/en: 3.5, flite/en: 2.5, festival/en: 2, espeak/zh: 3, kokoro/en: 3, kokoro/zh: 3}
    longform_count: 30
    longform_minutes: [2, 5]
    pairs_per_speaker: 100
    jobs: 1
    seed: 0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .postprocess import SignalConfig
from .speakers import DEFAULT_DEV_SPEAKERS, Speaker, default_roster, speaker_from_dict
from .text_sources import DEFAULT_SOURCES
from .voices import ENGINES

LANGS = ("en", "zh")


class ConfigError(ValueError):
    """A build configuration that cannot be used."""


def _budget(d: dict, kind: str, cast) -> dict[str, float]:
    out = {}
    for key, value in (d or {}).items():
        family, _, lang = str(key).partition("/")
        if family not in ENGINES or lang not in LANGS:
            raise ConfigError(f"{kind} key {key!r} must be family/lang with family in {ENGINES} and lang in {LANGS}")
        try:
            value = cast(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind}[{key}] must be a number, got {value!r}") from exc
        if value < 0:
            raise ConfigError(f"{kind}[{key}] must be >= 0, got {value}")
        out[f"{family}/{lang}"] = value
    return out


@dataclass
class CorpusConfig:
    """Everything ``build_corpus`` needs. Checked in ``__post_init__``; unknown YAML keys are errors."""

    out: Path
    langs: tuple[str, ...] = LANGS
    hours: dict[str, float] = field(default_factory=dict)  # "family/lang" -> hours
    sentences: dict[str, int] = field(default_factory=dict)  # "family/lang" -> sentences
    sources: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SOURCES))
    speakers: list[dict] | None = None  # None: the default roster; else YAML speaker entries
    voices: tuple[str, ...] = ()  # a roster of plain voices (engine:name), instead of ``speakers``
    dev_speakers: tuple[str, ...] | None = None  # None: the defaults that are in the roster
    dev_speaker_minutes: float = 15.0  # per dev speaker and language
    dev_fraction: float = 0.05
    test_fraction: float = 0.05
    longform_count: int = 0
    longform_minutes: tuple[float, float] = (2.0, 5.0)
    pause_seconds: tuple[float, float] = (0.25, 0.6)  # between sentences of a long-form item
    pairs_per_speaker: int = 20  # per speaker, language and split
    jobs: int = 1
    seed: int = 0
    audio_format: str = "flac"
    sample_rate: int = 22050
    roster: list[Speaker] = field(init=False, repr=False)
    signal: SignalConfig = field(init=False, repr=False)

    def __post_init__(self):
        self.out = Path(self.out).expanduser()
        self.langs = tuple(self.langs)
        if not self.langs or any(lang not in LANGS for lang in self.langs):
            raise ConfigError(f"langs must be a non-empty subset of {LANGS}, got {list(self.langs)}")
        self.hours = _budget(self.hours, "hours", float)
        self.sentences = _budget(self.sentences, "sentences", int)
        both = set(self.hours) & set(self.sentences)
        if both:
            raise ConfigError(f"give hours or sentences for {sorted(both)}, not both")
        if not any(v > 0 for k, v in {**self.hours, **self.sentences}.items() if k.split("/")[1] in self.langs):
            raise ConfigError("nothing to build: give hours or sentences (family/lang=N) for the chosen langs")
        self.sources = {**DEFAULT_SOURCES, **self.sources}
        self.sources = {lang: tuple([names] if isinstance(names, str) else names)
                        for lang, names in self.sources.items() if lang in self.langs}
        for lang in self.langs:
            if not self.sources.get(lang):
                raise ConfigError(f"no text source for {lang}")
        if self.jobs < 1 or self.pairs_per_speaker < 0 or self.longform_count < 0:
            raise ConfigError("jobs must be >= 1, pairs_per_speaker and longform_count >= 0")
        lo, hi = self.longform_minutes
        plo, phi = self.pause_seconds
        if not 0 < lo <= hi or not 0 <= plo <= phi <= 3:
            raise ConfigError("longform_minutes needs 0 < min <= max; pause_seconds 0 <= min <= max <= 3")
        if not (0 < self.dev_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            raise ConfigError("dev_fraction and test_fraction must be in (0, 0.5)")
        if self.audio_format not in ("flac", "wav"):
            raise ConfigError(f"audio_format must be flac or wav, got {self.audio_format!r}")
        if self.speakers is not None and self.voices:
            raise ConfigError("give speakers or voices, not both")
        # Voices are checked here (VoiceError), before any work.
        if self.voices:
            self.roster = [speaker_from_dict({"voice": v}) for v in self.voices]
        elif self.speakers is not None:
            self.roster = [speaker_from_dict(d) for d in self.speakers]
        else:
            self.roster = default_roster()
        seen = set()
        for s in self.roster:
            if (s.id, s.family) in seen:
                raise ConfigError(f"speaker {s.id} ({s.family}) is listed twice")
            seen.add((s.id, s.family))
        if self.dev_speakers is None:
            ids = {s.id for s in self.roster}
            self.dev_speakers = tuple(d for d in DEFAULT_DEV_SPEAKERS if d in ids)
        self.dev_speakers = tuple(self.dev_speakers)
        self.signal = SignalConfig(sample_rate=self.sample_rate)

    def budget_keys(self) -> list[str]:
        """The family/lang pairs with a positive budget in the chosen languages."""
        return [k for k, v in {**self.hours, **self.sentences}.items() if v > 0 and k.split("/")[1] in self.langs]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["out"] = str(self.out)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def load_config(path: str | Path | None = None, **overrides) -> CorpusConfig:
    """A config from a YAML file (optional) with CLI overrides (None values are ignored)."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a YAML mapping")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("hours", "sentences", "sources") and key in data:
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    names = {f.name for f in dataclasses.fields(CorpusConfig) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {', '.join(sorted(names))}")
    if "out" not in data:
        raise ConfigError("give the output directory (--out or out: in the YAML)")
    for key in ("longform_minutes", "pause_seconds"):
        if key in data:
            data[key] = tuple(float(x) for x in data[key])
    return CorpusConfig(**data)
