"""Recipe: the resynthesis gate of our own mouth's tokens -> wave half, scored by the Whisper-base judge.

    python recipes/mouth_resynth_gate.py --config recipes/configs/mouth_gate.yaml [key=value ...]

Before a SpeechLM is trained on a unit tokenizer, its units must carry the words: a clip cut to units and
rendered back (flow + HiFi-GAN, nothing else) must stay intelligible. For every item of ``splits`` (dev
speakers first; at most ``max_items`` per language, clips of at most ``max_seconds``):

1. source: the judge's transcript of the clip itself;
2. vocoder: HiFi-GAN V1 of the clip's own mel (what the vocoder alone loses);
3. resynthesis: the clip's units -> the flow, prompted by another clip of the same speaker (its units, mel
   and GE2E x-vector, as a voice is made) -> HiFi-GAN;
4. with ``unit_means`` (flow item shards, ``recipes/flow.py``): every unit replaced by its mean training mel
   frame -> HiFi-GAN. No flow at all, so it compares tokenizers before any flow is trained (a crude floor:
   what the units alone say);
5. with ``mu``: the flow encoder's projected mu straight to HiFi-GAN (no ODE). For a flow trained with the
   prior loss (``objective.prior_weight``) mu is on the mel scale: this shows what the condition alone carries.

``flow_overrides`` sets inference keys of the flow config (``n_timesteps``, ``inference_cfg_rate``) without
re-exporting; ``left_chunks`` renders through the cached stream the mouth speaks with (bounded left context)
instead of one pass; ``prompt_tokens`` keeps only the prompt's last N tokens (and their mel); ``langs`` limits the languages (e.g. ``[en]`` for a quick check of a checkpoint); ``reuse``
takes the flow-free columns (source, vocoder, unit means) of an earlier report of the same judge per item.

Scores per language (EN WER, ZH CER), as the evaluation harness scores (``eval.metrics.score_transcript``:
normalised text; errors capped at the reference length): corpus rate = capped errors / reference words.
The gate passes when resynthesis <= ``ratio`` x source for every language. The report (JSON) lists every
item and the totals; ``--limit N`` scores only N items per language (a smoke run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from mgm_omni.audio import HIFIGAN_22K, load_audio, log_mel, resample
from mgm_omni.eval.judges import get_judge, transcribe_long
from mgm_omni.eval.metrics import score_transcript
from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.generation.wave.frame_grid import FrameGrid
from mgm_omni.generation.wave.hifigan_stack import HiFiGANToken2Wav, load_hifigan_vocoder
from mgm_omni.generation.wave.regulated_flow import grid_mel, grid_mu
from mgm_omni.generation.wave.stream_state import StreamSchedule
from mgm_omni.models.flow import CausalFlow
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.generation.wave.own_frontend import load_ge2e, own_prompt
from mgm_omni.models.unit_tokenizer import WhisperUnitTokenizer
from mgm_omni.training.config import from_dict
from mgm_omni.training.speechlm_rows import read_jsonl
from mgm_omni.training.recipe_config import apply_overrides


@dataclass
class GateConfig:
    """Inputs of the gate (paths relative to the working directory)."""

    units: str  # unit_tokenizer.safetensors of recipes/speech_tokenizer.py
    flow: str  # flow export folder of recipes/flow.py (flow_config.json + flow.safetensors)
    manifests: list
    out: str
    ge2e: str | None = None  # a converted ge2e.safetensors folder; default: resemblyzer's pretrained.pt
    unit_means: str | None = None  # flow item shards (units + mel per clip) to average the mel of each unit
    mu: bool = False  # score the flow encoder's mu straight to HiFi-GAN too
    resynthesis: bool = True  # False: no flow rendering (unit means alone; ``flow`` then only gives the vocoder)
    sharpen: float | None = None  # also score resynthesis / mu with each bin's deviations from its mean x this
    flow_overrides: dict = field(default_factory=dict)  # n_timesteps / inference_cfg_rate at inference
    langs: list | None = None  # None: every language of the manifests
    reuse: str | None = None  # an earlier report (same judge): its flow-free columns are taken, not re-judged
    left_chunks: int | None = None  # render through the cached stream with this left context (None: one pass)
    prompt_tokens: int | None = None  # the flow sees only the last N prompt tokens (None: the whole clip)
    splits: list = field(default_factory=lambda: ["dev_speakers", "dev"])
    max_items: int = 20  # per language
    max_seconds: float = 12.0
    min_seconds: float = 1.5
    judge: str = "whisper-base"
    ratio: float = 1.5
    threads: int = 1


INFERENCE_KEYS = ("n_timesteps", "inference_cfg_rate")


def load_gate_flow(folder: str, overrides: dict) -> CausalFlow:
    """The exported flow of ``folder`` with inference keys of its config replaced (checked before loading)."""
    unknown = sorted(set(overrides) - set(INFERENCE_KEYS))
    if unknown:
        raise SystemExit(f"flow_overrides: unknown key(s) {unknown} (known: {list(INFERENCE_KEYS)})")
    raw = json.loads((Path(folder) / "flow_config.json").read_text(encoding="utf-8"))
    flow = CausalFlow(FlowConfig.from_dict({**raw, **overrides}))
    load_into(flow, load_state_dict(Path(folder) / "flow.safetensors"))
    return flow.eval()


FLOW_FREE = ("source", "vocoder", "unit_means")
COLUMNS = ("source", "vocoder", "resynthesis", "mu", "unit_means", "resynthesis_sharp", "mu_sharp")


def sharpen(mel: torch.Tensor, factor: float) -> torch.Tensor:
    """(1, 80, F) log-mel with each bin's deviations from its mean over time scaled by ``factor`` (> 1 undoes
    some of the smoothing a regression to the mean leaves; the bins' means are kept)."""
    centre = mel.mean(-1, keepdim=True)
    return centre + (mel - centre) * factor


