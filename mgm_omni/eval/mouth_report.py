"""The mouth evaluation's headline numbers, its goals (issue 15, "Must show"), and the JSON + markdown report.

Each goal is recorded with its measured value, its bound and whether it is met; a section that was not run
(or could not be scored) has ``met: None``, never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mgm_omni.eval.cloning import cloning_summary
from mgm_omni.eval.metrics import percentile

GOALS = {  # name: (bound, "max" = value at most the bound / "min" = at least)
    "en_wer": (0.20, "max"),
    "zh_cer": (0.30, "max"),
    "cloning_share_own_top": (0.80, "min"),
    "longform_last_over_first_wer": (1.3, "max"),
    "longform_similarity_drop": (0.05, "max"),
    "rtf": (0.3, "max"),
    "first_audio_s": (0.3, "max"),
}


def _rate(records: list[dict], side: str) -> float | None:
    words = sum(r[side]["words"] for r in records)
    return sum(r[side]["errors"] for r in records) / words if words else None


UNINTELLIGIBLE = 0.5  # a first long-form minute at this WER or above leaves no intelligibility to lose


def _goal(value: float | None, name: str, why_not: str | None = None) -> dict:
    """The goal's record; ``why_not``: the value says nothing about the goal (``met`` stays None)."""
    bound, kind = GOALS[name]
    met = None if value is None or why_not else (value <= bound if kind == "max" else value >= bound)
    out = {"value": value, "goal": f"{'<=' if kind == 'max' else '>='} {bound:g}", "met": met}
    return {**out, "note": why_not} if why_not else out


