"""Speed of the shared training loop on this CPU: fp32 vs bf16 autocast, 1 vs 2 threads.

    .venv/bin/python benchmarks/bench_training_loop.py [--steps 8] [--d-model 256] [--layers 2]

Trains a small pre-norm transformer LM (token embedding, ``--layers`` encoder layers, LM head) on synthetic
variable-length sequences through the real pieces: bucketed sampler, DataLoader (no workers), ``train_step``
with AdamW, cosine schedule and clipping. Prints steps/s, samples/s and tokens/s per setting (from the median step time), then the
ratios bf16/fp32 and 2/1 threads, with the CPU line of ``_machine.describe_cpu`` (name, cores, AVX2 / AVX-512 / AMX).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _machine import describe_cpu
from mgm_omni.training.config import LoaderConfig
from mgm_omni.training.loader import PadCollate, build_loader
from mgm_omni.training.loop import TrainState, batch_stream, train_step
from mgm_omni.training.optim import build_optimizer
from mgm_omni.training.sampler import BucketedBatchSampler
from mgm_omni.training.schedule import build_scheduler

VOCAB = 2048


class TinyLM(nn.Module):
    def __init__(self, d_model: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=4 * d_model, dropout=0.1, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # (T, T) True = masked
        h = self.layers(self.embed(ids), mask=causal, src_key_padding_mask=pad_mask)
        return self.head(self.norm(h))  # (B, T, V)


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = batch["ids"]
    pad = torch.arange(ids.shape[1])[None, :] >= batch["ids_lengths"][:, None]  # (B, T) True at padding
    logits = model(ids, pad)
    target = ids[:, 1:].masked_fill(pad[:, 1:], -100)
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target.flatten(), reduction="sum", ignore_index=-100
    )
    return loss, (target != -100).sum()


def measure(precision: str, threads: int, args) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.min_len, args.max_len + 1, size=512)
    data = [{"ids": torch.from_numpy(rng.integers(0, VOCAB, n))} for n in lengths]
    sampler = BucketedBatchSampler(lengths, args.max_tokens, num_buckets=4, seed=0)
    loader = build_loader(data, sampler, PadCollate(), LoaderConfig(num_workers=0))
    model = TinyLM(args.d_model, args.layers)
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.1)
    sched = build_scheduler(opt, "cosine", 2, args.warmup + args.steps)
    state = TrainState()
    stream = batch_stream(loader, sampler, state)

    def step() -> tuple[int, int]:
        micro = [next(stream) for _ in range(args.accum)]
        train_step(model, micro, loss_fn, opt, sched, state, precision=precision, clip_norm=1.0)
        return sum(len(b["ids"]) for b in micro), sum(int(b["ids_lengths"].sum()) for b in micro)

    for _ in range(args.warmup):
        step()
    times, samples, tokens = [], 0, 0
    for _ in range(args.steps):
        start = time.perf_counter()
        s, t = step()
        times.append(time.perf_counter() - start)
        samples, tokens = samples + s, tokens + t
    # The median step time: the cores are shared, and a burst of other work should not set the number.
    per_step = float(np.median(times))
    return {
        "steps/s": 1 / per_step,
        "samples/s": samples / args.steps / per_step,
        "tokens/s": tokens / args.steps / per_step,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed optimiser steps per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1024, help="padded tokens per micro-batch")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    ap.add_argument("--min-len", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    args = ap.parse_args()
    n_params = sum(p.numel() for p in TinyLM(args.d_model, args.layers).parameters())
    print(f"CPU: {describe_cpu()}")
    print(
        f"torch {torch.__version__}; model {n_params / 1e6:.2f} M params; {args.accum} x {args.max_tokens} "
        f"padded tokens per step; {args.steps} timed steps after {args.warmup}"
    )
    results = {}
    for threads in (1, 2):
        for precision in ("fp32", "bf16"):
            r = measure(precision, threads, args)
            results[precision, threads] = r
            print(
                f"{precision} {threads} thread(s): {r['steps/s']:.3f} steps/s  {r['samples/s']:.1f} samples/s  "
                f"{r['tokens/s']:.0f} tokens/s"
            )
    for threads in (1, 2):
        ratio = results["bf16", threads]["steps/s"] / results["fp32", threads]["steps/s"]
        print(f"bf16 / fp32, {threads} thread(s): {ratio:.2f}x")
    for precision in ("fp32", "bf16"):
        ratio = results[precision, 2]["steps/s"] / results[precision, 1]["steps/s"]
        print(f"2 / 1 threads, {precision}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
