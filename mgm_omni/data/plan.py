"""The build plan: which speaker says which sentences, as a deterministic list of items.

Each family/lang budget is shared by the family's speakers of that language; a dev speaker gets at most
``dev_speaker_minutes`` and the training speakers share the rest. Training speakers walk one seeded shuffle
of all sentences of the language (an item's split is its sentence's split); dev speakers walk the dev/test
sentences only. Hours become sentence counts through a speaking-rate estimate (``CHARS_PER_SECOND``).

An item's id hashes its speaker, voice and text, so a changed config never reuses audio made for another
item, and an unchanged one finds its audio again (resume).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass

from .config import ConfigError, CorpusConfig
from .speakers import Speaker
from .splits import check_dev_speakers, sentence_split
from .text_sources import Sentence

FAMILY_ORDER = ("espeak", "flite", "festival", "kokoro")  # fast engines first: a usable corpus exists early
# Characters per second of trimmed speech at speed 1, measured on 850 items of the default roster.
CHARS_PER_SECOND = {("espeak", "en"): 18.7, ("flite", "en"): 17.2, ("festival", "en"): 17.5,
                    ("kokoro", "en"): 16.4, ("espeak", "zh"): 4.1, ("kokoro", "zh"): 4.4}


@dataclass
class Item:
    """One piece of audio to render: a sentence, or consecutive sentences (long-form) of one speaker."""

    id: str
    kind: str  # utterance | longform
    speaker: Speaker
    voice: str  # engine:name
    lang: str
    split: str
    sentences: tuple[Sentence, ...]
    pauses: tuple[float, ...]  # seconds between sentences (long-form)
    audio: str  # path relative to the corpus directory

    @property
    def family(self) -> str:
        return self.speaker.family


def estimate_seconds(text: str, family: str, lang: str, speed: float = 1.0) -> float:
    return len(text) / CHARS_PER_SECOND[(family, lang)] / speed


def plan_summary(items: list[Item]) -> str:
    """Items and estimated hours per family/lang and kind, one line each."""
    table: dict[tuple[str, str, str], list[float]] = {}
    for it in items:
        est = sum(estimate_seconds(s.text, it.family, it.lang, it.speaker.speed) for s in it.sentences)
        est += sum(it.pauses)
        cell = table.setdefault((it.family, it.lang, it.kind), [0, 0.0])
        cell[0] += 1
        cell[1] += est / 3600
    return "\n".join(f"  {f}/{lang} {kind}: {n} items, ~{h:.2f} h" for (f, lang, kind), (n, h) in table.items())


def _item_id(speaker: Speaker, voice: str, lang: str, kind: str, texts) -> str:
    h = hashlib.sha1("\0".join([speaker.id, voice, lang, kind, *texts]).encode()).hexdigest()[:12]
    return f"{speaker.family}-{lang}-{h}"


def _audio_path(cfg: CorpusConfig, speaker: Speaker, item_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._~-]", "_", speaker.id)
    return f"audio/{speaker.family}/{slug}/{item_id}.{cfg.audio_format}"


class _Cursor:
    """Walks a seeded shuffle of sentences, wrapping around."""

    def __init__(self, sentences: list[Sentence], rng: random.Random):
        self.order = list(sentences)
        rng.shuffle(self.order)
        self.i = 0

    def next(self) -> Sentence:
        s = self.order[self.i % len(self.order)]
        self.i += 1
        return s


def _speakers_for(cfg: CorpusConfig, family: str, lang: str) -> list[Speaker]:
    return [s for s in cfg.roster if s.family == family and lang in s.langs]


def make_plan(cfg: CorpusConfig, sentences: dict[str, list[Sentence]]) -> list[Item]:
    """All items of the build, grouped by family in ``FAMILY_ORDER``. Raises ``ConfigError`` on a bad roster."""
    for key in cfg.budget_keys():
        if not _speakers_for(cfg, *key.split("/")):
            raise ConfigError(f"budget {key} has no speaker of that family and language in the roster")
    try:
        check_dev_speakers(cfg.dev_speakers, cfg.roster)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    rng = random.Random(cfg.seed)
    split_of = {}
    for lang, sents in sentences.items():
        for s in sents:
            split_of[(lang, s.text)] = sentence_split(s.text, lang, cfg.dev_fraction, cfg.test_fraction)
    cursors = {(lang, pool): _Cursor([s for s in sents if pool == "all" or split_of[(lang, s.text)] != "train"],
                                     random.Random(f"{cfg.seed}-{lang}-{pool}"))
               for lang, sents in sentences.items() for pool in ("all", "heldout")}
    for (lang, pool), cur in cursors.items():
        if not cur.order:
            raise ConfigError(f"no {lang} sentence in the {'dev/test' if pool == 'heldout' else ''} pool: "
                              "the text sources are too small for the splits")
    streams: list[list[Item]] = []  # one per (family/lang, speaker)
    seen: set[str] = set()
    keys = sorted(cfg.budget_keys(), key=lambda k: (FAMILY_ORDER.index(k.split("/")[0]), k))
    for key in keys:
        family, lang = key.split("/")
        speakers = _speakers_for(cfg, family, lang)
        dev = [s for s in speakers if s.id in cfg.dev_speakers]
        train = [s for s in speakers if s.id not in cfg.dev_speakers]
        for sp in speakers:
            is_dev = sp.id in cfg.dev_speakers
            if key in cfg.sentences:
                n_total = cfg.sentences[key]
                count, seconds = n_total // len(speakers) + (speakers.index(sp) < n_total % len(speakers)), None
            else:
                total = cfg.hours[key] * 3600
                dev_each = min(cfg.dev_speaker_minutes * 60, total / len(speakers))
                count = None
                seconds = dev_each if is_dev else (total - dev_each * len(dev)) / max(1, len(train))
            cursor = cursors[(lang, "heldout" if is_dev else "all")]
            voices = sp.voices[lang]
            streams.append(stream := [])
            n, est, tries = 0, 0.0, 0
            while (count is not None and n < count) or (seconds is not None and est < seconds):
                tries += 1
                if tries > 3 * len(cursor.order) + 10 * (count or 0) + 1000:
                    break  # the pool is exhausted for this speaker (every sentence already used)
                s = cursor.next()
                voice = voices[n % len(voices)]
                item_id = _item_id(sp, voice, lang, "utterance", [s.text])
                if item_id in seen:
                    continue
                seen.add(item_id)
                split = "dev_speakers" if is_dev else split_of[(lang, s.text)]
                stream.append(Item(item_id, "utterance", sp, voice, lang, split, (s,), (), _audio_path(cfg, sp, item_id)))
                n += 1
                est += estimate_seconds(s.text, family, lang, sp.speed)
    # Round-robin over speakers and languages, so a build stopped half-way is balanced; long-form last.
    utterances = [st[i] for i in range(max(map(len, streams), default=0)) for st in streams if i < len(st)]
    items = utterances + _longform_items(cfg, sentences, split_of, keys, rng)
    items.sort(key=lambda it: FAMILY_ORDER.index(it.family))  # stable: keeps the order within a family
    return items


def _longform_items(cfg, sentences, split_of, keys, rng: random.Random) -> list[Item]:
    """Long-form items: consecutive sentences of one source, one speaker and voice, several minutes."""
    cands = [(sp, k.split("/")[1]) for k in keys for sp in _speakers_for(cfg, *k.split("/"))]
    train = [c for c in cands if c[0].id not in cfg.dev_speakers]
    dev = [c for c in cands if c[0].id in cfg.dev_speakers]
    rng.shuffle(train)
    rng.shuffle(dev)
    items = []
    for k in range(cfg.longform_count):
        use_dev = bool(dev) and (k % 10 == 9 or not train)
        sp, lang = (dev if use_dev else train)[(k // 10 if use_dev else k) % len(dev if use_dev else train)]
        allowed = {"dev", "test"} if use_dev else {"train"}
        by_source: dict[str, list[Sentence]] = {}
        for s in sentences[lang]:
            if split_of[(lang, s.text)] in allowed:
                by_source.setdefault(s.source, []).append(s)
        target = rng.uniform(*cfg.longform_minutes) * 60
        est = {src: sum(estimate_seconds(s.text, sp.family, lang, sp.speed) for s in ss)
               for src, ss in by_source.items()}
        big = sorted(src for src in by_source if est[src] >= target) or sorted(by_source, key=lambda x: -est[x])[:1]
        if not big:
            continue
        src = rng.choice(big)
        run = by_source[src]
        step = [estimate_seconds(s.text, sp.family, lang, sp.speed) + sum(cfg.pause_seconds) / 2 for s in run]
        suffix = list(itertools.accumulate(reversed(step)))[::-1]  # material left from each start
        starts = [i for i in range(len(run)) if suffix[i] >= target] or [0]
        start = rng.choice(starts)
        chosen, total = [], 0.0
        for s, dt in zip(run[start:], step[start:]):
            if total >= target:
                break
            chosen.append(s)
            total += dt
        voice = sp.voices[lang][k % len(sp.voices[lang])]
        item_id = _item_id(sp, voice, lang, "longform", [s.text for s in chosen])
        pauses = tuple(round(rng.uniform(*cfg.pause_seconds), 3) for _ in chosen[1:])
        split = "dev_speakers" if use_dev else "train"
        items.append(Item(item_id, "longform", sp, voice, lang, split, tuple(chosen), pauses,
                          _audio_path(cfg, sp, item_id)))
    return items
