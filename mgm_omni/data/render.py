"""Render one planned item to a checked audio file and its manifest row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engines import EngineSet
from .manifest import ManifestRow, audio_matches, write_audio
from .plan import Item
from .postprocess import SignalConfig, join, level, to_corpus
from .voices import parse_voice


@dataclass(frozen=True)
class RenderContext:
    """What a worker needs besides the item (picklable)."""

    out: Path
    signal: SignalConfig
    builder_version: str
    engine_versions: dict[str, str]


def render_item(item: Item, engines: EngineSet, ctx: RenderContext) -> ManifestRow:
    """Synthesize, post-process, write and re-check one item; raises on any engine or audio failure."""
    voice = parse_voice(item.voice)  # re-checked in the worker: nothing reaches an engine unchecked
    sr = ctx.signal.sample_rate
    pieces = []
    for s in item.sentences:
        raw, raw_sr = engines.synthesize(voice, s.text, item.lang, item.speaker)
        pieces.append(to_corpus(raw, raw_sr, ctx.signal, vtl=item.speaker.vtl))
    if item.kind == "longform":
        audio, bounds = join(pieces, list(item.pauses), sr)
    else:
        audio, bounds = pieces[0], [(0.0, len(pieces[0]) / sr)]
    audio = level(audio, sr, ctx.signal)
    path = ctx.out / item.audio
    write_audio(path, audio, sr)
    first = item.sentences[0]
    sep = " " if item.lang == "en" else ""
    row = ManifestRow(
        id=item.id, audio=item.audio, text=sep.join(s.text for s in item.sentences), lang=item.lang,
        speaker=item.speaker.id, family=item.family, engine=voice.engine, voice=voice.key,
        speaker_made=item.speaker.made(), transform=item.speaker.transform(), split=item.split, kind=item.kind,
        duration=round(len(audio) / sr, 4), sample_rate=sr, num_samples=int(len(audio)), source=first.source,
        source_line=first.line, engine_version=ctx.engine_versions.get(item.family, "unknown"),
        builder_version=ctx.builder_version,
        segments=[{"start": round(a, 4), "end": round(b, 4), "text": s.text, "source_line": s.line}
                  for (a, b), s in zip(bounds, item.sentences)] if item.kind == "longform" else [],
    )
    if not audio_matches(row, ctx.out) or not np.isfinite(audio).all():
        raise RuntimeError(f"{item.id}: the written audio does not read back as {row.num_samples} samples")
    return row
