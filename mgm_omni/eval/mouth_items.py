"""What the mouth evaluation speaks: held-out sentences of the corpus's dev speakers, each with a reference clip.

    corpus = DevCorpus.read("/work/corpus/manifest.jsonl")              # split dev_speakers by default
    items = corpus.clone_items({"en": 20, "zh": 10})                    # (sentence clip, prompt clip) pairs
    clips = corpus.speaker_clips(per_speaker=10, exclude=items)         # the clips a speaker's vector averages
    long = corpus.longform("en", max_seconds=300)                       # a long text of a dev speaker

Every choice is deterministic (clips ordered by a hash of their id and ``seed``), so two runs speak the same
sentences with the same prompts. Items are spread evenly over the speakers of a language; each item's prompt is
a *different* 3-15 s clip of the same speaker (same language when there is one, never a clip of the same
sentence), rotating through that speaker's clips so that one prompt does not stand for the whole speaker.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

DEV_SPLIT = "dev_speakers"
PROMPT_SECONDS = (3.0, 15.0)  # a typical reference clip (issue 15)


class MouthEvalError(ValueError):
    """A corpus or a request that the mouth evaluation cannot be run on."""


@dataclass(frozen=True)
class Clip:
    """One utterance of the corpus: its audio file (absolute), transcript and speaker."""

    id: str
    path: str
    text: str
    lang: str
    speaker: str
    duration: float

    @classmethod
    def from_row(cls, row: dict, root: Path) -> Clip:
        return cls(row["id"], str(root / row["audio"]), row["text"], row["lang"], row["speaker"],
                   float(row["duration"]))


@dataclass(frozen=True)
class CloneItem:
    """A sentence to speak (``target``: its source recording) cloning the voice of ``prompt``."""

    target: Clip
    prompt: Clip


@dataclass(frozen=True)
class LongText:
    """A long text of one speaker (the corpus's long-form item, cut at a sentence end) and its source audio."""

    id: str
    path: str
    text: str
    lang: str
    speaker: str
    seconds: float  # length of the source audio that speaks ``text``
    sentences: int


class DevCorpus:
    """The utterances and long-form items of held-out speakers in a corpus manifest (``mgm-omni data build``)."""

    def __init__(self, clips: list[Clip], longforms: list[dict], root: Path, seed: int = 0) -> None:
        if not clips:
            raise MouthEvalError("the manifest has no utterances of the requested split")
        self.seed, self.root = seed, root
        self.clips = sorted(clips, key=self._order)
        self.longforms = longforms

    @classmethod
    def read(cls, manifest: str | os.PathLike, split: str = DEV_SPLIT, seed: int = 0) -> DevCorpus:
        """The clips of ``split`` in ``manifest`` (paths taken relative to its folder)."""
        path = Path(manifest)
        if not path.is_file():
            raise MouthEvalError(f"corpus manifest not found: {path}")
        clips, longforms = [], []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MouthEvalError(f"{path}:{n}: not JSON ({exc})") from None
                if row.get("split") != split:
                    continue
                if row.get("kind", "utterance") == "longform":
                    longforms.append(row)
                else:
                    clips.append(Clip.from_row(row, path.parent))
        return cls(clips, longforms, path.parent, seed)

    def _order(self, clip: Clip) -> tuple[int, str]:
        return zlib.crc32(f"{self.seed}:{clip.id}".encode()), clip.id

    def speakers(self, lang: str | None = None) -> list[str]:
        return sorted({c.speaker for c in self.clips if lang is None or c.lang == lang})

    def clone_items(self, counts: dict[str, int], min_seconds: float = 1.5,
                    max_seconds: float = 12.0) -> list[CloneItem]:
        """``counts[lang]`` items per language, round-robin over that language's speakers."""
        items: list[CloneItem] = []
        for lang, count in counts.items():
            if count < 0:
                raise MouthEvalError(f"item count for {lang!r} must be >= 0, got {count}")
            if count == 0:
                continue
            speakers = self.speakers(lang)
            if not speakers:
                raise MouthEvalError(f"no {lang!r} clips in the dev split")
            targets = {s: [c for c in self.clips if c.speaker == s and c.lang == lang
                           and min_seconds <= c.duration <= max_seconds] for s in speakers}
            prompts = {s: self.prompts(s, lang) for s in speakers}
            picked, turn = 0, defaultdict(int)
            while picked < count:
                progressed = False
                for s in speakers:
                    if picked == count:
                        break
                    item = self._next_item(targets[s], prompts[s], turn, s)
                    if item is not None:
                        items.append(item)
                        picked, progressed = picked + 1, True
                if not progressed:
                    raise MouthEvalError(f"only {picked} {lang!r} items with a 3-15 s prompt of the same speaker "
                                         f"exist in the dev split, {count} asked")
        return items

    def prompts(self, speaker: str, lang: str) -> list[Clip]:
        """The speaker's 3-15 s clips, in ``lang`` where there are any."""
        lo, hi = PROMPT_SECONDS
        mine = [c for c in self.clips if c.speaker == speaker and lo <= c.duration <= hi]
        same = [c for c in mine if c.lang == lang]
        return same or mine

    @staticmethod
    def _next_item(targets: list[Clip], prompts: list[Clip], turn: dict, speaker: str) -> CloneItem | None:
        while targets:
            target = targets.pop(0)
            usable = [p for p in prompts if p.id != target.id and p.text != target.text]
            if usable:
                prompt = usable[turn[speaker] % len(usable)]
                turn[speaker] += 1
                return CloneItem(target, prompt)
        return None

    def speaker_clips(self, per_speaker: int, exclude: list[CloneItem] = (),
                      min_seconds: float = 2.0) -> dict[str, list[Clip]]:
        """Up to ``per_speaker`` clips of every dev speaker (any language), none of them a target of ``exclude``:
        a speaker's identity for the cloning test is the mean of their embeddings."""
        taken = {i.target.id for i in exclude}
        out: dict[str, list[Clip]] = {}
        for s in self.speakers():
            mine = [c for c in self.clips if c.speaker == s and c.id not in taken and c.duration >= min_seconds]
            out[s] = mine[:per_speaker]
        return out

    def longform(self, lang: str = "en", speaker: str | None = None, max_seconds: float = 300.0) -> LongText:
        """The long-form text of the split in ``lang`` (of ``speaker``, if given), cut after the last sentence
        that its source recording finishes within ``max_seconds``."""
        rows = [r for r in self.longforms if r["lang"] == lang and (speaker is None or r["speaker"] == speaker)]
        if not rows:
            raise MouthEvalError(f"no {lang!r} long-form item{f' of {speaker}' if speaker else ''} in the dev split")
        row = sorted(rows, key=lambda r: -float(r["duration"]))[0]
        segments = row.get("segments") or []
        if segments:
            kept = [s for s in segments if float(s["end"]) <= max_seconds] or segments[:1]
            joiner = "" if lang == "zh" else " "
            text, seconds = joiner.join(s["text"].strip() for s in kept), float(kept[-1]["end"])
        else:
            kept, text, seconds = [row], row["text"], float(row["duration"])
        return LongText(row["id"], str(self.root / row["audio"]), text, lang, row["speaker"], seconds, len(kept))
