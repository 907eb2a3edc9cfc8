"""Long-audio encoding: time and peak memory for 10 min, 1 h and 2 h of (synthetic) 16 kHz audio.

The encoders are a TINY random dual tower (d_model 16, 1 layer each) with the real window geometry
(30 s windows, 128 x 3000 mel, 750 / 1500 encoder frames, k = 5 -> 150 tokens per window), so the run
takes minutes on 2 CPU cores; the point is the memory profile of the windowing loop, not encoder speed. The
projector writes ``--out-dim`` wide tokens (default 896) so the output embeddings are large enough to see.

Each (duration, mode) runs in a fresh subprocess; peak RSS growth is ``ru_maxrss`` after the run minus
``ru_maxrss`` after a one-window warm-up (so it counts every byte the loop allocates beyond one window,
numpy and torch alike). Modes:

* ``stream``: the audio arrives as 10 s chunks generated on the fly (as from a file reader) and its length
  is announced (``n_samples``, as a file header gives it); the waveform is never held whole and the tokens go
  into one preallocated tensor.
* ``stream-unsized``: the same without ``n_samples``: the output blocks are joined at the end (one transient
  second copy of the embeddings).
* ``tensor``: the whole waveform is a tensor filled *before* the baseline (the caller's memory); the loop
  writes into one preallocated output tensor.
* ``official``: the official way, all windows' mel stacked and encoded in one batch (10 min only: it grows
  with the duration).

Usage: ``.venv/bin/python benchmarks/bench_long_audio.py [--durations 600 3600 7200] [--modes ...]``
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe_cpu  # noqa: E402
from mgm_omni.audio import whisper_features  # noqa: E402
from mgm_omni.generation.mllm.long_audio import encode_long_audio  # noqa: E402
from mgm_omni.models.audio_encoder import AudioEncoderConfig, DualAudioTower  # noqa: E402
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig  # noqa: E402

SR = 16000
CHUNK_S = 10


def tiny_models(out_dim: int) -> tuple[DualAudioTower, DualMLPSpeechProjector]:
    torch.manual_seed(0)
    enc = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=128,
               max_source_positions=1500)
    tower = DualAudioTower(AudioEncoderConfig(model_type="qwen2_audio_encoder", **enc),
                           AudioEncoderConfig(model_type="whisper", **enc)).eval()
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=16, aux_dim=16, ds_rate=5, out_dim=out_dim,
                                                        mlp_dim=64)).eval()
    return tower, proj


def chunk(index: int) -> torch.Tensor:
    """10 s of a chirp with noise; deterministic per chunk index."""
    g = torch.Generator().manual_seed(index)
    t = torch.arange(CHUNK_S * SR) / SR
    return 0.3 * torch.sin(2 * math.pi * (100 + 40 * t) * t) + 0.05 * torch.randn(t.shape, generator=g)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(seconds: int, mode: str, out_dim: int, batch_windows: int) -> dict:
    torch.set_num_threads(1)
    tower, proj = tiny_models(out_dim)
    n_chunks = seconds // CHUNK_S
    wave = None
    if mode in ("tensor", "official"):
        # Filled in place: no transient second copy raising the high-water mark before the baseline.
        wave = torch.empty(n_chunks * CHUNK_S * SR)
        for i in range(n_chunks):
            wave[i * CHUNK_S * SR:(i + 1) * CHUNK_S * SR] = chunk(i)
    encode_long_audio(chunk(0), tower, proj)  # warm-up: one window's worth of buffers and kernels
    base = max_rss_mb()
    start = time.perf_counter()
    if mode.startswith("stream"):
        hint = n_chunks * CHUNK_S * SR if mode == "stream" else None
        emb = encode_long_audio((chunk(i) for i in range(n_chunks)), tower, proj, batch_windows=batch_windows,
                                n_samples=hint).embeddings
    elif mode == "tensor":
        emb = encode_long_audio(wave, tower, proj, batch_windows=batch_windows).embeddings
    else:
        with torch.no_grad():
            main, aux = tower(whisper_features(wave))
            emb = proj(main, aux).flatten(0, 1)
    elapsed = time.perf_counter() - start
    growth = max_rss_mb() - base
    emb_mb = emb.numel() * emb.element_size() / 2**20
    return {"seconds": seconds, "mode": mode, "windows": math.ceil(seconds * SR / 480000),
            "tokens": emb.shape[0], "time_s": elapsed, "rtf": elapsed / seconds, "peak_growth_mb": growth,
            "embeddings_mb": emb_mb, "baseline_rss_mb": base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", type=int, nargs="+", default=[600, 3600, 7200], help="seconds of audio")
    ap.add_argument("--modes", nargs="+", default=["stream", "stream-unsized", "tensor", "official"],
                    choices=["stream", "stream-unsized", "tensor", "official"])
    ap.add_argument("--official-max", type=int, default=600, help="longest duration run in 'official' mode")
    ap.add_argument("--out-dim", type=int, default=896)
    ap.add_argument("--batch-windows", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("SECONDS", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.out_dim, args.batch_windows)))
        return
    print(f"CPU: {describe_cpu()}")
    print(f"tiny random dual tower (d_model 16), out_dim {args.out_dim}, batch_windows {args.batch_windows}, "
          f"1 thread")
    print(f"{'audio':>7} {'mode':>14} {'windows':>7} {'tokens':>7} {'time s':>8} {'RTF':>7} "
          f"{'peak +MB':>9} {'emb MB':>7} {'peak-emb':>9}")
    for mode in args.modes:
        for seconds in args.durations:
            if mode == "official" and seconds > args.official_max:
                continue
            cmd = [sys.executable, __file__, "--child", str(seconds), mode, "--out-dim", str(args.out_dim),
                   "--batch-windows", str(args.batch_windows)]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(proc.stdout.splitlines()[-1])
            label = f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"
            print(f"{label:>7} {mode:>14} {r['windows']:>7} {r['tokens']:>7} {r['time_s']:>8.1f} "
                  f"{r['rtf']:>7.4f} "
                  f"{r['peak_growth_mb']:>9.1f} {r['embeddings_mb']:>7.1f} "
                  f"{r['peak_growth_mb'] - r['embeddings_mb']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
