"""What stage 1 of the default brain costs on this CPU (1 thread): the towers per audio second, and per training
item the projector step with (a) cross-entropy through the frozen Qwen2.5-Coder-0.5B and (b) the alignment loss
of spec §5 alone. Ratios are against (a) in fp32 in the same process.

Items are shaped as the recipe crops them: "utterance" = 4 s (20 audio tokens) with 12 transcript tokens,
"run" = 20 s (100 tokens) with 60 transcript tokens; the prompt is the transcription prompt (about 26 ids).

Usage: ``nice -n 5 .venv/bin/python benchmarks/bench_brain_train.py [--reps 3] [--batch 1 4]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe_cpu  # noqa: E402
from mgm_omni.config import OmniConfig  # noqa: E402
from mgm_omni.generation.mllm.runner import MLLM  # noqa: E402
from mgm_omni.generation.mllm.transcriber import TRANSCRIBE_PROMPT  # noqa: E402
from mgm_omni.hub.default_brain import brain_fields, brain_parts  # noqa: E402
from mgm_omni.models.omni_lm import MGMOmni  # noqa: E402
from mgm_omni.text import Tokenizer, mllm_user_content  # noqa: E402
from mgm_omni.training.align_loss import AlignConfig  # noqa: E402
from recipes.brain_default import ProjectorOnLLM, align_loss, ce_loss, new_projector  # noqa: E402
from recipes.brain_default_features import encode_window  # noqa: E402

ALIGN = AlignConfig(weight=1.0, temperature=0.1)
SHAPES = {"utterance": (20, 12, 4.0), "run": (100, 60, 20.0)}  # audio tokens, text tokens, seconds


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def batch_of(b: int, n_tok: int, n_text: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"main": torch.randn(b, 5 * n_tok, 512, generator=g), "aux": torch.randn(b, 10 * n_tok, 384, generator=g),
            "n_tok": torch.full((b,), n_tok), "text": torch.randint(100, 20000, (b, n_text), generator=g),
            "text_len": torch.full((b,), n_text)}


def step(model, loss_fn, batch) -> None:
    model.projector.zero_grad(set_to_none=True)
    loss, _ = loss_fn(model, batch)
    loss.backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, 1 thread")
    parts = brain_parts(progress=False)
    wave = 0.1 * torch.randn(480000)
    for dtype in (torch.float32, torch.bfloat16):
        tower = parts.tower(dtype)
        t_main = timed(lambda: tower.speech_tower(torch.zeros(1, 80, 3000, dtype=dtype)), args.reps)
        t_aux = timed(lambda: tower.speech_tower_aux(torch.zeros(1, 80, 3000, dtype=dtype)), args.reps)
        t_all = timed(lambda: encode_window(tower, wave), args.reps)
        print(f"towers {str(dtype)[6:]}: Whisper-base main {t_main:.2f} s + tiny.en aux {t_aux:.2f} s per 30 s window; "
              f"mel + both {t_all:.2f} s = {t_all / 30 * 1000:.0f} ms per audio second")
    import json

    cfg = OmniConfig.from_dict(brain_fields(json.loads((parts.llm_dir / "config.json").read_text())))
    tok = Tokenizer.from_dir(parts.llm_dir)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        llm = MGMOmni.from_llm(parts.llm_dir, dtype=dtype)
        prompt = MLLM(llm, tok).prompt_ids([("user", mllm_user_content(TRANSCRIBE_PROMPT, speech=True))])
        model = ProjectorOnLLM(new_projector(cfg, 0), llm, prompt, tok.eos_token_id)
        for shape, (n_tok, n_text, seconds) in SHAPES.items():
            for b in args.batch:
                batch = batch_of(b, n_tok, n_text)
                ce = timed(lambda: step(model, ce_loss, batch), args.reps) / b
                results[(str(dtype)[6:], shape, b, "ce")] = ce
                if dtype == torch.float32:
                    al = timed(lambda: step(model, lambda m, x: align_loss(m, x, ALIGN), batch), args.reps) / b
                    results[("float32", shape, b, "align")] = al
        llm = model = None  # free the fp32 copy before the bf16 one loads
    print(f"\nper item (projector forward + backward), prompt {len(prompt)} ids:")
    for (dtype, shape, b, kind), t in results.items():
        base = results[("float32", shape, b, "ce")]
        seconds = SHAPES[shape][2]
        print(f"  {kind:5s} {dtype:8s} {shape:9s} batch {b}: {t:7.3f} s/item = {1 / t:7.2f} items/s, "
              f"{seconds / t:7.1f} audio s per s; x{base / t:.1f} vs CE fp32")


if __name__ == "__main__":
    main()
