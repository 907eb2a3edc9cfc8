"""Speakers: an allowed voice (or a few voices of one speaker), optionally turned into a pseudo-speaker.

A pseudo-speaker is made from allowed voices only, by
- a Kokoro style blend (``kokoro:jf_alpha@0.4+jf_nezumi@0.6``),
- ``pitch``: the engine's own pitch control (espeak-ng ``-p`` 0-99, default 50; flite ``int_f0_target_mean``
  in Hz), which moves F0 and leaves the formants,
- ``speed``: the engine's own speaking rate (espeak ``-s``, flite/festival duration stretch, Kokoro speed),
- ``vtl``: a vocal-tract-length warp by resampling (formants and F0 times ``vtl``) with the duration restored
  by WSOLA (sox ``tempo``).

The speaker id is the voices' identity (see ``voices.identity``) plus the transforms, e.g. ``espeak-f3~p70``
or ``kal~vtl1.1``, so the same transform of the same speaker gets the same id whatever the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .voices import Voice, VoiceError, parse_voice


@dataclass
class Speaker:
    """One (pseudo-)speaker of one engine family.

    Args:
        voices: language -> voice specs, used in turn (e.g. several espeak accents of one variant).
        pitch: engine-native pitch (espeak ``-p`` 0-99, flite F0 mean in Hz); None keeps the voice's own.
        speed: speaking-rate factor (> 1 is faster).
        vtl: vocal-tract-length warp factor (> 1 shorter tract: higher formants and F0).
    """

    voices: dict[str, tuple[str, ...]]
    pitch: float | None = None
    speed: float = 1.0
    vtl: float = 1.0
    parsed: dict[str, tuple[Voice, ...]] = field(init=False, repr=False)
    family: str = field(init=False)
    identity: str = field(init=False)
    id: str = field(init=False)

    def __post_init__(self):
        if not self.voices:
            raise VoiceError("a speaker needs at least one voice")
        self.voices = {lang: (v,) if isinstance(v, str) else tuple(v) for lang, v in self.voices.items()}
        self.parsed = {}
        for lang, specs in self.voices.items():
            if not specs:
                raise VoiceError(f"speaker has no {lang} voice")
            voices = tuple(parse_voice(s) for s in specs)
            for v in voices:
                if lang not in v.langs:
                    raise VoiceError(f"voice {v.key!r} does not speak {lang!r} (it speaks {', '.join(v.langs)})")
            self.parsed[lang] = voices
        all_voices = [v for vs in self.parsed.values() for v in vs]
        engines = {v.engine for v in all_voices}
        identities = {v.identity for v in all_voices}
        if len(engines) != 1:
            raise VoiceError(f"one speaker entry must use one engine, got {sorted(engines)}")
        if len(identities) != 1:
            raise VoiceError(f"voices {sorted(v.key for v in all_voices)} are different speakers "
                             f"({sorted(identities)}); give each its own speaker entry")
        self.family = engines.pop()
        self.identity = identities.pop()
        if not 0.5 <= self.speed <= 2.0 or not 0.7 <= self.vtl <= 1.4:
            raise VoiceError(f"speaker {self.identity}: speed must be in [0.5, 2] and vtl in [0.7, 1.4]")
        if self.pitch is not None:
            limits = {"espeak": (0, 99), "flite": (50, 400)}
            if self.family not in limits:
                raise VoiceError(f"{self.family} has no native pitch control; use vtl for speaker {self.identity}")
            lo, hi = limits[self.family]
            if not lo <= self.pitch <= hi:
                raise VoiceError(f"{self.family} pitch must be in [{lo}, {hi}], got {self.pitch}")
        self.id = self.identity + "".join(f"~{k}{v:g}" for k, v in self.transform().items())

    @property
    def langs(self) -> tuple[str, ...]:
        return tuple(self.voices)

    def transform(self) -> dict[str, float]:
        """The transforms that make this a pseudo-speaker (empty for a plain voice)."""
        out = {}
        if self.pitch is not None:
            out["p"] = float(self.pitch)
        if self.speed != 1.0:
            out["s"] = float(self.speed)
        if self.vtl != 1.0:
            out["vtl"] = float(self.vtl)
        return out

    def made(self) -> str:
        """How this speaker was made, in words (for the manifest)."""
        names = sorted({v.key for vs in self.parsed.values() for v in vs})
        how = "voice " + ", ".join(names)
        if any(len(v.components) > 1 for vs in self.parsed.values() for v in vs):
            how = "Kokoro style blend " + ", ".join(names)
        t = self.transform()
        if "p" in t:
            how += f"; native pitch {t['p']:g}"
        if "s" in t:
            how += f"; native speed x{t['s']:g}"
        if "vtl" in t:
            how += f"; vocal-tract-length warp x{t['vtl']:g} (resample + WSOLA tempo)"
        return how


def _espeak(variant: str, en: bool = True, zh: bool = False, **kw) -> Speaker:
    v = f"+{variant}" if variant else ""
    accents = ("en-us", "en-gb-x-rp", "en-us", "en-us-nyc", "en-us", "en-gb", "en-029", "en-gb-scotland")
    voices = {}
    if en:
        voices["en"] = tuple(f"espeak:{a}{v}" for a in accents)  # accents as pronunciation variety, en-us half
    if zh:
        voices["zh"] = (f"espeak:cmn-latn-pinyin{v}",)
    return Speaker(voices, **kw)


def _single(voice: str, langs=("en",), **kw) -> Speaker:
    return Speaker({lang: (voice,) for lang in langs}, **kw)


def default_roster() -> list[Speaker]:
    """The default speakers: every allowed voice family plus pseudo-speakers made from them."""
    gnt = ("kokoro:jf_gongitsune", "kokoro:jf_nezumi", "kokoro:jf_tebukuro")
    both = ("en", "zh")
    return [
        # espeak-ng: distinct variants (bilingual where the Mandarin is usable), then pseudo-speakers
        _espeak(""), _espeak("f2"), _espeak("f3", zh=True), _espeak("m7", zh=True), _espeak("klatt"),
        _espeak("grandma"), _espeak("whisper"), _espeak("Annie", zh=True),
        _espeak("", pitch=75), _espeak("klatt", pitch=30, speed=0.9), _espeak("f2", vtl=0.92),
        _espeak("grandma", vtl=1.08), _espeak("Annie", en=False, zh=True, pitch=30),
        _espeak("f3", en=False, zh=True, pitch=70, speed=0.9), _espeak("Annie", en=False, zh=True, vtl=0.9),
        # flite
        _single("flite:kal16"), _single("flite:awb"), _single("flite:rms"),
        _single("flite:kal16", pitch=140), _single("flite:awb", vtl=1.1), _single("flite:awb", pitch=95, speed=0.9),
        # festival (kal_diphone is the same speaker as flite kal16)
        _single("festival:kal_diphone"), _single("festival:ked_diphone"),
        _single("festival:ked_diphone", vtl=0.93), _single("festival:kal_diphone", vtl=1.12),
        _single("festival:ked_diphone", speed=1.15),
        # Kokoro styles speaking EN and ZH, blends and warps
        _single("kokoro:jf_alpha", both), Speaker({"en": gnt, "zh": gnt}),
        _single("kokoro:jf_alpha@0.5+jf_gongitsune@0.5", both), _single("kokoro:jf_alpha@0.3+jf_tebukuro@0.7", both),
        _single("kokoro:jf_alpha", both, vtl=0.9), Speaker({"en": gnt, "zh": gnt}, vtl=0.92),
        _single("kokoro:jf_alpha@0.4+jf_nezumi@0.6", both, vtl=0.93),
    ]


# Whole speakers kept out of training, for measuring cloning: 2 EN-only/bilingual + a bilingual Kokoro blend.
DEFAULT_DEV_SPEAKERS = ("rms", "espeak-m7", "kokoro-blend-gnt60-alpha40~vtl0.93")


def speaker_from_dict(d: dict) -> Speaker:
    """A speaker from a YAML entry: ``{voice: ..., langs: [en], pitch:, speed:, vtl:}`` or ``{voices: {en: [...]}}``."""
    d = dict(d)
    unknown = set(d) - {"voice", "voices", "langs", "pitch", "speed", "vtl"}
    if unknown:
        raise VoiceError(f"speaker entry has unknown keys {sorted(unknown)}")
    kw = {k: d[k] for k in ("pitch", "speed", "vtl") if k in d}
    if "voices" in d:
        return Speaker({lang: tuple(v) if not isinstance(v, str) else (v,) for lang, v in d["voices"].items()}, **kw)
    if "voice" not in d:
        raise VoiceError(f"speaker entry {d} needs 'voice' or 'voices'")
    voice = parse_voice(d["voice"])
    langs = tuple(d.get("langs", voice.langs))
    return Speaker({lang: (d["voice"],) for lang in langs}, **kw)