def reused_scores(cfg: GateConfig) -> dict[str, dict]:
    """item id -> {column: score} of the flow-free columns of ``cfg.reuse`` (checked: same judge)."""
    if cfg.reuse is None:
        return {}
    old = json.loads(Path(cfg.reuse).read_text(encoding="utf-8"))
    if old["config"].get("judge") != cfg.judge:
        raise SystemExit(f"reuse: {cfg.reuse} was judged by {old['config'].get('judge')!r}, not {cfg.judge!r}")
    columns = FLOW_FREE if old["config"].get("units") == cfg.units else ("source", "vocoder")  # means need the units
    return {r["id"]: {k: r[k] for k in columns if k in r} | {"text": r["text"]} for r in old["items"]}


def speaker_encoder(cfg: GateConfig):
    if cfg.ge2e is not None:
        return load_ge2e(cfg.ge2e)
    import importlib.util

    from mgm_omni.models.ge2e import ge2e_from_resemblyzer

    found = importlib.util.find_spec("resemblyzer")
    if found is None:
        raise SystemExit("no GE2E weights: set ge2e: (a folder with ge2e.safetensors) or install resemblyzer")
    path = Path(list(found.submodule_search_locations)[0]) / "pretrained.pt"
    return ge2e_from_resemblyzer(torch.load(path, map_location="cpu", weights_only=True)["model_state"])


def unit_mean_mels(shards: str, grid: FrameGrid, num_units: int) -> torch.Tensor:
    """(K, 80) mean HiFi-GAN mel frame of each unit over flow items (frames mapped to units by the grid)."""
    from mgm_omni.training.shards import ShardDataset

    sums, counts = torch.zeros(num_units, 80, dtype=torch.float64), torch.zeros(num_units, dtype=torch.float64)
    items = ShardDataset(shards)
    for i in range(len(items)):
        item = items[i]
        units, mel = torch.as_tensor(item["units"]).long(), torch.as_tensor(item["mel"]).double()  # (L,), (F, 80)
        frames = min(mel.shape[0], grid.frames(len(units)))
        owner = units[grid.token_of(torch.arange(frames))]
        sums.index_add_(0, owner, mel[:frames])
        counts.index_add_(0, owner, torch.ones(frames, dtype=torch.float64))
    return (sums / counts.clamp(min=1)[:, None]).float()


