"""Voice-cloning pairs: a reference and a target that are different utterances of one speaker.

Pairs stay inside one split (a dev-speaker target gets a dev-speaker reference). References are preferably
2-12 s long; for a bilingual speaker every fourth pair takes its reference in the other language
(cross-lingual cloning). Every long-form item gets one pair with an utterance reference.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from .manifest import ManifestRow, PairRow

REFERENCE_SECONDS = (2.0, 12.0)


def _pair(ref: ManifestRow, tgt: ManifestRow) -> PairRow:
    pid = "pair-" + hashlib.sha1(f"{ref.id}\0{tgt.id}".encode()).hexdigest()[:12]
    return PairRow(id=pid, speaker=tgt.speaker, split=tgt.split, reference_id=ref.id, reference_audio=ref.audio,
                   reference_text=ref.text, reference_lang=ref.lang, reference_duration=ref.duration,
                   target_id=tgt.id, target_audio=tgt.audio, target_text=tgt.text, target_lang=tgt.lang,
                   target_kind=tgt.kind, target_duration=tgt.duration)


def make_pairs(rows: list[ManifestRow], per_speaker: int, seed: int = 0) -> list[PairRow]:
    """Up to ``per_speaker`` pairs per speaker, split and target language, plus one per long-form item."""
    groups: dict[tuple[str, str], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        groups[(r.speaker, r.split)].append(r)
    pairs: list[PairRow] = []
    for (speaker, split), members in sorted(groups.items()):
        utts = sorted((r for r in members if r.kind == "utterance"), key=lambda r: r.id)
        good = [r for r in utts if REFERENCE_SECONDS[0] <= r.duration <= REFERENCE_SECONDS[1]] or utts
        by_lang: dict[str, list[ManifestRow]] = defaultdict(list)
        for r in good:
            by_lang[r.lang].append(r)
        for lang in sorted({r.lang for r in utts}):
            rng = random.Random(f"{seed}-{speaker}-{split}-{lang}")
            targets = [r for r in utts if r.lang == lang]
            rng.shuffle(targets)
            others = [lg for lg in by_lang if lg != lang]
            for k, tgt in enumerate(targets[:per_speaker]):
                pool = by_lang[others[0]] if others and k % 4 == 3 else by_lang.get(lang, good)
                refs = [r for r in pool if r.id != tgt.id and r.text != tgt.text]
                if refs:
                    pairs.append(_pair(rng.choice(refs), tgt))
        for tgt in sorted((r for r in members if r.kind == "longform"), key=lambda r: r.id):
            rng = random.Random(f"{seed}-{tgt.id}")
            said = {seg["text"] for seg in tgt.segments}
            refs = [r for r in (by_lang.get(tgt.lang) or good) if r.text not in said]
            if refs:
                pairs.append(_pair(rng.choice(refs), tgt))
    return pairs
