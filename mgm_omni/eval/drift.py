"""Long-form drift: judge WER and speaker similarity minute by minute through one long file.

Per-minute WER needs to know which reference words fall into which minute. The judge's segments carry times,
so every hypothesis token gets the time of its segment's midpoint; one jiwer alignment of the whole file then
places each hit, substitution and insertion at its hypothesis token's minute, and each deletion at the minute
of the hypothesis token before it (or after it; with no hypothesis at all, at its position along the
reference). Per-minute similarity embeds each minute of audio (at least ``MIN_WINDOW_SECONDS``) against the
reference voice, or against the first minute when there is no reference (then it measures self-consistency).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mgm_omni.eval.judges import SAMPLE_RATE, Segment
from mgm_omni.eval.metrics import cosine_similarity
from mgm_omni.eval.normalize import ZH_DIGITS_OFFICIAL, normalize_text
from mgm_omni.eval.similarity import embed_long

MINUTE = 60.0
MIN_WINDOW_SECONDS = 1.0


def _timed_tokens(segments: list[Segment], language: str, zh_digits: str) -> tuple[list[str], list[float]]:
    tokens, times = [], []
    for seg in segments:
        words = normalize_text(seg.text, language, zh_digits).split()
        tokens += words
        times += [(seg.start + seg.end) / 2] * len(words)
    return tokens, times


def minute_wer(
    reference: str,
    segments: list[Segment],
    duration: float,
    language: str,
    zh_digits: str = ZH_DIGITS_OFFICIAL,
) -> dict:
    """Errors and reference words per minute for a normalised ``reference`` and timed judge ``segments``.

    Returns ``{"minutes", "errors", "ref_words", "wer"}`` lists (``wer`` is None for a minute with no
    reference words); the totals equal the whole-file alignment's.
    """
    import jiwer

    n_min = max(1, math.ceil(duration / MINUTE))
    ref = reference.split()
    errors, words = [0] * n_min, [0] * n_min
    tokens, times = _timed_tokens(segments, language, zh_digits)

    def slot(t: float) -> int:
        return min(n_min - 1, max(0, int(t // MINUTE)))

    if not ref:
        raise ValueError("minute_wer needs a non-empty reference")
    if not tokens:
        for i in range(len(ref)):
            m = slot(i / len(ref) * duration)
            errors[m] += 1
            words[m] += 1
    else:
        chunks = jiwer.process_words(" ".join(ref), " ".join(tokens)).alignments[0]
        for c in chunks:
            if c.type in ("equal", "substitute"):
                for k in range(c.ref_end_idx - c.ref_start_idx):
                    m = slot(times[c.hyp_start_idx + k])
                    words[m] += 1
                    errors[m] += c.type == "substitute"
            elif c.type == "insert":
                for k in range(c.hyp_start_idx, c.hyp_end_idx):
                    errors[slot(times[k])] += 1
            else:  # delete: anchor at the neighbouring hypothesis token
                anchor = (
                    times[c.hyp_start_idx - 1]
                    if c.hyp_start_idx > 0
                    else times[min(c.hyp_start_idx, len(times) - 1)]
                )
                m = slot(anchor)
                n = c.ref_end_idx - c.ref_start_idx
                words[m] += n
                errors[m] += n
    return {
        "minutes": list(range(n_min)),
        "errors": errors,
        "ref_words": words,
        "wer": [e / w if w else None for e, w in zip(errors, words, strict=True)],
    }


def minute_similarity(encoder, wave16k: np.ndarray, reference_embedding: torch.Tensor | None = None) -> dict:
    """Cosine of each minute's speaker embedding with the reference (or with the first minute)."""
    wave = np.asarray(wave16k, dtype=np.float32).reshape(-1)
    size = int(MINUTE * SAMPLE_RATE)
    embs = []
    for start in range(0, max(1, wave.shape[0]), size):
        piece = wave[start : start + size]
        if piece.shape[0] < MIN_WINDOW_SECONDS * SAMPLE_RATE and embs:
            break  # a short tail: too little speech for a stable embedding
        try:
            embs.append(embed_long(encoder, torch.from_numpy(piece.copy())).numpy())
        except ValueError:
            embs.append(None)
    anchor = reference_embedding.numpy() if reference_embedding is not None else embs[0]
    sims = [cosine_similarity(e, anchor) if e is not None and anchor is not None else None for e in embs]
    return {"sim": sims, "sim_reference": "reference" if reference_embedding is not None else "first_minute"}
