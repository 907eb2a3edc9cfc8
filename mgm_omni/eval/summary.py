"""Per-split summaries from per-item records, and the official ``wer_<split>.json`` report.

A summary is a pure function of the records (sorted by id) and the run's settings: no clock times, so a
resumed run and an uninterrupted one write the same summary.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from mgm_omni.eval.metrics import aggregate_wer, latency_stats, real_time_factor
from mgm_omni.eval.scoring import STATUS_OK, STATUSES

OFFICIAL_FIELDS = (
    "audio_path",
    "ground_truth1",
    "ground_truth2",
    "transcription",
    "wer",
    "insertions",
    "deletions",
    "substitutions",
    "wer1",
    "wer2",
    "word_count",
)


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _drift_summary(records: list[dict]) -> dict | None:
    drifts = [r["drift"] for r in records if r.get("drift")]
    if not drifts:
        return None
    n_min = max(len(d["minutes"]) for d in drifts)
    errors, words, count = [0] * n_min, [0] * n_min, [0] * n_min
    sims: list[list[float]] = [[] for _ in range(n_min)]
    for d in drifts:
        for m in range(len(d["minutes"])):
            errors[m] += d["errors"][m]
            words[m] += d["ref_words"][m]
            count[m] += 1
        for m, s in enumerate(d.get("sim") or []):
            if s is not None and m < n_min:
                sims[m].append(s)
    return {
        "minutes": list(range(n_min)),
        "n_items": count,
        "errors": errors,
        "ref_words": words,
        "wer": [e / w if w else None for e, w in zip(errors, words, strict=True)],
        "sim": [float(np.mean(s)) if s else None for s in sims],
    }


def summarize_split(
    name: str,
    records: list[dict],
    *,
    source: str | None = None,
    fmt: str | None = None,
    unknown_files: list[str] | None = None,
    error: str | None = None,
    notes: list[str] | None = None,
) -> dict:
    """Counts per status, the official corpus WER over scored items, guards, similarity, RTF, latency,
    drift."""
    records = sorted(records, key=lambda r: r["id"])
    ok = [r for r in records if r["status"] == STATUS_OK]
    counts = Counter(r["status"] for r in records)
    if error:
        state = "load_error"
    elif not records:
        state = "empty"
    else:
        state = "ok" if len(ok) == len(records) else "partial"
    timings = [r["generation"] for r in records if r.get("generation")]
    sims = [r.get("speaker_similarity") for r in ok if r.get("speaker_similarity") is not None]
    return {
        "split": name,
        "state": state,
        "error": error,
        "source": source,
        "format": fmt,
        "languages": sorted({r["language"] for r in records}),
        "judges": sorted({r["judge"] for r in ok if r.get("judge")}),
        "n_items": len(records),
        "n_scored": len(ok),
        "n_failed": len(records) - len(ok),
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "n_unknown_files": len(unknown_files or []),
        "unknown_files": sorted(unknown_files or []),
        "wer": aggregate_wer(ok),
        "wer_capped": aggregate_wer(ok, "wer_capped"),
        "n_loop_flagged": sum(bool(r.get("loop_flag")) for r in ok),
        "word_count": sum(r["word_count"] for r in ok),
        "speaker_similarity": {
            "encoder": next((r.get("speaker_encoder") for r in ok if r.get("speaker_encoder")), None),
            "n": len(sims),
            "mean": _mean(sims),
        },
        "rtf": real_time_factor(
            [t.get("compute_seconds") for t in timings], [t.get("audio_seconds") for t in timings]
        ),
        "first_packet_seconds": latency_stats([t.get("first_packet_seconds") for t in timings]),
        "n_tts_error": sum(bool(t.get("tts_error")) for t in timings),
        "drift": _drift_summary(ok),
        "notes": list(notes or []),
        "failures": [f"{r['id']}: {r['status']}: {r['error']}" for r in records if r["status"] != STATUS_OK],
    }


def write_official_report(output_dir: Path, split: str, records: list[dict]) -> Path:
    """``<output-dir>/wer_<split>.json``: the official per-file dicts (scored files only) then ``{size,
    wer}``."""
    ok = sorted((r for r in records if r["status"] == STATUS_OK), key=lambda r: r["id"])
    rows = [{k: r[k] for k in OFFICIAL_FIELDS} for r in ok]
    rows.append({"size": len(ok), "wer": aggregate_wer(ok)})
    path = output_dir / f"wer_{split}.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_official_report(path: Path) -> dict:
    """``{size, wer}`` of an official-format ``wer_<split>.json`` (ours or another system's)."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not rows or not {"size", "wer"} <= set(rows[-1]):
        raise ValueError(f"{path} is not an official Long-TTS-Eval report (a list ending in {{size, wer}})")
    return rows[-1]
