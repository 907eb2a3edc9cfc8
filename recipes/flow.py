"""Recipe: conditional flow matching from speech units to the vocoder's mel (our own mouth's token-to-mel).

    python recipes/flow.py --config recipes/configs/flow_small.yaml
    mgm-omni train flow --config ... [--resume] [section.key=value ...]

1. Read the config: ``train``, ``model`` (a :class:`~mgm_omni.models.flow_config.FlowConfig`: ``vocab_size`` =
   the unit count, ``spk_embed_dim`` = the speaker encoder's width, ``output_size`` = the vocoder's mel bins;
   optional ``init_from``: an exported flow folder whose weights the run starts from, and ``init_parts``: only
   the key prefixes taken from it, e.g. the estimator under a new, wider encoder),
   ``objective`` (window, prompt masking, CFG dropout, chunk-causal attention) and ``data``.
2. Data: shards of (units, mel, x-vector) per clip; written first when missing, from the corpus manifests,
   their unit shards and the audio (mel of ``data.mel``: HiFi-GAN V1 22.05 kHz; x-vector: resemblyzer).
3. Build :class:`~mgm_omni.models.flow.CausalFlow` (seeded) and train it on the CFM loss (cosine t, sigma_min,
   prompt-mel prefix masked out of the loss, classifier-free-guidance dropout of the conditions).
4. Export ``<out_dir>/flow/`` (``flow.safetensors`` with the official ``flow.pt`` key names, ``flow_config.json``).

The shipped flow (``flow_small.yaml``, one torch thread; its header has the whole retrain and gate commands):

    OMP_NUM_THREADS=1 python recipes/flow.py --config recipes/configs/flow_small.yaml
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mgm_omni.checkpoint import load_into, load_state_dict, save_state_dict
from mgm_omni.config import ConfigError
from mgm_omni.models.flow import CausalFlow
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.training.checkpointing import latest_checkpoint
from mgm_omni.training.config import TrainConfig, from_dict
from mgm_omni.training.distributed import barrier, cleanup, init_distributed
from mgm_omni.training.flow_data import FlowCollate, mel_preset, write_flow_items
from mgm_omni.training.flow_objective import FlowObjective, FlowTrainConfig
from mgm_omni.training.recipe_config import load_recipe_config, parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult, fit
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.shards import INDEX, ShardDataset

SECTIONS = ("train", "model", "objective", "data")


@dataclass
class DataSection:
    """Flow item shards at ``shards``; written from ``manifests`` (+ ``units``: default ``<manifest dir>/units``)."""

    shards: str
    manifests: list = field(default_factory=list)
    units: list = field(default_factory=list)
    splits: list = field(default_factory=lambda: ["train"])
    mel: str = "hifigan-22k"
    speaker_encoder: str = "resemblyzer"
    unit_rate: float = 25.0


def flow_items(data: DataSection, is_main: bool) -> ShardDataset:
    out = Path(data.shards)
    if is_main and not (out / INDEX).is_file():
        if not data.manifests:
            raise ConfigError(f"{out}: no flow shards, and no data.manifests to write them from")
        units = data.units or [str(Path(m).parent / "units") for m in data.manifests]
        counts = write_flow_items(out, data.manifests, units, data.splits, mel_preset(data.mel),
                                  data.speaker_encoder, data.unit_rate)
        print(f"flow items written to {out}: {dict(counts)}", file=sys.stderr)
    barrier()
    return ShardDataset(out)


def export_flow(checkpoint: str | Path, flow_cfg: FlowConfig, out: str | Path) -> Path:
    """Write ``out/flow.safetensors`` (official key names) + ``out/flow_config.json`` from a training checkpoint
    (also of a run still going: ``export_flow(latest_checkpoint(out_dir), cfg, dest)`` to gate it)."""
    out = Path(out)
    state = {k[len("flow."):]: v for k, v in load_state_dict(checkpoint).items()}
    save_state_dict(state, out)
    (out / "model.safetensors").replace(out / "flow.safetensors")
    (out / "flow_config.json").write_text(json.dumps(flow_cfg.to_dict(), indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> FitResult:
    args = parse_recipe_args(argv, __doc__.splitlines()[0])
    raw = load_recipe_config(args.config, args.overrides, SECTIONS)
    train = from_dict(TrainConfig, raw["train"])
    init_from = raw["model"].get("init_from")  # an exported flow folder to start from (a second, polishing run)
    init_parts = raw["model"].get("init_parts")  # only these key prefixes from it (e.g. a new, wider encoder)
    flow_cfg = FlowConfig.from_dict({k: v for k, v in raw["model"].items() if k not in ("init_from", "init_parts")})
    objective_cfg = from_dict(FlowTrainConfig, raw["objective"])
    data = from_dict(DataSection, raw["data"])
    info = init_distributed()
    try:
        items = flow_items(data, info.is_main)
        mel = mel_preset(data.mel)
        if flow_cfg.output_size != mel.n_mels:
            raise ConfigError(f"model.output_size {flow_cfg.output_size} != the {mel.n_mels} bins of mel {data.mel!r}")
        seed_everything(train.seed)
        flow = CausalFlow(flow_cfg).train()
        if init_from:  # weights only (a fresh optimiser and schedule); --resume then continues this run
            state = load_state_dict(Path(init_from) / "flow.safetensors")
            if init_parts:  # the named parts from the export, the rest as freshly initialised
                fresh = flow.state_dict()
                state = {k: (state[k] if k.startswith(tuple(init_parts)) else v) for k, v in fresh.items()}
            load_into(flow, state)
        seed_everything(train.seed, info.rank)
        seconds_per_frame = mel.hop_length / mel.sample_rate
        result = fit(
            FlowObjective(flow, objective_cfg), items, items.lengths, FlowCollate(), lambda m, batch: m(batch),
            train, info, resume=args.resume, config=raw, stop_after=args.stop_after,
            batch_stats=lambda b: {"items": len(b["mel"]),  # audio trained on: B windows of the common width
                                   "audio_s": len(b["mel"]) * seconds_per_frame
                                   * min(objective_cfg.segment_frames, int(b["mel_lengths"].min()))},
        )
        if info.is_main and result.state.step >= train.max_steps:
            result.extra["export"] = export_flow(latest_checkpoint(train.out_dir), flow_cfg, Path(train.out_dir) / "flow")
        return result
    finally:
        cleanup()


if __name__ == "__main__":
    print(main().summary(), file=sys.stderr)
