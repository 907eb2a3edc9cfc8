"""The default brain as a transcriber: WER/CER on dev speakers (never trained on) beside Whisper-base on the
same audio, transcription RTF and first-token latency (1 thread).

Items: the corpus's ``dev_speakers`` split (held-out speakers speaking dev/test sentences only), a fixed sample
per language. Both systems are scored as the Whisper-base judge is scored (``mgm_omni.eval``: the judge's
normalisation, English words / Chinese characters, each utterance's errors capped at its reference length, a
corpus score = capped errors / reference tokens). Whisper-base runs as the judge does (faster-whisper, beam 5,
int8). ``--brain tiny-random`` scores the built-in random MLLM instead (the old default).

Usage: ``nice -n 5 .venv/bin/python benchmarks/bench_brain_asr.py --n-en 40 --n-zh 30 [--assets DIR]
[--no-whisper] [--out report.json]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgm_omni.audio import load_audio  # noqa: E402
from mgm_omni.data.manifest import Manifest  # noqa: E402
from mgm_omni.eval.metrics import score_transcript  # noqa: E402
from mgm_omni.generation.mllm.transcriber import Transcriber  # noqa: E402
from _machine import describe_cpu  # noqa: E402


def dev_items(corpus: Path, lang: str, n: int) -> list:
    files = [f for f in [corpus / "manifest.jsonl", *sorted((corpus / "shards").glob("*.jsonl"))] if f.is_file()]
    rows = {r.id: r for f in files for r in Manifest.read(f, partial_tail=True)}.values()
    rows = [r for r in rows if r.split == "dev_speakers" and r.kind == "utterance" and r.lang == lang]
    rows.sort(key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())  # a fixed, speaker-mixed sample
    return rows[:n]


def corpus_score(scores: list) -> float:
    errors = sum(min(s.errors, s.word_count) for s in scores)
    return errors / max(1, sum(s.word_count for s in scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    ap.add_argument("--n-en", type=int, default=40)
    ap.add_argument("--n-zh", type=int, default=30)
    ap.add_argument("--brain", default=None, help="a brain directory, or tiny-random (default: the default brain)")
    ap.add_argument("--assets", type=Path, default=None, help="projector assets to assemble the default brain with")
    ap.add_argument("--no-whisper", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, 1 thread")
    if args.brain == "tiny-random":
        from mgm_omni.hub.tiny_brain import ensure_tiny_omni

        root, dtype = ensure_tiny_omni(), torch.float32
    elif args.brain:
        root, dtype = Path(args.brain), torch.bfloat16
    else:
        from mgm_omni.hub.default_brain import ASSETS, default_brain_dir

        root, dtype = default_brain_dir(assets=args.assets or ASSETS), torch.bfloat16
    t = time.perf_counter()
    transcriber = Transcriber.from_pretrained(root, dtype=dtype)
    print(f"brain {root} loaded in {time.perf_counter() - t:.1f} s")
    judge = None
    if not args.no_whisper:
        from mgm_omni.eval.judges import FasterWhisperJudge

        judge = FasterWhisperJudge(threads=1)
    report = {"cpu": describe_cpu(), "brain": str(root), "languages": {}}
    for lang, n in (("en", args.n_en), ("zh", args.n_zh)):
        items = dev_items(args.corpus, lang, n)
        if not items:
            continue
        ours, whisper, rows = [], [], []
        audio_s = compute_s = 0.0
        first = []
        for row in items:
            wave, _ = load_audio(args.corpus / row.audio, 16000)
            wave = wave.float().flatten()
            t0 = time.perf_counter()
            pieces = []
            for step in transcriber.stream(wave, lang):
                if not pieces:
                    first.append(time.perf_counter() - t0)
                pieces.append(step.text)
            compute_s += time.perf_counter() - t0
            audio_s += wave.shape[0] / 16000
            hyp = "".join(pieces).strip()
            ours.append(score_transcript(hyp, row.text, None, lang))
            rec = {"id": row.id, "speaker": row.speaker, "text": row.text, "brain": hyp}
            if judge is not None:
                ref_hyp = " ".join(s.text for s in judge.transcribe_piece(wave.numpy().astype(np.float32), lang))
                whisper.append(score_transcript(ref_hyp, row.text, None, lang))
                rec["whisper_base"] = ref_hyp
            rows.append(rec)
        unit = "WER" if lang == "en" else "CER"
        summary = {"items": len(items), "speakers": sorted({r.speaker for r in items}),
                   f"brain_{unit}": round(corpus_score(ours), 4),
                   "rtf": round(compute_s / audio_s, 3), "first_token_s_median": round(float(np.median(first)), 3),
                   "audio_s": round(audio_s, 1)}
        if whisper:
            summary[f"whisper_base_{unit}"] = round(corpus_score(whisper), 4)
        report["languages"][lang] = {**summary, "rows": rows}
        print(f"{lang}: {json.dumps(summary)}")
        for rec in rows[:5]:
            print(f"   ref: {rec['text']}\n   brain: {rec['brain']}" +
                  (f"\n   whisper-base: {rec['whisper_base']}" if "whisper_base" in rec else ""))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
