"""SpeechLM decoding speed: k = 4 (Chunk-Based Parallel Decoding) versus k = 1 on the same backbone, and
the decode step against the memory-bandwidth bound.

Random weights, greedy, batch 1, the full engine (state machine, sampling, KV caches) on a 60-row prompt.
Sizes: ``0.6b`` is the Qwen3-0.6B shape of ``MGM-Omni-TTS-0.6B`` (hidden 1024, 28 layers, 16/8 heads,
head_dim 128, adapter ``(6,1024,16_2,3072)``) in bfloat16; ``tiny`` is the golden checkpoint's shape
(hidden 64, 2 + 2 layers) in float32. The k = 1 model shares every backbone/adapter weight of the k = 4
one; only the speech vocabulary (embedding / head rows) is 1 block instead of 4.

Reported per configuration: ms per row (engine, median row interval; k = 4 and k = 1 runs alternate so
both see the same machine load), rows/s, speech tokens/s (k per row), decode wall-clock per second of
audio (ms/row x rows per audio second: 25 / k speech rows + 6 delay/eos/separator rows per ~18 s chunk),
and the ratio k = 1 / k = 4 of the latter (goal >= 3.5). For 0.6b bf16 also: the
pure decode-step time against bytes-per-step / measured read bandwidth.

``--attention manual`` swaps, in this process only, the one-query SDPA call of ``models/layers.py`` for a
grouped matmul-softmax-matmul (the change proposed for that file): CPU SDPA in bfloat16 is slow for one
query (0.25 ms at 75 keys, 17 ms at 4000 keys per call on this machine).

The official-equivalent step (``--proxy``) rebuilds the official step from ``transformers`` (HF Qwen3 backbone
and adapter, full 177,924-row output layer) with the same weights, timed in the same process, so the two
see the same machine load.

``--step`` picks the decode step: ``native`` (the default engine path on CPU: ``generation/native_step.py``,
weights in the model dtype), ``native-int8`` (int8 weights), or ``torch`` (PyTorch ops, oneDNN-packed bf16
weights unless ``--no-pack``). Several may be given; each is timed in the same process.

``--choose`` runs the per-machine step choice (``generation/speech/step_choice.py``, no cache): every
candidate step (native on each instruction set this CPU has, oneDNN-packed torch, plain torch) timed
interleaved on the model's shapes, its logit error against plain torch, the one chosen, and (0.6b)
the chosen step against the memory-bandwidth bound. ``--quantize int8`` chooses among int8 steps.

Usage: ``.venv/bin/python benchmarks/bench_speech_lm.py [--threads 1 2] [--sizes tiny 0.6b] [--rows 60]
[--step native native-int8 torch] [--attention sdpa manual] [--proxy] [--no-pack] [--choose [--quantize int8]]``
"""

from __future__ import annotations

import os

# Sleeping (not spinning) OpenMP workers: on a shared 2-core machine a spinning worker that lost its core
# stalls every parallel region (tiny model at 2 threads: 9.6 ms/row spinning vs 1.4 ms/row passive).
# Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe_cpu  # noqa: E402
from mgm_omni.config import SpeechLMConfig  # noqa: E402
from mgm_omni.text import BPEFrontEnd  # noqa: E402
from mgm_omni.generation.speech.chunked_decode import ChunkedDecoder, DecodeConfig  # noqa: E402
from mgm_omni.generation.speech.cpu_linear import pack_linears, packing_available  # noqa: E402
from mgm_omni.generation.sampling import SamplingConfig  # noqa: E402
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds  # noqa: E402
from mgm_omni.generation.speech.runner import SpeechLMRunner, speech_head  # noqa: E402
from mgm_omni.generation.speech.token_stream import vocoder_tokens  # noqa: E402
from mgm_omni.models import layers  # noqa: E402
from mgm_omni.models.speech_lm import SpeechLM  # noqa: E402

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tts_adapter_config="(2,64,4_2,128)"),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tts_adapter_config="(6,1024,16_2,3072)"),
}
DTYPES = {"tiny": torch.float32, "0.6b": torch.bfloat16}
OFFICIAL = {"tiny": "2.1-3.5 ms/row (fp32)", "0.6b": "77-98 ms/row bf16, 153-163 ms/row fp32"}
TEXT_SIZE, SPEECH_SIZE = 151672, 6563


class ToyTokenizer:
    """Words, with a sentence end every 12th id (id 13 decodes to '.')."""

    pad_token_id, eos_token_id = 151643, 151645

    def decode(self, ids):
        return "".join("." if i == 13 else " w" for i in ids)


def config(size: str, k: int) -> SpeechLMConfig:
    return SpeechLMConfig(vocab_size=TEXT_SIZE + k * SPEECH_SIZE, speech_token_count=k, **SIZES[size])


