"""Load on `mgm-omni serve` (tiny model, a real server process on 127.0.0.1): concurrent streaming clients,
time to first audio, integrity of every response, and server memory over many sequential requests.

    .venv/bin/python benchmarks/bench_serving.py [--clients 16] [--seconds 60] [--sequential 500] [--max-rows 24]

* load: ``--clients`` threads each stream ``/v1/audio/speech`` (pcm) in a loop for ``--seconds``; every
  response must equal, byte for byte, the audio of a solo request of the same text (greedy decoding and
  per-request vocoder noise make it batch-independent), so a lost, cut or garbled response is counted;
  time to first audio = request sent -> first audio byte received (p50/p95); the batch sizes the engine
  formed are read from ``/health``.
* memory: ``--sequential`` requests one after another; the server's RSS (``/proc/PID/status``) is
  sampled every 50 requests (the growth after the first 100 is what matters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from _machine import describe_cpu

TEXTS = ["Hello there, this is a load test.", "A second sentence, a little longer than the first one.",
         "Short one.", "Numbers like 42 and 7 are read aloud.", "The last text of the rotation."]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(args, port: int, cache: str) -> subprocess.Popen:
    env = {**os.environ, "MGM_OMNI_CACHE": cache, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "mgm_omni.cli", "serve", "--port", str(port), "--model", "tiny-random",
           "--temperature", "0", "--max-rows", str(args.max_rows), "--max-batch", str(args.clients),
           "--max-queue", str(4 * args.clients), "--voices-dir", tempfile.mkdtemp(), "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def load_test(url: str, args) -> None:
    with httpx.Client(base_url=url, timeout=300) as c:
        expected = {t: c.post("/v1/audio/speech", json={"input": t, "response_format": "pcm"}).content for t in TEXTS}
    stop_at = time.monotonic() + args.seconds
    ttfa, totals, errors, mismatches, audio_bytes = [], [], [], [], [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        i = k
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.monotonic() < stop_at:
                text = TEXTS[i % len(TEXTS)]
                i += 1
                t0 = time.perf_counter()
                first, parts = None, []
                try:
                    with c.stream("POST", "/v1/audio/speech",
                                  json={"input": text, "response_format": "pcm", "stream": True}) as r:
                        if r.status_code != 200:
                            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
                        for part in r.iter_raw():
                            if part and first is None:
                                first = time.perf_counter() - t0
                            parts.append(part)
                except Exception as exc:  # counted, never hidden
                    with lock:
                        errors.append(repr(exc)[:200])
                    continue
                body = b"".join(parts)
                with lock:
                    totals.append(time.perf_counter() - t0)
                    ttfa.append(first if first is not None else float("nan"))
                    audio_bytes[0] += len(body)
                    if body != expected[text]:
                        mismatches.append(text)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    health = httpx.get(f"{url}/health").json()
    audio_s = audio_bytes[0] / 2 / 24000
    print(f"load: {args.clients} streaming clients for {args.seconds} s (ran {wall:.1f} s): {len(totals)} responses, "
          f"{len(errors)} errors, {len(mismatches)} differing from the solo audio")
    if ttfa:
        print(f"  time to first audio: p50 {pct(ttfa, 50):.2f} s, p95 {pct(ttfa, 95):.2f} s, max {max(ttfa):.2f} s")
        print(f"  request time: p50 {pct(totals, 50):.2f} s, p95 {pct(totals, 95):.2f} s; "
              f"{audio_s:.1f} s of audio in {wall:.1f} s = {audio_s / wall:.2f} s of audio per second "
              f"(aggregate RTF {wall / audio_s:.2f})")
    print(f"  decode batches formed, size: count (incl. the {len(TEXTS)} solo warm-up requests): "
          f"{health['batch_size_counts']}")
    for e in errors[:5]:
        print("  error:", e)


def memory_test(url: str, pid: int, n: int) -> None:
    samples = []
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as c:
        for i in range(n):
            r = c.post("/v1/audio/speech", json={"input": TEXTS[i % len(TEXTS)], "response_format": "wav"})
            if r.status_code != 200:
                print(f"  request {i}: HTTP {r.status_code}")
            if i % 50 == 0 or i == n - 1:
                samples.append((i + 1, rss_mb(pid)))
    took = time.perf_counter() - t0
    print(f"memory: {n} sequential requests in {took:.0f} s; server RSS (MB) by request: "
          + ", ".join(f"{i}: {m:.0f}" for i, m in samples))
    after_warmup = [m for i, m in samples if i > 100]
    if after_warmup:
        print(f"  growth after request 100: {after_warmup[-1] - after_warmup[0]:+.1f} MB "
              f"(min {min(after_warmup):.0f}, max {max(after_warmup):.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--sequential", type=int, default=500)
    ap.add_argument("--max-rows", type=int, default=24)
    ap.add_argument("--memory-max-rows", type=int, default=8, help="max rows of the memory-test server")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from mgm_omni.serving.server import free_port

    cache = os.environ.get("MGM_OMNI_CACHE") or tempfile.mkdtemp()
    port = free_port()
    proc = start_server(args, port, cache)
    url = f"http://127.0.0.1:{port}"
    print(f"CPU: {describe_cpu()}")
    try:
        print(f"server pid {proc.pid}, RSS {rss_mb(proc.pid):.0f} MB after start; tiny model, max_rows "
              f"{args.max_rows}, greedy, {args.threads} torch thread(s)")
        if args.clients and args.seconds:
            load_test(url, args)
    finally:
        proc.terminate()
        proc.wait(30)
    if args.sequential:  # a fresh server with short replies, so 500 requests take minutes, not an hour
        args.max_rows = args.memory_max_rows
        port = free_port()
        proc = start_server(args, port, cache)
        try:
            print(f"memory server pid {proc.pid}, max_rows {args.max_rows}, RSS {rss_mb(proc.pid):.0f} MB after start")
            memory_test(f"http://127.0.0.1:{port}", proc.pid, args.sequential)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
