"""Which TTS voices may make training and dev data: the one allow-list, the reserved list, and speaker identity.

A voice is written ``engine:name``: ``espeak:en-us+f3``, ``espeak:cmn-latn-pinyin+Annie``, ``flite:kal16``,
``festival:kal_diphone``, ``kokoro:jf_alpha``, or a Kokoro style blend ``kokoro:jf_alpha@0.6+jf_nezumi@0.4``.

Every voice not on ``ALLOWED`` is refused. The voices on ``RESERVED`` are kept for evaluation: they must never
be used, mixed into a blend or imitated by a transform, so they get their own error message.

Some allowed voices are one speaker under two names (../shared/ASSETS.md §6): flite ``kal16`` is festival
``kal_diphone``; Kokoro ``jf_gongitsune``, ``jf_nezumi`` and ``jf_tebukuro`` are probably one speaker; the
espeak-ng accents are one speaker per variant (the accent only changes pronunciation), ``+f4`` is ``+f3`` and
``+m3`` is the default voice, and an espeak variant is the same speaker in English and Mandarin. ``identity``
maps each voice to that speaker, so those voices share a speaker id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENGINES = ("espeak", "flite", "festival", "kokoro")


class VoiceError(ValueError):
    """A voice that may not be used for training or dev data (unknown, reserved or not allowed)."""


@dataclass(frozen=True)
class AllowedVoice:
    langs: tuple[str, ...]
    identity: str  # the speaker this voice is; voices of one speaker share it


def _espeak_voices() -> dict[str, AllowedVoice]:
    en_accents = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc")
    en_variants = ("", "f2", "f3", "f4", "m3", "m7", "klatt", "grandma", "whisper", "Annie")
    zh_variants = ("", "Annie", "f3", "f4", "m3", "m7", "klatt")
    same = {"": "default", "m3": "default", "f4": "f3"}  # near-duplicate variants (cosine 0.94-0.96)
    out = {}
    for lang, bases, variants in (("en", en_accents, en_variants), ("zh", ("cmn-latn-pinyin",), zh_variants)):
        for base in bases:
            for v in variants:
                out[f"espeak:{base}{'+' + v if v else ''}"] = AllowedVoice((lang,), f"espeak-{same.get(v, v)}")
    return out


# The allow-list: the only voices the corpus builder renders with.
ALLOWED: dict[str, AllowedVoice] = {
    **_espeak_voices(),
    "flite:kal16": AllowedVoice(("en",), "kal"),
    "flite:awb": AllowedVoice(("en",), "awb"),
    "flite:rms": AllowedVoice(("en",), "rms"),
    "festival:kal_diphone": AllowedVoice(("en",), "kal"),  # the same speaker as flite kal16
    "festival:ked_diphone": AllowedVoice(("en",), "ked"),
    "kokoro:jf_alpha": AllowedVoice(("en", "zh"), "kokoro-alpha"),
    "kokoro:jf_gongitsune": AllowedVoice(("en", "zh"), "kokoro-gnt"),  # gongitsune ~ nezumi ~ tebukuro
    "kokoro:jf_nezumi": AllowedVoice(("en", "zh"), "kokoro-gnt"),
    "kokoro:jf_tebukuro": AllowedVoice(("en", "zh"), "kokoro-gnt"),
}

# Reserved for evaluation: never used, mixed or imitated. Keys are the names people write.
RESERVED: dict[str, str] = {
    "piper:joe": "piper en_US-joe-medium",
    "piper:en_US-joe-medium": "piper en_US-joe-medium",
    "flite:slt": "speaker SLT (flite slt == festival cmu_us_slt_arctic_hts)",
    "festival:cmu_us_slt_arctic_hts": "speaker SLT (flite slt == festival cmu_us_slt_arctic_hts)",
    "festival:slt": "speaker SLT (flite slt == festival cmu_us_slt_arctic_hts)",
    "kokoro:jm_kumo": "Kokoro jm_kumo",
}
_RESERVED_NAMES = ("slt", "kumo", "joe", "piper")  # any spelling that names a reserved speaker

# Installed but not allowed, with the reason.
NOT_ALLOWED: dict[str, str] = {
    "flite:kal": "it is the 8 kHz copy of KAL; use flite:kal16 (the same speaker at 16 kHz)",
    "espeak:cmn": "espeak-ng 'cmn' reads the pinyin as English (CER 1.0); use espeak:cmn-latn-pinyin",
}


@dataclass(frozen=True)
class Voice:
    """One allowed voice, or a Kokoro blend of allowed styles (``components`` = ((style, weight), ...))."""

    engine: str
    name: str  # as the engine knows it: "en-us+f3", "kal16", "jf_alpha"; a blend: "jf_alpha@0.6+jf_nezumi@0.4"
    components: tuple[tuple[str, float], ...]
    langs: tuple[str, ...]
    identity: str

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


def _refuse_reserved(key: str) -> None:
    if key in RESERVED:
        raise VoiceError(f"voice {key!r} is reserved for evaluation ({RESERVED[key]}): it must never be used, "
                         "mixed or imitated in training or dev data")
    low = key.lower()
    if low.startswith("piper:") or any(n in low.split(":", 1)[-1] for n in _RESERVED_NAMES):
        raise VoiceError(f"voice {key!r} names a voice reserved for evaluation (piper joe, SLT, jm_kumo): "
                         "it must never be used, mixed or imitated in training or dev data")


def _check_one(key: str) -> AllowedVoice:
    _refuse_reserved(key)
    if key in NOT_ALLOWED:
        raise VoiceError(f"voice {key!r} is not allowed: {NOT_ALLOWED[key]}")
    if key not in ALLOWED:
        engine = key.split(":", 1)[0]
        known = sorted(k for k in ALLOWED if k.startswith(engine + ":"))[:12]
        hint = f"; allowed {engine} voices include {', '.join(known)}" if known else \
            f"; engines are {', '.join(ENGINES)} (write engine:voice)"
        raise VoiceError(f"unknown voice {key!r}: not on the allow-list{hint}")
    return ALLOWED[key]


def _blend_identity(parts: list[tuple[str, float]]) -> str:
    weights: dict[str, float] = {}
    for style, w in parts:
        ident = ALLOWED[f"kokoro:{style}"].identity
        weights[ident] = weights.get(ident, 0.0) + w
    if len(weights) == 1:
        return next(iter(weights))
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
    return "kokoro-blend-" + "-".join(f"{i.removeprefix('kokoro-')}{round(100 * w)}" for i, w in ranked)


def parse_voice(spec: str) -> Voice:
    """Check a voice against the allow-list and return it; raise ``VoiceError`` with the reason otherwise.

    Args:
        spec: ``engine:name``; for Kokoro also ``kokoro:styleA@wA+styleB@wB`` (weights > 0, summing to 1).
    """
    if not isinstance(spec, str) or ":" not in spec:
        _refuse_reserved(str(spec))
        raise VoiceError(f"voice {spec!r} must be written engine:name, engines {', '.join(ENGINES)}")
    engine, name = (s.strip() for s in spec.split(":", 1))
    if engine == "kokoro" and "@" in name:
        parts = []
        for piece in name.split("+"):
            m = re.fullmatch(r"([A-Za-z_]+)@([0-9.]+)", piece.strip())
            if not m:
                raise VoiceError(f"Kokoro blend {spec!r}: each part must be style@weight, e.g. jf_alpha@0.5")
            _check_one(f"kokoro:{m.group(1)}")  # a reserved style in a blend is refused here
            parts.append((m.group(1), float(m.group(2))))
        total = sum(w for _, w in parts)
        if len(parts) < 2 or any(w <= 0 for _, w in parts) or abs(total - 1.0) > 1e-6:
            raise VoiceError(f"Kokoro blend {spec!r}: needs 2+ distinct styles with weights > 0 summing to 1")
        if len({s for s, _ in parts}) != len(parts):
            raise VoiceError(f"Kokoro blend {spec!r} names a style twice")
        canon = "+".join(f"{s}@{w:g}" for s, w in parts)
        return Voice("kokoro", canon, tuple(parts), ("en", "zh"), _blend_identity(parts))
    allowed = _check_one(f"{engine}:{name}")
    return Voice(engine, name, ((name, 1.0),), allowed.langs, allowed.identity)