def build_pair(size: str, dtype: torch.dtype, seed: int = 0) -> dict[int, SpeechLM]:
    """k = 4 and k = 1 models with the same backbone and adapter weights (random)."""
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build (and initialise) directly in the target dtype
    try:
        m4, m1 = SpeechLM(config(size, 4)), SpeechLM(config(size, 1))
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for name, p in m4.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.normal_(0, 0.5)
            else:
                p.normal_(0, p.shape[-1] ** -0.5)
        state = m4.state_dict()
        state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][: TEXT_SIZE + SPEECH_SIZE]
        state.pop("lm_head.weight", None)
        m1.load_state_dict({**state, "lm_head.weight": state["model.embed_tokens.weight"]})
    return {4: m4.eval(), 1: m1.eval()}


def manual_decode_attention():
    """A namespace like torch.nn.functional whose SDPA does one-query attention as grouped matmuls."""

    def sdpa(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False):
        b, h, t, d = q.shape
        if t != 1 or is_causal:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                                  enable_gqa=enable_gqa)
        hk = k.shape[1]
        scores = (q.view(b, hk, h // hk, d) @ k.transpose(-1, -2)) * d ** -0.5  # (B, H_kv, g, T)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        probs = scores.float().softmax(-1).to(v.dtype)
        return (probs @ v).view(b, h, 1, d)

    return types.SimpleNamespace(**{**vars(F), "scaled_dot_product_attention": sdpa})


def engine_run(model: SpeechLM, rows: int, pack: bool, native=None) -> list[float]:
    """Row intervals (s) of one greedy engine decode."""
    k = model.num_slots
    ids = SpecialIds(151643, 151645, TEXT_SIZE - 3, TEXT_SIZE - 2, TEXT_SIZE - 1, SPEECH_SIZE - 2, SPEECH_SIZE - 1)
    prompt = torch.full((60, k + 1), SPEECH_SIZE - 1)
    prompt[:, 0] = torch.arange(1000, 1060)
    buffer = [13 if i % 12 == 11 else 2000 + i for i in range(400)]
    runner = SpeechLMRunner(model, head=speech_head(model, pack), native=native)
    dec = ChunkedDecoder(runner, ids, BPEFrontEnd(ToyTokenizer()),
                         DecodeConfig(sampling=SamplingConfig(temperature=0.0), max_new_rows=rows))
    stamps, out = [], []
    for event in dec.stream([PromptRows(prompt, buffer)]):
        stamps.append(time.perf_counter())
        out.append(event.row)
    assert len(vocoder_tokens(out, ids, 4)) <= k * len(out)
    return [b - a for a, b in zip(stamps, stamps[1:])]  # excludes the prefill


def compare_k(models: dict[int, SpeechLM], rows: int, pack: bool, natives: dict | None = None,
              rounds: int = 3) -> dict[int, dict]:
    """Engine runs of k = 4 and k = 1 alternated in rounds, so both see the same machine load; the median
    row interval is robust to other processes stealing the CPU now and then."""
    intervals: dict[int, list[float]] = {4: [], 1: []}
    for _ in range(rounds):
        for k in (4, 1):
            intervals[k] += engine_run(models[k], max(2, rows // rounds), pack, (natives or {}).get(k))
    out = {}
    for k, ts in intervals.items():
        per_row = statistics.median(ts)
        out[k] = dict(ms_row=per_row * 1e3, rows_s=1 / per_row, tok_s=k / per_row,
                      wall_per_audio_s=per_row * rows_per_audio_second(k))
    return out


def rows_per_audio_second(k: int, delay: int = 4, chunk_seconds: float = 18.0) -> float:
    """Rows to decode per second of audio: 25 / k speech rows, plus each ~18 s chunk's delay rows, closing
    all-eos row and separator (spec §2.3). Random weights never end chunks the trained way, so this is
    counted, not measured."""
    return 25 / k + (delay + 2) / chunk_seconds


def step_time(model: SpeechLM, pack: bool, ctx: int = 60, n: int = 20, native=None) -> tuple[float, float]:
    """Median wall and CPU seconds of a bare decode step (no sampling, no state machine) at ``ctx`` cached
    rows. With one thread on a shared machine the CPU time leaves out the time other processes held the
    core (not their use of the memory bus)."""
    k = model.num_slots
    runner = SpeechLMRunner(model, head=speech_head(model, pack), native=native)
    prompt = torch.full((ctx, k + 1), SPEECH_SIZE - 1)
    prompt[:, 0] = 1000
    runner.start([prompt])
    row = torch.tensor([[13] + [5] * k])
    wall, cpu = [], []
    for i in range(n + 3):
        t, c = time.perf_counter(), time.process_time()
        runner.step(row)
        if i >= 3:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def official_proxy_step_time(model: SpeechLM, ctx: int = 60, n: int = 20) -> tuple[float, float]:
    """Median wall and CPU seconds of the official step's work, rebuilt from ``transformers`` (the official code's
    building blocks) with our weights: HF ``Qwen3Model`` backbone and adapter (SDPA, ``DynamicCache``), the
    5-way mean embedding, the whole 177,924-row ``lm_head`` (the official computes it all and keeps the
    speech rows), argmax on host. It leaves out HF ``generate``'s own per-step overhead, so it flatters
    the official path."""
    from transformers import DynamicCache, Qwen3Config, Qwen3Model

    warnings.filterwarnings("ignore", category=FutureWarning)  # past_key_values naming in transformers 5

    def hf(c, vocab: int) -> Qwen3Model:
        cfg = Qwen3Config(vocab_size=vocab, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, head_dim=c.dim_per_head,
                          rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps,
                          max_position_embeddings=c.max_position_embeddings)
        cfg._attn_implementation = "sdpa"
        return Qwen3Model(cfg)

    dtype = model.lm_head.weight.dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        backbone, adapter = hf(model.cfg, model.cfg.vocab_size), hf(model.tts_adapter.cfg, 8)
    finally:
        torch.set_default_dtype(default)
    state = model.state_dict()
    backbone.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")}, strict=False)
    adapter.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("tts_adapter.")}, strict=False)
    adapter.norm = torch.nn.Identity()  # the official adapter has no final norm
    backbone.eval(), adapter.eval()
    w_full, k, size = model.lm_head.weight, model.num_slots, model.cfg.tokenizer_speech_size
    offsets = model.row_offsets

    @torch.inference_mode()
    def step(rows, c1, c2):
        e = model.model.embed_tokens(rows + offsets).sum(2) / (k + 1)
        h = backbone(inputs_embeds=e, past_key_values=c1, use_cache=True).last_hidden_state
        g = adapter(inputs_embeds=h, past_key_values=c2, use_cache=True).last_hidden_state
        logits = F.linear(g[:, -1], w_full)[..., TEXT_SIZE:].view(-1, k, size).float()
        return logits.argmax(-1).tolist()

    c1, c2 = DynamicCache(), DynamicCache()
    prompt = torch.full((1, ctx, k + 1), SPEECH_SIZE - 1)
    prompt[..., 0] = 1000
    step(prompt, c1, c2)
    row = torch.tensor([[[13] + [5] * k]])
    wall, cpu = [], []
    for i in range(n + 3):
        t, c = time.perf_counter(), time.process_time()
        step(row, c1, c2)
        if i >= 3:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def bytes_per_step(model: SpeechLM, ctx: int, weight_bytes: float | None = None) -> int:
    """Weights a step must read (all linear layers, the speech rows of lm_head, norms) plus the KV cache;
    ``weight_bytes``: bytes per decoder weight (1 for int8; the head stays 2-byte bf16 there)."""
    size = model.lm_head.weight.element_size()
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    if weight_bytes is not None:
        n = int(n * weight_bytes / size)
    n += model.speech_head_weight.numel() + (model.num_slots + 1) * model.cfg.hidden_size
    kv = 0
    for stack in (model.model, model.tts_adapter):
        c = stack.cfg
        kv += ctx * c.num_hidden_layers * 2 * c.num_key_value_heads * c.dim_per_head
    return (n + kv) * size


def read_bandwidth(gbytes: float = 1.0) -> float:
    """GB/s of a streaming read (sum over a large float32 tensor, best of 5)."""
    x = torch.ones(int(gbytes * 1e9 / 4))
    x.sum()
    best = min(_timed(x.sum) for _ in range(5))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build_natives(models: dict[int, SpeechLM], step: str) -> dict[int, object] | None:
    if step == "torch":
        return None
    from mgm_omni.generation.speech.native_step import NativeStep

    return {k: NativeStep(m, "int8" if step == "native-int8" else None) for k, m in models.items()}


def choose(sizes: list[str], threads_list: list[int], quantize: str | None) -> None:
    """Time every candidate decode step as the step choice does; print them, the choice and the bound."""
    from mgm_omni.generation.speech.step_choice import choose_step

    print(f"CPU: {describe_cpu()}")
    for size in sizes:
        dtype = DTYPES[size]
        model = build_pair(size, dtype)[4]
        for threads in threads_list:
            c = choose_step(model, quantize=quantize, threads=threads, use_cache=False, steps=8 if size == "tiny" else 4)
            print(f"\n== {size} ({dtype}{', int8' if quantize else ''}) threads={threads}: candidates")
            for name, ms in sorted(c.timings_ms.items(), key=lambda kv: kv[1]):
                print(f"  {name:22s} {ms:8.2f} ms/step  rel. error vs torch {c.errors[name]:.1e}"
                      f"{'   <- chosen' if name == c.name else ''}")
            if size == "0.6b":
                need = bytes_per_step(model, 64, 1 if quantize == "int8" else None)
                bw = read_bandwidth()
                bound = need / 1e9 / bw * 1e3
                print(f"  a step reads {need / 1e9:.2f} GB; read bandwidth {bw:.1f} GB/s -> bound {bound:.1f} ms; "
                      f"chosen {c.name} = {c.timings_ms[c.name] / bound:.2f}x the bound")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "0.6b"], choices=list(SIZES))
    ap.add_argument("--rows", type=int, default=60, help="rows per 0.6b run (tiny runs 20x as many)")
    ap.add_argument("--step", nargs="+", default=["native", "torch"], choices=["native", "native-int8", "torch"])
    ap.add_argument("--attention", nargs="+", default=["sdpa"], choices=["sdpa", "manual"],
                    help="one-query attention of the torch step")
    ap.add_argument("--proxy", action="store_true",
                    help="also time an official-equivalent step built from transformers (same process)")
    ap.add_argument("--no-pack", action="store_true", help="bf16: plain F.linear instead of packed oneDNN weights")
    ap.add_argument("--choose", action="store_true", help="run the per-machine step choice and print every candidate")
    ap.add_argument("--quantize", choices=["int8"], default=None, help="with --choose: among int8 steps")
    args = ap.parse_args()
    if args.choose:
        choose(args.sizes, args.threads, args.quantize)
        return
    original_f = layers.F
    for size in args.sizes:
        dtype = DTYPES[size]
        t0 = time.perf_counter()
        models = build_pair(size, dtype)
        pack = (dtype == torch.bfloat16 and not args.no_pack and "torch" in args.step
                and packing_available(models[4].lm_head.weight))  # bf16 packing needs AVX-512 / AVX-NE-CONVERT
        if pack:
            for m in models.values():
                pack_linears(m)
        print(f"\n== {size} ({dtype}, built in {time.perf_counter() - t0:.0f} s); official: {OFFICIAL[size]}")
        rows = args.rows * (20 if size == "tiny" else 1)
        proxy_wall: dict[int, float] = {}
        for step_kind in args.step:
            natives = build_natives(models, step_kind)
            for attention in (args.attention if step_kind == "torch" else ["-"]):
                layers.F = manual_decode_attention() if attention == "manual" else original_f
                label = f"step={step_kind}" + (f"{'/packed' if pack else ''} attn={attention}" if step_kind == "torch" else "")
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    res = compare_k(models, rows, pack, natives)
                    for k, r in res.items():
                        print(f"  {label} threads={threads} k={k}: {r['ms_row']:7.2f} ms/row  "
                              f"{r['rows_s']:7.1f} rows/s  {r['tok_s']:7.1f} tokens/s  "
                              f"{r['wall_per_audio_s']:.3f} s per audio s")
                    ratio = res[1]["wall_per_audio_s"] / res[4]["wall_per_audio_s"]
                    print(f"  {label} threads={threads} speed-up k=4 over k=1 per second of audio: "
                          f"{ratio:.2f}x (goal >= 3.5)")
                    native4 = natives[4] if natives else None
                    if args.proxy:
                        if threads not in proxy_wall:
                            proxy = official_proxy_step_time(models[4])
                            proxy_wall[threads] = proxy[0]
                            print(f"  threads={threads} official-equivalent step (transformers, full lm_head): "
                                  f"{proxy[0] * 1e3:.2f} ms (cpu {proxy[1] * 1e3:.2f})")
                        ours = step_time(models[4], pack, native=native4)
                        print(f"  {label} threads={threads} bare step {ours[0] * 1e3:.2f} ms -> official-equivalent "
                              f"/ ours = {proxy_wall[threads] / ours[0]:.2f}x")
                    if size == "0.6b":
                        step, cpu = step_time(models[4], pack, native=native4)
                        need = bytes_per_step(models[4], 60, 1 if step_kind == "native-int8" else None)
                        bw = read_bandwidth()
                        bound = need / 1e9 / bw
                        print(f"  {label} threads={threads} bare step {step * 1e3:.1f} ms (cpu {cpu * 1e3:.1f} ms); "
                              f"a step reads {need / 1e9:.2f} GB; read bandwidth {bw:.1f} GB/s -> "
                              f"bound {bound * 1e3:.1f} ms (step = {step / bound:.2f}x the bound)")
            layers.F = original_f
            del natives
        del models


if __name__ == "__main__":
    main()