def pick_items(cfg: GateConfig) -> list[tuple[dict, dict]]:
    """(item, prompt item of the same speaker) pairs, dev speakers first, per language up to ``max_items``."""
    rows = []
    for manifest in cfg.manifests:
        for row in read_jsonl(manifest):
            if (row.get("split") in cfg.splits and row.get("kind", "utterance") == "utterance"
                    and (cfg.langs is None or row.get("lang") in cfg.langs)):
                rows.append({**row, "path": str(Path(manifest).parent / row["audio"])})
    rows.sort(key=lambda r: (cfg.splits.index(r["split"]), r["id"]))
    by_speaker = defaultdict(list)
    for r in rows:
        by_speaker[r["speaker"]].append(r)
    picked, count = [], defaultdict(int)
    for r in rows:
        if not cfg.min_seconds <= r["duration"] <= cfg.max_seconds or count[r["lang"]] >= cfg.max_items:
            continue
        prompt = next((p for p in by_speaker[r["speaker"]] if p["id"] != r["id"] and 3.0 <= p["duration"] <= 15.0),
                      None)  # a typical 3-15 s reference
        if prompt is not None:
            picked.append((r, prompt))
            count[r["lang"]] += 1
    return picked


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--limit", type=int, default=None, help="items per language (a smoke run)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    raw = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.overrides, sections=False)
    cfg = from_dict(GateConfig, raw)
    if args.limit is not None:
        cfg.max_items = args.limit
    torch.set_num_threads(cfg.threads)

    units = WhisperUnitTokenizer.from_file(cfg.units)
    flow, vocoder = load_gate_flow(cfg.flow, cfg.flow_overrides), load_hifigan_vocoder(cfg.flow)
    grid = FrameGrid.for_rates(22050, 256, 25.0, flow.config.encoder.static_chunk_size)
    t2w, ge2e = HiFiGANToken2Wav(flow, vocoder, grid), speaker_encoder(cfg)
    judge = get_judge(cfg.judge, threads=cfg.threads)
    means = unit_mean_mels(cfg.unit_means, grid, units.cfg.num_units) if cfg.unit_means else None
    known = reused_scores(cfg)
    schedule = StreamSchedule(grid=grid.chunk, lookahead=flow.config.pre_lookahead_len, left_chunks=cfg.left_chunks)

    records, started = [], time.perf_counter()
    for item, prompt_item in pick_items(cfg):
        wave16, _ = load_audio(item["path"], sample_rate=16000)
        prompt = own_prompt(load_audio(prompt_item["path"], sample_rate=16000)[0], units, ge2e, grid)
        if cfg.prompt_tokens is not None and prompt.tokens.shape[1] > cfg.prompt_tokens:
            n = cfg.prompt_tokens  # the last n tokens and the last F(n) frames (at most one frame off the grid)
            prompt = dataclasses.replace(prompt, tokens=prompt.tokens[:, -n:],
                                         mel=prompt.mel[:, -grid.frames(n):].contiguous())
        old = known.get(item["id"], {}) if known.get(item["id"], {}).get("text") == item["text"] else {}
        rec = {"id": item["id"], "speaker": item["speaker"], "lang": item["lang"], "split": item["split"],
               "text": item["text"], "prompt_id": prompt_item["id"], **{k: old[k] for k in FLOW_FREE if k in old}}
        waves = {} if "source" in rec else {"source": wave16}
        if "vocoder" not in rec:
            wave22 = resample(wave16, 16000, 22050)
            with torch.inference_mode():
                waves["vocoder"] = resample(vocoder.vocode(log_mel(wave22, HIFIGAN_22K)[None])[0], 22050, 16000)
        ids = units(wave16)
        if cfg.resynthesis:
            if cfg.left_chunks is None:
                wave = t2w.render(prompt, ids.tolist())
            else:
                wave = t2w.render(prompt, ids.tolist(), block_tokens=0, schedule=schedule)
            waves["resynthesis"] = resample(torch.from_numpy(wave), 22050, 16000)
        if cfg.mu:
            with torch.inference_mode():
                mel = grid_mu(flow, grid, prompt.tokens, ids.tolist())
                waves["mu"] = resample(vocoder.vocode(mel)[0], 22050, 16000)
        if cfg.sharpen is not None:
            with torch.inference_mode():
                mel = grid_mel(flow, grid, prompt.tokens, prompt.mel, prompt.xvector, ids.tolist())
                waves["resynthesis_sharp"] = resample(vocoder.vocode(sharpen(mel, cfg.sharpen))[0], 22050, 16000)
                if cfg.mu:
                    mel = grid_mu(flow, grid, prompt.tokens, ids.tolist())
                    waves["mu_sharp"] = resample(vocoder.vocode(sharpen(mel, cfg.sharpen))[0], 22050, 16000)
        if means is not None and "unit_means" not in rec:
            mel = means[ids[grid.token_of(torch.arange(grid.frames(len(ids))))]].T[None]  # (1, 80, F)
            with torch.inference_mode():
                waves["unit_means"] = resample(vocoder.vocode(mel)[0], 22050, 16000)
        for name, wave in waves.items():
            hyp = transcribe_long(judge, np.asarray(wave, dtype=np.float32), item["lang"]).text
            score = score_transcript(hyp, item["text"], None, item["lang"])
            rec[name] = {"hyp": hyp, "errors": min(score.errors, score.word_count), "words": score.word_count}
        records.append(rec)
        print(f"{rec['id']} [{rec['lang']}] " + " ".join(
            f"{k} {rec[k]['errors']}/{rec[k]['words']}" for k in COLUMNS if k in rec), file=sys.stderr)

    totals = {}
    for lang in sorted({r["lang"] for r in records}):
        mine = [r for r in records if r["lang"] == lang]
        rates = {k: sum(r[k]["errors"] for r in mine) / max(1, sum(r[k]["words"] for r in mine))
                 for k in COLUMNS if k in mine[0]}
        totals[lang] = {**rates, "items": len(mine),
                        "passes": rates.get("resynthesis", float("inf")) <= cfg.ratio * max(rates["source"], 1e-9)}
    report = {"config": raw, "totals": totals, "seconds": round(time.perf_counter() - started, 1),
              "passes": bool(totals) and all(t["passes"] for t in totals.values()), "items": records}
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    r = main()
    for lang, t in r["totals"].items():
        means = f"  mu {t['mu']:.3f}" if "mu" in t else ""
        means += f"  unit means {t['unit_means']:.3f}" if "unit_means" in t else ""
        means += "".join(f"  {k} {t[k]:.3f}" for k in ("resynthesis_sharp", "mu_sharp") if k in t)
        resynth = f"  resynthesis {t['resynthesis']:.3f}" if "resynthesis" in t else ""
        print(f"{lang}: source {t['source']:.3f}  vocoder {t['vocoder']:.3f}{resynth}"
              f"{means}  ({t['items']} items) {'PASS' if t['passes'] else 'FAIL'}", file=sys.stderr)
