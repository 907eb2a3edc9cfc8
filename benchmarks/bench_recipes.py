"""Training throughput of every recipe on this CPU, tiny and small configs: samples/s and audio-seconds/s.

    .venv/bin/python benchmarks/bench_recipes.py [--steps 6] [--threads 1] [--only flow,speechlm_stage1]

Each recipe runs in this process on a synthetic corpus (``mgm_omni.training.synthetic_corpus``: tones, character
text, 25 Hz units; 4 speakers x 6 utterances + 1 long-form item), through its real command line
(``recipes/<stage>.py --config recipes/configs/<stage>_{tiny,small}.yaml`` plus overrides: a temporary
``out_dir``, ``--steps`` steps, no loader workers, and the character tokenizer's 102 text ids where the
config names a real tokenizer). Data preparation runs first and is not timed. The first step is warm-up;
throughput is items (and seconds of audio trained on) over the wall time of the other steps. Audio seconds:
SpeechLM, the target speech the labels teach; flow, the mel windows; MLLM, the audio windows given to the
projector; speech tokenizer, the clips tokenised (extraction) and the frames per k-means step.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import describe_cpu
from mgm_omni.audio import load_audio
from mgm_omni.training.config import read_yaml
from mgm_omni.training.flow_data import write_flow_items
from mgm_omni.training.speechlm_rows import read_jsonl
from mgm_omni.training.synthetic_corpus import write_char_tokenizer, write_synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
TEXT_SIZE = 102  # the character tokenizer


class SpeakerStub:
    """Stands in for resemblyzer (its x-vectors do not change training speed; its first call costs 6 s)."""

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(wave16k.abs().mean() * 1e4) % 97)
        return torch.nn.functional.normalize(torch.randn(256, generator=g), dim=0)


def recipe(stage: str):
    return runpy.run_path(str(ROOT / "recipes" / f"{stage}.py"), run_name=f"bench_{stage}")["main"]


def throughput(history: list[dict]) -> tuple[float, float, float]:
    """(median step s, samples/s, audio-s/s) over all steps but the first."""
    timed = history[1:] or history
    seconds = sum(h["seconds"] for h in timed)
    return (statistics.median(h["seconds"] for h in timed), sum(h["items"] for h in timed) / seconds,
            sum(h["audio_s"] for h in timed) / seconds)


def speechlm_overrides(size: str, corpus: Path) -> list[str]:
    out = [f"data.shards={corpus / f'rows_{size}'}", f"data.manifests=[{corpus / 'corpus' / 'manifest.jsonl'}]",
           f"data.text_frontend={corpus / 'tok'}", "data.pairs=[]", "data.sentence_min_text=20", "data.max_text=40"]
    if size == "small":
        cfg = read_yaml(CONFIGS / "speechlm_stage1_small.yaml", "model")["config"]
        out += [f"model.config.tokenizer_text_size={TEXT_SIZE}",
                f"model.config.vocab_size={TEXT_SIZE + cfg['speech_token_count'] * cfg['tokenizer_speech_size']}"]
    return out


def run_recipes(stages: list[str], corpus: Path, steps: int) -> list[tuple]:
    rows = []
    manifest = corpus / "corpus" / "manifest.jsonl"
    for stage in stages:
        for size in ("tiny", "small"):
            config = CONFIGS / f"{stage}_{size}.yaml"
            common = ["--config", str(config), f"train.out_dir={corpus / 'runs' / f'{stage}_{size}'}",
                      f"train.max_steps={steps}", "train.warmup_steps=0", "train.loader.num_workers=0",
                      "train.ckpt_every=100000"]
            if stage.startswith("speechlm"):
                extra = []
                if stage.endswith("2") and size == "small":  # stage 2 starts from a model dir; here a fresh one
                    extra += ["model.init=null", "model.config=" + _flow_map(read_yaml(
                        CONFIGS / "speechlm_stage1_small.yaml", "model")["config"])]
                extra += speechlm_overrides(size, corpus)
            elif stage == "flow":
                items = corpus / "flow_items"
                if not (items / "index.json").is_file():
                    write_flow_items(items, [str(manifest)], [str(corpus / "corpus" / "units")], ["train"],
                                     speaker_encoder=SpeakerStub())
                extra = [f"data.shards={items}"]
            else:  # mllm
                extra = [f"data.items={corpus / f'mllm_items_{size}'}", f"data.manifests=[{manifest}]",
                         f"data.tokenizer={corpus / 'tok'}", f"model.config.vocab_size={TEXT_SIZE}"]
            recipe(stage)(common + extra + ["train.max_steps=1"])  # prepare the data, warm the caches
            configured = read_yaml(config, "train").get("precision", "bf16")
            for precision in (["fp32", "bf16"] if size == "small" else [configured]):
                out = corpus / "runs" / f"{stage}_{size}_{precision}"
                res = recipe(stage)(common + extra + [f"train.out_dir={out}", f"train.precision={precision}"])
                params = sum(p.numel() for p in {id(p): p for p in res.model.parameters()}.values())
                rows.append((stage, size, params, precision, *throughput(res.history)))
                print(f"{stage:16s} {size:5s} {params / 1e6:7.2f} M  {precision:4s}  {rows[-1][4]:8.3f} s/step  "
                      f"{rows[-1][5]:8.2f} samples/s  {rows[-1][6]:8.2f} audio-s/s", file=sys.stderr)
    return rows


def _flow_map(d: dict) -> str:
    """A YAML flow mapping of a plain dict (for a ``key=value`` override)."""
    import yaml

    return yaml.safe_dump(d, default_flow_style=True, width=10_000).strip()


def bench_tokenizer(corpus: Path, steps: int) -> list[tuple]:
    from mgm_omni.training.kmeans import lloyd_step

    rows = []
    manifest = corpus / "corpus" / "manifest.jsonl"
    waves = [load_audio(manifest.parent / r["audio"], sample_rate=16000)[0] for r in read_jsonl(manifest)]
    audio_s = sum(len(w) for w in waves) / 16000
    for size, extra in (("tiny", []), ("small", ["tokenizer.encoder=whisper-base", "tokenizer.num_units=64"])):
        config = CONFIGS / ("speech_tokenizer_tiny.yaml" if size == "tiny" else "speech_tokenizer.yaml")
        res = recipe("speech_tokenizer")(["--config", str(config), f"data.manifests=[{manifest}]",
                                          f"tokenizer.output={corpus / f'units_{size}.safetensors'}",
                                          f"data.units_dir=units_{size}", "tokenizer.iterations=1", *extra])
        tok = res.model
        tok(waves[0])  # warm-up
        t0 = time.perf_counter()
        feats = [tok.standardise(tok.features(w)) for w in waves]
        extract = time.perf_counter() - t0
        x = torch.cat(feats)
        c = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: tok.cfg.num_units]]
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            c, _ = lloyd_step(x, c)
            times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in tok.encoder.parameters())
        rows.append(("speech_tokenizer", size, params, "fp32", statistics.median(times), len(waves) / extract,
                     audio_s / extract))
        print(f"speech_tokenizer {size:5s} {params / 1e6:7.2f} M  extraction {len(waves) / extract:8.2f} clips/s "
              f"{audio_s / extract:8.2f} audio-s/s; k-means step ({len(x)} frames, K={tok.cfg.num_units}) "
              f"{statistics.median(times) * 1e3:.1f} ms", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="speech_tokenizer,flow,speechlm_stage1,speechlm_stage2,mllm_stage1,mllm_stage2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stages = args.only.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp)
        write_char_tokenizer(corpus / "tok")
        write_synthetic_corpus(corpus / "corpus", speakers=4, items_per_speaker=6, longform_per_speaker=1)
        rows = bench_tokenizer(corpus, args.steps) if "speech_tokenizer" in stages else []
        rows += run_recipes([s for s in stages if s != "speech_tokenizer"], corpus, args.steps)
    print(f"\nCPU: {describe_cpu()}; torch {torch.__version__}, {args.threads} thread(s)")
    print("| recipe | config | params | precision | step (median) | samples/s | audio-s/s | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    fp32 = {(r[0], r[1]): r[5] for r in rows if r[3] == "fp32"}
    for stage, size, params, precision, step, sps, aps in rows:
        step_txt = f"{step * 1e3:.1f} ms" + (" (k-means)" if stage == "speech_tokenizer" else "")
        ratio = f"{sps / fp32[stage, size]:.2f}x" if precision != "fp32" and (stage, size) in fp32 else ""
        print(f"| {stage} | {size} | {params / 1e6:.2f} M | {precision} | {step_txt} | {sps:.2f} | {aps:.2f} "
              f"| {ratio} |")


if __name__ == "__main__":
    main()
