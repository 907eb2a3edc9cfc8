"""Corpus statistics: hours per voice family, speaker, language and split; sentences and speakers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .manifest import Manifest, ManifestRow, PairRow


@dataclass
class CorpusStats:
    items: int
    hours: float
    sentences: int  # distinct sentences (long-form segments included)
    speakers: int
    longform_items: int
    longform_hours: float
    pairs: int | None
    hours_by_family: dict[str, float]
    hours_by_speaker: dict[str, float]
    hours_by_lang: dict[str, float]
    hours_by_split: dict[str, float]
    speakers_by_split: dict[str, int]


def corpus_stats(rows: list[ManifestRow], pairs: list[PairRow] | None = None) -> CorpusStats:
    def hours(key) -> dict[str, float]:
        c: Counter = Counter()
        for r in rows:
            c[key(r)] += r.duration / 3600
        return dict(sorted(c.items()))

    texts = {(r.lang, seg["text"]) for r in rows for seg in r.segments} | {
        (r.lang, r.text) for r in rows if r.kind == "utterance"}
    split_speakers: dict[str, set] = {}
    for r in rows:
        split_speakers.setdefault(r.split, set()).add(r.speaker)
    lf = [r for r in rows if r.kind == "longform"]
    return CorpusStats(
        items=len(rows), hours=sum(r.duration for r in rows) / 3600, sentences=len(texts),
        speakers=len({r.speaker for r in rows}), longform_items=len(lf),
        longform_hours=sum(r.duration for r in lf) / 3600, pairs=None if pairs is None else len(pairs),
        hours_by_family=hours(lambda r: r.family), hours_by_speaker=hours(lambda r: r.speaker),
        hours_by_lang=hours(lambda r: r.lang), hours_by_split=hours(lambda r: r.split),
        speakers_by_split={k: len(v) for k, v in sorted(split_speakers.items())},
    )


def format_stats(st: CorpusStats) -> str:
    """A plain-text report (hours with two decimals)."""
    lines = [f"items {st.items}  hours {st.hours:.2f}  sentences {st.sentences}  speakers {st.speakers}  "
             f"long-form {st.longform_items} ({st.longform_hours:.2f} h)"
             + ("" if st.pairs is None else f"  pairs {st.pairs}")]
    for title, table in (("language", st.hours_by_lang), ("split", st.hours_by_split),
                         ("voice family", st.hours_by_family), ("speaker", st.hours_by_speaker)):
        lines.append(f"hours per {title}:")
        width = max((len(k) for k in table), default=0)
        for k, h in table.items():
            extra = f"  ({st.speakers_by_split[k]} speakers)" if title == "split" else ""
            lines.append(f"  {k:<{width}}  {h:8.2f}{extra}")
    return "\n".join(lines)


def stats_for_path(path: str | Path) -> str:
    """The report for a corpus directory or a manifest file (pairs are counted when ``pairs.jsonl`` is beside it)."""
    path = Path(path)
    manifest = path / "manifest.jsonl" if path.is_dir() else path
    if not manifest.is_file():
        raise FileNotFoundError(f"no manifest at {manifest}")
    pairs_path = manifest.with_name("pairs.jsonl")
    pairs = Manifest.read(pairs_path, PairRow) if pairs_path.is_file() else None
    return format_stats(corpus_stats(Manifest.read(manifest), pairs))
