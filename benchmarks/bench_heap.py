"""Heap trimming (``mgm_omni/generation/heap.py``) on a real long run: the same ``mgm-omni`` command in child processes
without it (``MGM_OMNI_HEAP_TRIM_SECONDS=0``) and as shipped, alternated; prints each run's CPU seconds and peak
RSS, and the ratios shipped / off (CPU time, not wall: fair on a shared machine).

    .venv/bin/python benchmarks/bench_heap.py                       # tts, 600 rows (96 s of speech), own-small
    .venv/bin/python benchmarks/bench_heap.py --rounds 2 -- chat -m "Tell me a long story." --max-rows 3750
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import describe_cpu

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "README.md"


def run_once(cmd: list[str], every_s: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MGM_OMNI_HEAP_TRIM_SECONDS", None)
    if every_s is not None:
        env["MGM_OMNI_HEAP_TRIM_SECONDS"] = every_s
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    err = child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{err[-2000:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "sys_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_heap.json")
    ap.add_argument("command", nargs="*", help="mgm-omni arguments (after --); default: tts of the README")
    args = ap.parse_args()
    wav = ROOT / "outputs" / "bench_heap.wav"
    rest = args.command or ["tts", "--text-file", str(TEXT), "--max-rows", str(args.rows), "--out", str(wav)]
    if args.command and "--out" not in rest and rest[0] in ("tts", "chat"):
        rest += ["--out", str(wav)]
    cmd = [str(ROOT / ".venv" / "bin" / "mgm-omni"), *rest, "--threads", "1"]
    print(f"CPU: {describe_cpu()}; 1 thread; nice {os.nice(0)}\n$ {' '.join(cmd)}", flush=True)
    runs = {"off": [], "shipped": []}
    for _ in range(args.rounds):
        for name, every_s in (("off", "0"), ("shipped", None)):
            r = run_once(cmd, every_s)
            runs[name].append(r)
            print(f"{name:8s} cpu {r['cpu_s']:7.1f} s (sys {r['sys_s']:5.1f})  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"wall {r['wall_s']:6.1f} s", flush=True)
    best = {k: {m: min(r[m] for r in v) for m in ("cpu_s", "peak_rss_mb")} for k, v in runs.items()}
    ratio = {m: best["shipped"][m] / best["off"][m] for m in ("cpu_s", "peak_rss_mb")}
    print(f"shipped / off (best of {args.rounds}): CPU time {ratio['cpu_s']:.3f}x, peak RSS "
          f"{ratio['peak_rss_mb']:.3f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": describe_cpu(), "command": cmd, "runs": runs, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
