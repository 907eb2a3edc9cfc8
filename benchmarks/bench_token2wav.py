"""Real-time factor of flow + HiFT (offline and streaming) and first-packet latency, random weights.

    .venv/bin/python benchmarks/bench_token2wav.py [--sizes tiny full] [--seconds 10 60] [--threads 1]

RTF = processing seconds / audio seconds (lower is better). The first packet is the time from the
first token to the first audio chunk of the streaming path (tokens arriving instantly, so this is
the render cost of the first hop), reported for our schedule and the official one.
"""

from __future__ import annotations

import argparse
import time

import torch

from _machine import describe_cpu
from mgm_omni.hub.tiny_mouth import COSYVOICE_YAML
from mgm_omni.config.cosyvoice import CosyVoice2Config, read_hyperpyyaml
from mgm_omni.hub.tiny_mouth import builtin_voice
from mgm_omni.generation.wave.token2wav import StreamSchedule, Token2Wav
from mgm_omni.generation.wave.assets import build_flow, build_hift

FULL_YAML_NOTE = "full = the CosyVoice2-0.5B flow (112.5 M params) and HiFT (20.8 M params) shapes"


def make_renderer(size: str) -> Token2Wav:
    if size == "tiny":
        import tempfile
        from pathlib import Path

        path = Path(tempfile.mkdtemp()) / "cosyvoice2.yaml"
        path.write_text(COSYVOICE_YAML)
        cfg = CosyVoice2Config.from_dict(read_hyperpyyaml(path))
    else:
        cfg = CosyVoice2Config.from_dict(read_hyperpyyaml(_full_yaml()))
    flow, hift = build_flow(cfg).eval(), build_hift(cfg).eval()
    with torch.no_grad():  # random weights with sane scales (no weight norm folding needed: plain init)
        for module in (flow, hift):
            for p in module.parameters():
                if p.dim() > 1:
                    p.normal_(0, p[0].numel() ** -0.5)
    return Token2Wav(flow, hift)


def _full_yaml():
    import tempfile
    from pathlib import Path

    # the tiny yaml with the release's sizes substituted
    text = (COSYVOICE_YAML.replace("input_size: 64", "input_size: 512").replace("output_size: 64", "output_size: 512")
            .replace("attention_heads: 4", "attention_heads: 8").replace("linear_units: 128", "linear_units: 2048")
            .replace("num_blocks: 2", "num_blocks: 6").replace("channels: [32]", "channels: [256]")
            .replace("attention_head_dim: 16", "attention_head_dim: 64").replace("n_blocks: 1", "n_blocks: 4")
            .replace("num_mid_blocks: 2", "num_mid_blocks: 12").replace("num_heads: 2", "num_heads: 8")
            .replace("base_channels: 32", "base_channels: 512").replace("cond_channels: 32", "cond_channels: 512"))
    path = Path(tempfile.mkdtemp()) / "cosyvoice2.yaml"
    path.write_text(text)
    return path


def bench(size: str, seconds: int, schedules: tuple[str, ...] = ("ours", "official")) -> dict:
    t2w = make_renderer(size)
    prompt = builtin_voice()
    n = seconds * 25
    tokens = torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    out = {"size": size, "audio_s": seconds}
    t0 = time.perf_counter()
    audio = t2w.render(prompt, tokens)
    out["offline_rtf"] = (time.perf_counter() - t0) / (audio.shape[0] / 24000)
    for name, sched in (("ours", StreamSchedule()), ("official", StreamSchedule(official=True))):
        if name not in schedules:
            continue
        state = t2w.start(prompt, sched)
        t0 = time.perf_counter()
        first = None
        total = 0
        for i in range(0, n, 4):
            for chunk in t2w.push(state, tokens[i:i + 4]):
                first = first if first is not None else time.perf_counter() - t0
                total += chunk.shape[0]
        tail = t2w.flush(state)
        total += tail.shape[0]
        first = first if first is not None else time.perf_counter() - t0
        out[f"{name}_stream_rtf"] = (time.perf_counter() - t0) / (total / 24000)
        out[f"{name}_first_packet_s"] = first
        out[f"{name}_first_hop_tokens"] = sched.first(prompt.n_tokens)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "full"])
    parser.add_argument("--seconds", nargs="+", type=int, default=[10, 60])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--schedules", nargs="+", default=["ours", "official"], choices=["ours", "official"],
                        help="streaming schedules to time (the full-size 60 s official run alone takes minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {describe_cpu()}")
    print(f"threads={args.threads}; {FULL_YAML_NOTE}; reference prompt 100 tokens (4 s)")
    for size in args.sizes:
        for seconds in args.seconds:
            r = bench(size, seconds, tuple(args.schedules))
            parts = [f"{size:5s} {seconds:3d} s | offline RTF {r['offline_rtf']:.3f}"]
            for name in args.schedules:
                parts.append(f"{name}: stream RTF {r[f'{name}_stream_rtf']:.3f}, first packet "
                             f"{r[f'{name}_first_packet_s']:.2f} s (hop {r[f'{name}_first_hop_tokens']})")
            if len(args.schedules) == 2:
                parts.append(f"first-packet speed-up x{r['official_first_packet_s'] / r['ours_first_packet_s']:.1f}")
            print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
