"""Judge WER over the first and the last minute of one long output, without a time alignment of its text.

The judge transcribes each time window; the window's reference is a stretch of the text anchored where the
window is: the first minute must begin with the text's first word, the last minute must end with its last
word. The other end is free within ``slack`` of the expected length (the text's words spread evenly over the
audio), and is put where the edit distance to the transcript is smallest, so a cut through a sentence costs
a word or two, not the whole window. An output that stopped early, skipped, babbled or fell silent still pays
for it: the anchored end must be matched and the span cannot shrink below ``(1 - slack)`` of its expected
length. EN is scored in words, ZH in characters, as the harness normalises them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mgm_omni.eval.metrics import MetricError
from mgm_omni.eval.normalize import normalize_text

ANCHORS = ("start", "end")


def prefix_edit_distances(ref: list[str], hyp: list[str], max_len: int) -> np.ndarray:
    """(max_len + 1,) edit distance between ``hyp`` and every prefix ``ref[:j]``, j = 0..max_len."""
    max_len = min(max_len, len(ref))
    row = np.arange(max_len + 1, dtype=np.int64)  # hyp[:0] against ref[:j]: j deletions
    for i, word in enumerate(hyp, 1):
        new = np.empty_like(row)
        new[0] = i  # hyp[:i] against nothing: i insertions
        for j in range(1, max_len + 1):
            new[j] = min(row[j - 1] + (ref[j - 1] != word), row[j] + 1, new[j - 1] + 1)
        row = new
    return row


def anchored_span(ref: list[str], hyp: list[str], anchor: str, lo: int, hi: int) -> tuple[int, int]:
    """(length, edit distance) of the stretch of ``ref`` starting at its start (``anchor="start"``) or ending
    at its end (``"end"``), of ``lo``..``hi`` tokens, closest to ``hyp``; ties go to the longer stretch."""
    if anchor not in ANCHORS:
        raise MetricError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    lo, hi = max(1, min(lo, len(ref))), min(hi, len(ref))
    if hi < lo:
        raise MetricError(f"no span of {lo}..{hi} tokens in a reference of {len(ref)}")
    if anchor == "end":
        ref, hyp = ref[::-1], hyp[::-1]
    dist = prefix_edit_distances(ref, hyp, hi)
    best = min(range(lo, hi + 1), key=lambda j: (dist[j], -j))
    return best, int(dist[best])


@dataclass(frozen=True)
class WindowScore:
    """One time window: the judge's transcript against its anchored stretch of the text."""

    start: float
    end: float
    anchor: str
    hypothesis: str
    reference: str  # the matched stretch (normalised tokens)
    ref_tokens: int
    errors: int
    expected_tokens: int

    @property
    def wer(self) -> float:
        """Errors capped at the stretch's length, over its length."""
        return min(self.errors, self.ref_tokens) / self.ref_tokens

    def as_dict(self) -> dict:
        return {**asdict(self), "wer": self.wer}


def score_window(hypothesis: str, text: str, lang: str, anchor: str, start: float, end: float,
                 audio_seconds: float, slack: float = 0.3) -> WindowScore:
    """Score the transcript of the window [start, end) of an output of ``audio_seconds`` that speaks ``text``."""
    if not 0 <= slack < 1:
        raise MetricError(f"slack must be in [0, 1), got {slack}")
    if not 0 <= start < end <= audio_seconds + 1e-6:
        raise MetricError(f"window [{start}, {end}) is not inside {audio_seconds} s of audio")
    ref = normalize_text(text, lang).split()
    if not ref:
        raise MetricError("the long-form text is empty after normalisation")
    hyp = normalize_text(hypothesis, lang).split()
    expected = max(1, round(len(ref) * (end - start) / audio_seconds))
    lo, hi = int(np.floor(expected * (1 - slack))), int(np.ceil(expected * (1 + slack)))
    n, errors = anchored_span(ref, hyp, anchor, lo, hi)
    span = ref[:n] if anchor == "start" else ref[len(ref) - n:]
    return WindowScore(start, end, anchor, " ".join(hyp), " ".join(span), n, errors, expected)


def edge_windows(audio_seconds: float, window: float) -> list[tuple[float, float, str]]:
    """The first and the last ``window`` seconds, each with its anchor (they overlap in audio under 2 windows)."""
    if window <= 0 or audio_seconds <= 0:
        raise MetricError(f"window and audio length must be positive, got {window}, {audio_seconds}")
    w = min(window, audio_seconds)
    return [(0.0, w, "start"), (audio_seconds - w, audio_seconds, "end")]