def summarize(report: dict) -> dict:
    """Headline numbers of a report from :class:`~mgm_omni.eval.mouth_eval.MouthEval`, and the goals."""
    items = report.get("items") or []
    intel = {}
    for lang in sorted({r["lang"] for r in items}):
        mine = [r for r in items if r["lang"] == lang]
        intel[lang] = {"items": len(mine), "output": _rate(mine, "output"), "source": _rate(mine, "source"),
                       "loops": sum(r["output"]["loop"] for r in mine),
                       "not_ended": sum(r["timing"]["finish_reason"] != "end" for r in mine),
                       "audio_s_per_item": float(np.mean([r["timing"]["audio_s"] for r in mine])),
                       "per_speaker": {sp: {"items": len(rs), "output": _rate(rs, "output"),
                                            "source": _rate(rs, "source")}
                                       for sp in sorted({r["speaker"] for r in mine})
                                       for rs in [[r for r in mine if r["speaker"] == sp]]}}
    cloning = {"output": cloning_summary([r["identify"] for r in items]),
               "source": cloning_summary([r["identify_source"] for r in items]),
               "mean_cos_prompt": float(np.mean([r["cos_prompt"] for r in items])) if items else None}
    timings = [r["timing"] for r in items]
    audio = sum(t["audio_s"] for t in timings)
    item_speed = {"rtf": sum(t["wall_s"] for t in timings) / audio if audio else None,
                  "first_audio_p50_s": percentile([t["first_audio_s"] for t in timings if not t["cold"]], 50),
                  "first_audio_cold_p50_s": percentile([t["first_audio_s"] for t in timings if t["cold"]], 50)}
    long = report.get("longform")
    longform = None
    if long:
        out, src = long["output"], long["source"]
        longform = {"audio_s": out["seconds"], "finish_reason": long["timing"]["finish_reason"],
                    "rtf": long["timing"]["rtf"],
                    "wer_first": out["first"]["wer"], "wer_last": out["last"]["wer"], "wer_ratio": out["wer_ratio"],
                    "cos_speaker_first": out["first"]["cos_speaker"], "cos_speaker_last": out["last"]["cos_speaker"],
                    "cos_first_last": out["cos_first_last"],
                    "source_wer_first": src["first"]["wer"], "source_wer_last": src["last"]["wer"]}
        if longform["cos_speaker_first"] is not None:
            longform["similarity_drop"] = longform["cos_speaker_first"] - longform["cos_speaker_last"]
    speed = report.get("speed")
    goals = {
        "en_wer": _goal(intel.get("en", {}).get("output"), "en_wer"),
        "zh_cer": _goal(intel.get("zh", {}).get("output"), "zh_cer"),
        "cloning_share_own_top": _goal(cloning["output"]["share_own_top"], "cloning_share_own_top"),
        "longform_last_over_first_wer": _goal(
            longform["wer_ratio"] if longform else None, "longform_last_over_first_wer",
            f"first minute WER {longform['wer_first']:.2f} >= {UNINTELLIGIBLE}: nothing to lose"
            if longform and longform["wer_first"] >= UNINTELLIGIBLE else None),
        "longform_similarity_drop": _goal(abs(longform["similarity_drop"]) if longform and "similarity_drop"
                                          in longform else None, "longform_similarity_drop"),
        "rtf": _goal(speed["rtf"] if speed else None, "rtf"),
        "first_audio_s": _goal(speed["first_audio_s"] if speed else None, "first_audio_s"),
    }
    return {"intelligibility": intel, "cloning": cloning, "item_speed": item_speed, "longform": longform,
            "speed": {k: speed[k] for k in ("threads", "rtf", "first_audio_s", "first_audio_cold_s",
                                            "audio_s_per_run")} if speed else None,
            "goals": goals}


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(report: dict) -> str:
    """The summary as a markdown page (the JSON holds every item)."""
    s, cfg = report["summary"], report["config"]
    lines = [f"# Mouth evaluation: `{cfg['model']}`", "",
             f"CPU: {report.get('cpu', 'unknown')}; {cfg['threads']} threads; judge {report['judge']}; "
             f"speaker encoder {report['encoder']}; sampling T={cfg['temperature']:g}, top-k {cfg['top_k']}, "
             f"seed {cfg['seed']}; run {report['clock']['total_s'] / 60:.1f} min.", "",
             "## Goals (issue 15)", "", "| measure | value | goal | met |", "|---|---|---|---|"]
    for name, g in s["goals"].items():
        met = g.get("note") or ("–" if g["met"] is None else g["met"])
        lines.append(f"| {name} | {_f(g['value'])} | {g['goal']} | {met} |")
    lines += ["", "## Intelligibility (dev speakers, held-out sentences, each cloning another clip)", "",
              "| lang | items | output | source | loops | not ended | audio s/item |", "|---|---|---|---|---|---|---|"]
    for lang, v in s["intelligibility"].items():
        lines.append(f"| {lang} ({'WER' if lang == 'en' else 'CER'}) | {v['items']} | {_f(v['output'])} | "
                     f"{_f(v['source'])} | {v['loops']} | {v['not_ended']} | {_f(v['audio_s_per_item'], 1)} |")
    lines += ["", "Per speaker (output / source): " + "; ".join(
        f"{lang} {sp} {_f(v['output'])} / {_f(v['source'])} ({v['items']})"
        for lang, x in s["intelligibility"].items() for sp, v in x["per_speaker"].items())]
    c = s["cloning"]
    lines += ["", "## Cloning (share of outputs whose own speaker is the most similar)", "",
              "| audio | n | share own top | cos own | cos best other |", "|---|---|---|---|---|"]
    for side in ("output", "source"):
        v = c[side]
        lines.append(f"| {side} | {v['n']} | {_f(v['share_own_top'])} | {_f(v.get('mean_cos_own'))} | "
                     f"{_f(v.get('mean_cos_best_other'))} |")
    per = c["output"].get("per_speaker", {})
    lines += ["", "Per speaker (outputs): " + ", ".join(f"{k} {v['share_own_top']:.2f} ({v['n']})"
                                                      for k, v in per.items()),
              f"Mean cosine to the prompt clip: {_f(c['mean_cos_prompt'])}."]
    lf = s["longform"]
    if lf:
        lines += ["", "## Long form (one call, streamed to a WAV)", "",
                  f"{lf['audio_s']:.0f} s of audio ({lf['finish_reason']}), RTF {lf['rtf']:.2f}.", "",
                  "| window | WER output | WER source | cos to speaker |", "|---|---|---|---|",
                  f"| first | {_f(lf['wer_first'])} | {_f(lf['source_wer_first'])} | {_f(lf['cos_speaker_first'])} |",
                  f"| last | {_f(lf['wer_last'])} | {_f(lf['source_wer_last'])} | {_f(lf['cos_speaker_last'])} |",
                  "", f"Last / first WER {_f(lf['wer_ratio'])}; cosine of the first and last window "
                  f"{_f(lf['cos_first_last'])}."]
    sp, isp = s["speed"], s["item_speed"]
    lines += ["", "## Speed", ""]
    if sp:
        lines.append(f"Paragraph of {sp['audio_s_per_run']:.1f} s at {sp['threads']} threads: RTF {sp['rtf']:.3f}, "
                     f"first audio {_f(sp['first_audio_s'])} s (prompt prefilled), {_f(sp['first_audio_cold_s'])} s "
                     "(the voice's first stream).")
    lines.append(f"Over the items: RTF {_f(isp['rtf'])}, first audio p50 {_f(isp['first_audio_p50_s'])} s "
                 f"(voice reused), {_f(isp['first_audio_cold_p50_s'])} s (new voice).")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str | Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` in the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "report.json", out / "report.md"
    js.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=float) + "\n", encoding="utf-8")
    md.write_text(markdown(report), encoding="utf-8")
    return js, md
