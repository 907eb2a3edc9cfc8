"""The default brain's LLM (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF from the ``brain`` extra) on this CPU.

Joins and converts the GGUF into the cache on first use, then, in one process:

1. checks the tokenizer built from the GGUF metadata against the package's Qwen tokenizer (same ids);
2. answers a few questions greedily through our MLLM runner (``MGMOmni.from_llm`` + ``MLLM``), printing the
   answers and decode tokens/s;
3. runs the same prompts through ``transformers``' ``Qwen2ForCausalLM.generate`` on the same converted weights
   (greedy, KV cache) as the baseline: the ids must agree, and the speed is printed as a ratio.

Usage: ``.venv/bin/python benchmarks/bench_brain_llm.py [--dtype float32|bfloat16] [--max-new-tokens 48]``
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
from mgm_omni.generation.mllm.runner import MLLM, TextDecodeConfig  # noqa: E402
from mgm_omni.generation.sampling import SamplingConfig  # noqa: E402
from mgm_omni.hub.default_llm import default_llm_dir  # noqa: E402
from mgm_omni.models.omni_lm import MGMOmni  # noqa: E402
from mgm_omni.text import Tokenizer  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Write a Python function that returns the square of a number.",
             "法国的首都是哪里？"]
TOKENIZER_PROBES = ["Hello, world! 2024 is a year.", "def f(x):\n    return x ** 2\n", "法国的首都是巴黎。",
                    "<|im_start|>user\nhi<|im_end|>\n"]


def check_tokenizer(tok: Tokenizer) -> None:
    from mgm_omni.hub.tiny_mouth import qwen_tokenizer_json

    qwen = Tokenizer.from_dir(qwen_tokenizer_json().parent)
    for text in TOKENIZER_PROBES:
        a, b = tok.encode(text), qwen.encode(text)
        assert a == b, f"GGUF tokenizer differs from the Qwen tokenizer on {text!r}: {a} vs {b}"
    print(f"tokenizer: GGUF metadata == package Qwen tokenizer on {len(TOKENIZER_PROBES)} probes")


def ours(mllm: MLLM, question: str, max_new: int) -> tuple[str, list[int], float, int]:
    prompt = mllm.prompt([("user", question)])
    config = TextDecodeConfig(SamplingConfig(temperature=0.0), max_new_tokens=max_new)
    first, ids, text = None, [], []
    for step in mllm.stream(prompt, config):
        if first is None:
            first = time.perf_counter()
        text.append(step.text)
        if step.finish_reason != "eos":
            ids.append(step.token)
    end = time.perf_counter()
    steps = len(ids) + (0 if len(ids) == max_new else 1)  # the eos step was decoded too
    return "".join(text), ids, (end - first) / max(1, steps - 1), prompt.length


def baseline(hf, mllm: MLLM, question: str, max_new: int) -> tuple[list[int], float]:
    ids = torch.tensor([mllm.prompt_ids([("user", question)])])
    with torch.inference_mode():
        start = time.perf_counter()
        hf.generate(ids, max_new_tokens=1, do_sample=False)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = hf.generate(ids, max_new_tokens=max_new, do_sample=False, eos_token_id=list(mllm.stop_ids))
        total = time.perf_counter() - start
    new = out[0, ids.shape[1]:].tolist()
    new = [t for t in new if t not in mllm.stop_ids]
    return new, (total - prefill) / max(1, out.shape[1] - ids.shape[1] - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    root = default_llm_dir()
    print(f"converted LLM: {root} ({time.perf_counter() - start:.1f} s)")
    tok = Tokenizer.from_dir(root)
    check_tokenizer(tok)
    start = time.perf_counter()
    model = MGMOmni.from_llm(root, dtype=dtype)
    print(f"loaded through MGMOmni.from_llm in {time.perf_counter() - start:.1f} s ({args.dtype}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")
    mllm = MLLM(model, tok, stop_ids=[tok.eos_token_id, tok.pad_token_id])
    hf = None
    if not args.no_baseline:
        import transformers

        hf = transformers.Qwen2ForCausalLM.from_pretrained(str(root), dtype=dtype).eval()
    print(f"CPU: {describe_cpu()}; {args.threads} thread(s)")
    for q in QUESTIONS:
        text, ids, step_s, n_prompt = ours(mllm, q, args.max_new_tokens)
        line = f"ours {1 / step_s:.1f} tok/s"
        if hf is not None:
            ref, ref_step = baseline(hf, mllm, q, args.max_new_tokens)
            line += f"; transformers {1 / ref_step:.1f} tok/s (ours {ref_step / step_s:.2f}x); " \
                    f"greedy ids {'EQUAL' if ref == ids else 'DIFFER'} ({len(ids)} vs {len(ref)})"
        print(f"\nQ: {q}  [{n_prompt} prompt tokens]\nA: {text.strip()}\n{line}")


if __name__ == "__main__":
    main()
