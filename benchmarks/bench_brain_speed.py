"""Default brain transcription speed: real-time factor and first-token latency at 1 and 2 threads (same process).

Two inputs, cut from the hour file of ``bench_brain_hour.py build`` (dev-speaker English, 0.3-0.7 s pauses):
a short clip (its first sentence, one padded window) and ``--seconds`` of it (default 120: four segments of
at most 30 s, cut at pauses, one prompt each). Per thread count: the time to the first text step (encode
the first segment + prefill + one step), the whole transcript's wall time as a real-time factor
(wall / audio seconds), decode steps per second, and the same transcript again with one prompt for the whole
audio (``segment_seconds=inf``, the official brains' way) for the cost of segmenting. Ratios are against
1 thread in the same process; the CPU is named (``_machine.describe_cpu``).

    .venv/bin/python benchmarks/bench_brain_speed.py [--seconds 120] [--threads 1 2] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe_cpu  # noqa: E402
from mgm_omni.audio import load_audio  # noqa: E402
from mgm_omni.generation.mllm.transcriber import TranscribeConfig, Transcriber  # noqa: E402

HOUR = ROOT / "outputs" / "brain_hour" / "hour65.wav"


def timed(transcriber: Transcriber, wave: torch.Tensor) -> dict:
    t0 = time.perf_counter()
    first, pieces, steps = None, [], 0
    for step in transcriber.stream(wave, "en"):
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(step.text)
        steps += 1
    wall = time.perf_counter() - t0
    audio_s = wave.shape[0] / 16000
    last = transcriber.last
    return {"audio_s": round(audio_s, 2), "segments": last.segments, "text_tokens": last.text_tokens,
            "first_token_s": round(first or wall, 3), "wall_s": round(wall, 2), "rtf": round(wall / audio_s, 3),
            "steps_per_s": round(steps / max(1e-9, wall - (first or 0.0)), 2),
            "text": "".join(pieces).strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio", type=Path, default=HOUR, help="a long 16 kHz file (default: the hour file)")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-one-prompt", action="store_true", help="skip the one-prompt comparison")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.audio.is_file():
        raise SystemExit(f"{args.audio} not found: run `benchmarks/bench_brain_hour.py build` first")
    ref = args.audio.with_suffix(".json")
    first_end = json.loads(ref.read_text())["segments"][0]["end"] if ref.is_file() else 5.0
    wave, _ = load_audio(args.audio, sample_rate=16000, channel=0, max_seconds=None)
    wave = wave.float().flatten()
    short, long = wave[: int((first_end + 0.2) * 16000)].clone(), wave[: int(args.seconds * 16000)].clone()
    del wave
    from mgm_omni.hub.default_brain import default_brain_dir

    torch.set_num_threads(args.threads[0])
    t = time.perf_counter()
    segmented = Transcriber.from_pretrained(default_brain_dir(progress=False), dtype=torch.bfloat16)
    load_s = time.perf_counter() - t
    one_prompt = Transcriber(segmented.mllm, replace(TranscribeConfig(), segment_seconds=float("inf")))
    report = {"cpu": describe_cpu(), "torch": torch.__version__, "load_s": round(load_s, 1), "runs": {}}
    print(f"CPU: {report['cpu']}; torch {torch.__version__}; brain loaded in {load_s:.1f} s")
    for n in args.threads:
        torch.set_num_threads(n)
        segmented.transcribe(short[:16000])  # warm-up: first-call allocations, kernels
        run = {"short": timed(segmented, short), "long": timed(segmented, long)}
        if not args.no_one_prompt:
            run["long_one_prompt"] = timed(one_prompt, long)
        report["runs"][n] = run
        for name, r in run.items():
            print(f"{n} thread(s) {name:16s} " + json.dumps({k: v for k, v in r.items() if k != "text"}))
    base = report["runs"][args.threads[0]]
    report["ratios_vs_first"] = {
        n: {name: {"first_token": round(base[name]["first_token_s"] / r["first_token_s"], 2),
                   "rtf": round(base[name]["rtf"] / r["rtf"], 2)} for name, r in run.items()}
        for n, run in report["runs"].items()}
    print("speed-up vs", args.threads[0], "thread(s):", json.dumps(report["ratios_vs_first"]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
