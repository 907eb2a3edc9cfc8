"""Long-form token-to-wave: compute seconds per audio minute and peak RSS at 1, 5, 10, 30 minutes.

    .venv/bin/python benchmarks/bench_longform.py [--sizes tiny full] [--minutes 1 5 10 30] [--threads 1]
        [--left-chunks 8] [--cache-dtype float16] [--rerender] [--max-hop 200] [--out-dir DIR]

Random 25 Hz speech tokens arrive in SpeechLM rows of 4 and stream through flow + HiFT (random
weights; ``tiny`` = the built-in tiny decoder, ``full`` = the CosyVoice2-0.5B shapes). The audio goes
to a WAV file written as it is produced (``--out-dir``) or is dropped, so nothing grows with the
length but the renderer itself. For every minute of audio the script records the render seconds
spent on it; at each mark it prints that minute's cost and the peak RSS so far, both as ratios to
minute 1 (and RSS also to minute 5). Compute seconds are the process's CPU seconds (user + system;
with one thread that is the work done, unaffected by other load on a shared machine); wall seconds
are printed beside them. ``--rerender`` runs the previous mechanism (the whole held
context re-rendered at every hop) for comparison; it is quadratic, so keep it short.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_token2wav import make_renderer  # noqa: E402

from mgm_omni.hub.tiny_mouth import builtin_voice  # noqa: E402
from mgm_omni.generation.wave.token2wav import StreamSchedule  # noqa: E402

TOKENS_PER_MINUTE = 25 * 60


def cpu_name() -> str:
    model, flags = platform.processor() or "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
                                 if f in have)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores; {flags or 'no AVX2'})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(size: str, minutes: list[int], schedule: StreamSchedule, out: Path | None, seed: int = 0) -> list[dict]:
    t2w = make_renderer(size)
    prompt = builtin_voice()
    total_tokens = max(minutes) * TOKENS_PER_MINUTE
    gen = torch.Generator().manual_seed(seed)
    writer = None
    if out is not None:
        from mgm_omni.generation.wave.writer import StreamingWavWriter

        writer = StreamingWavWriter(out, 24000)
    state = t2w.start(prompt, schedule, seed=seed)
    samples_per_minute = 24000 * 60
    spent, wall, marks, emitted, minute_start, wall_start = 0.0, 0.0, [], 0, 0.0, 0.0
    per_minute: list[float] = []

    def take(chunks):
        nonlocal emitted, minute_start, wall_start
        for chunk in chunks:
            if writer is not None:
                writer.write(chunk)
            emitted += chunk.shape[0]
        while emitted >= (len(per_minute) + 1) * samples_per_minute:
            per_minute.append(spent - minute_start)
            minute_wall, minute_start, wall_start = wall - wall_start, spent, wall
            m = len(per_minute)
            if m in minutes:
                held = state.flow.held_positions if state.flow is not None else -1
                marks.append({"minute": m, "cost": per_minute[-1], "wall": minute_wall, "rss": peak_rss_mb(),
                              "held": held})
                print(f"  [{size}] minute {m}: {per_minute[-1]:.1f} CPU s ({minute_wall:.1f} wall s), "
                      f"peak RSS {peak_rss_mb():.0f} MB", flush=True)

    for row in range(0, total_tokens, 4):
        toks = torch.randint(0, 6561, (4,), generator=gen).tolist()
        t0, w0 = time.process_time(), time.perf_counter()
        chunks = t2w.push(state, toks)
        spent += time.process_time() - t0
        wall += time.perf_counter() - w0
        take(chunks)
    t0, w0 = time.process_time(), time.perf_counter()
    tail = t2w.flush(state)
    spent += time.process_time() - t0
    wall += time.perf_counter() - w0
    take([tail])
    if writer is not None:
        writer.close()
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    ap.add_argument("--minutes", nargs="+", type=int, default=[1, 5, 10, 30])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--left-chunks", type=int, default=StreamSchedule().left_chunks)
    ap.add_argument("--max-hop", type=int, default=StreamSchedule().max_hop)
    ap.add_argument("--cache-dtype", default=StreamSchedule().cache_dtype, choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--rerender", action="store_true", help="the previous re-render mechanism instead")
    ap.add_argument("--out-dir", type=Path, default=None, help="write each run's audio to a WAV file here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    minutes = sorted(set(args.minutes))
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {args.threads} thread(s)")
    schedule = StreamSchedule(cached=not args.rerender, left_chunks=args.left_chunks, max_hop=args.max_hop,
                              cache_dtype=args.cache_dtype)
    mode = "re-render" if args.rerender else f"cached flow, left_chunks={args.left_chunks}, keys in {args.cache_dtype}"
    print(f"mode: {mode}, max_hop {args.max_hop} tokens")
    for size in args.sizes:
        out = args.out_dir / f"longform_{size}.wav" if args.out_dir else None
        marks = run(size, minutes, schedule, out)
        base = marks[0]
        five = next((m for m in marks if m["minute"] == 5), None)
        print(f"\n{size}: minute | CPU s for that audio minute | x minute 1 | wall s | peak RSS MB | x minute 1"
              f"{' | x minute 5' if five else ''} | flow frames held")
        for m in marks:
            r5 = f" | {m['rss'] / five['rss']:.2f}" if five and m["minute"] >= 5 else (" | -" if five else "")
            print(f"  {m['minute']:>4} | {m['cost']:8.2f} | {m['cost'] / base['cost']:5.2f} | {m['wall']:7.1f} | "
                  f"{m['rss']:7.0f} | {m['rss'] / base['rss']:5.2f}{r5} | {m['held']}")
        print()


if __name__ == "__main__":
    main()
