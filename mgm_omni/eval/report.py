"""Human-readable outputs: the markdown table of a run, the side-by-side table of several systems, plots.

Plots are PNGs drawn with matplotlib's Agg backend (no display needed): ``drift.png`` (judge WER and speaker
similarity per minute, one line per split) and ``latency.png`` (first-packet latency distribution, p50/p95).
"""

from __future__ import annotations

import json
from pathlib import Path

from mgm_omni.eval.summary import read_official_report


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _num(x, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown_summary(summary: dict) -> str:
    """One row per split: items, failures, corpus WER/CER (%), capped WER, loop flags, SIM, RTF, latency."""
    lines = [
        f"# mgm-omni eval: {summary.get('task', 'tts')} on {summary.get('data_path')}",
        "",
        "| split | items | scored | failed | WER/CER % | capped % | loops | SIM | RTF "
        "| first packet p50 / p95 s | judge |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["splits"].items():
        fp = s.get("first_packet_seconds") or {}
        lines.append(
            f"| {name} | {s['n_items']} | {s['n_scored']} | {s['n_failed']} | {_pct(s['wer'])} | "
            f"{_pct(s['wer_capped'])} | {s['n_loop_flagged']} | {_num(s['speaker_similarity']['mean'])} | "
            f"{_num((s.get('rtf') or {}).get('rtf'))} | {_num(fp.get('p50'))} / {_num(fp.get('p95'))} | "
            f"{', '.join(s['judges']) or '–'} |"
        )
    problems = [(n, s) for n, s in summary["splits"].items() if s["state"] != "ok"]
    if problems:
        lines += ["", "## Problems", ""]
        for name, s in problems:
            if s.get("error"):
                lines.append(f"- **{name}**: {s['error']}")
            elif s["state"] == "empty":
                lines.append(f"- **{name}**: the split is empty")
            counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v and k != "ok")
            if counts:
                lines.append(f"- **{name}**: {counts}")
            lines += [f"  - {f}" for f in s["failures"][:20]]
            lines += [f"  - {note}" for note in s.get("notes", [])[:20]]
            if s.get("n_unknown_files"):
                lines.append(
                    f"- **{name}**: {s['n_unknown_files']} audio files with ids not in the split (skipped)"
                )
    lines += [
        "",
        "WER/CER is the word-count-weighted corpus score over scored items (the official Long-TTS-Eval "
        "aggregation); 'capped' caps each item's errors at its reference length; 'loops' counts hypotheses "
        "over twice the reference length. Judges differ from the official ones unless named so.",
    ]
    return "\n".join(lines) + "\n"


def load_system(path: Path) -> dict:
    """A system's split scores from ``eval/summary.json``, else from official ``wer_<split>.json`` files."""
    summary_path = path / "eval" / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    splits = {}
    for f in sorted(path.glob("wer_*.json")):
        tail = read_official_report(f)
        splits[f.stem[4:]] = {
            "wer": tail["wer"],
            "n_scored": tail["size"],
            "speaker_similarity": {"mean": None},
            "rtf": {},
            "first_packet_seconds": {},
            "judges": ["official report"],
        }
    if not splits:
        raise FileNotFoundError(f"{path}: no eval/summary.json and no wer_<split>.json to compare")
    return {"splits": splits}


def markdown_comparison(systems: dict[str, dict]) -> str:
    """Systems as rows, splits as WER/CER % columns, then mean SIM, RTF and first-packet p50/p95 where
    known."""
    split_names: list[str] = []
    for s in systems.values():
        split_names += [n for n in s["splits"] if n not in split_names]
    head = (
        "| system | "
        + " | ".join(f"{n} WER %" for n in split_names)
        + " | SIM | RTF | first packet p50 / p95 s |"
    )
    lines = [head, "|" + "---|" * (len(split_names) + 4)]
    for name, s in systems.items():
        cells = [_pct(s["splits"][n]["wer"]) if n in s["splits"] else "–" for n in split_names]
        sims = [
            v["speaker_similarity"].get("mean")
            for v in s["splits"].values()
            if (v.get("speaker_similarity") or {}).get("mean") is not None
        ]
        rtfs = [
            v["rtf"].get("rtf") for v in s["splits"].values() if (v.get("rtf") or {}).get("rtf") is not None
        ]
        p50 = [
            v["first_packet_seconds"].get("p50")
            for v in s["splits"].values()
            if (v.get("first_packet_seconds") or {}).get("p50") is not None
        ]
        p95 = [
            v["first_packet_seconds"].get("p95")
            for v in s["splits"].values()
            if (v.get("first_packet_seconds") or {}).get("p95") is not None
        ]
        avg = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {_num(avg(sims))} | {_num(avg(rtfs))} | {_num(avg(p50))} / {_num(avg(p95))} |"
        )
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_drift(summary: dict, out: Path) -> Path | None:
    """Per-minute WER (%) and similarity per split; None when no split has drift data."""
    series = {n: s["drift"] for n, s in summary["splits"].items() if s.get("drift")}
    if not series:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    has_sim = any(any(v is not None for v in d["sim"]) for d in series.values())
    fig, axes = plt.subplots(2 if has_sim else 1, 1, figsize=(7, 6 if has_sim else 3.5), squeeze=False)
    for name, d in series.items():
        xs = [m + 1 for m, w in zip(d["minutes"], d["wer"], strict=True) if w is not None]
        axes[0][0].plot(xs, [100 * w for w in d["wer"] if w is not None], marker="o", label=name)
        if has_sim:
            pts = [(m + 1, v) for m, v in zip(d["minutes"], d["sim"], strict=False) if v is not None]
            axes[1][0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    axes[0][0].set_ylabel("judge WER/CER %")
    axes[0][0].set_title("Long-form drift per minute")
    if has_sim:
        axes[1][0].set_ylabel("speaker similarity")
    axes[-1][0].set_xlabel("minute")
    for ax in axes[:, 0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_latency(first_packets: dict[str, list[float]], out: Path) -> Path | None:
    """Histogram of first-packet latency per split with p50 and p95 marked; None without data."""
    import numpy as np

    data = {k: v for k, v in first_packets.items() if v}
    if not data:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, vals in data.items():
        ax.hist(vals, bins=min(30, max(5, len(vals))), alpha=0.5, label=name)
        for q, style in ((50, "--"), (95, ":")):
            ax.axvline(float(np.percentile(vals, q)), linestyle=style, color="k", linewidth=1)
    ax.set_xlabel("first-packet latency (s); dashed p50, dotted p95")
    ax.set_ylabel("items")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
