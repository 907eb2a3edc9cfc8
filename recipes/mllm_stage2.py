"""Recipe: MLLM stage 2, instruction training: the projector plus the LLM (LoRA, top layers or all) (spec §5).

    python recipes/mllm_stage2.py --config recipes/configs/mllm_stage2_tiny.yaml
    torchrun --nproc_per_node 2 recipes/mllm_stage2.py --config ... train.strategy=ddp
    mgm-omni train mllm_stage2 --config ... [--resume] [section.key=value ...]

1. Read the config: ``train``, ``model`` (normally ``init`` = stage 1's ``<out_dir>/model`` with its towers
   resolvable), ``stage`` (``llm``: ``lora`` with ``lora_rank`` / ``lora_alpha`` / ``lora_targets``, ``layers``
   with ``top_layers``, or ``full``) and ``data`` (instruction JSONL files, transcription manifests, or both).
2. Items: the frozen towers' features of each clip (text-only turns have none), the user turn with its
   ``<speech>`` placeholder, the reply.
3. Build the MLLM; the projector and the chosen LLM weights train, the towers stay frozen.
4. Train on the reply's next-token cross-entropy (audio tokens spliced as at inference).
5. Export ``<out_dir>/model/`` (LoRA adapters merged into the LLM weights: upstream key names only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mgm_omni.models.layers import DecoderLayer
from mgm_omni.training.checkpointing import latest_checkpoint
from mgm_omni.training.config import TrainConfig, from_dict
from mgm_omni.training.distributed import cleanup, init_distributed
from mgm_omni.training.mllm_data import FEATURES_FILE, collate_lists, sequence_lengths
from mgm_omni.training.mllm_objective import MLLMObjective, set_stage
from mgm_omni.training.mllm_setup import (
    MLLMDataSection,
    MLLMModelSection,
    MLLMStageSection,
    build_mllm,
    export_mllm,
    prepare_items,
)
from mgm_omni.training.recipe_config import load_recipe_config, parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult, fit
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.speechlm_objective import trainable_summary

STAGE = "stage2"
SECTIONS = ("train", "model", "stage", "data")


def main(argv: list[str] | None = None) -> FitResult:
    args = parse_recipe_args(argv, __doc__.splitlines()[0])
    raw = load_recipe_config(args.config, args.overrides, SECTIONS)
    train = from_dict(TrainConfig, raw["train"])
    model_section = from_dict(MLLMModelSection, raw["model"])
    stage = from_dict(MLLMStageSection, raw["stage"])
    data_section = from_dict(MLLMDataSection, raw["data"])
    info = init_distributed()
    try:
        seed_everything(train.seed)  # the same initial weights on every rank
        model, tower = build_mllm(model_section)
        items = prepare_items(data_section, model_section, tower, info)
        del tower  # features are cached; the tower does not train
        set_stage(model, STAGE, stage.llm, stage.lora_rank, stage.lora_alpha, tuple(stage.lora_targets),
                  stage.top_layers, seed=train.seed)
        geometry = json.loads((Path(data_section.items) / FEATURES_FILE).read_text())
        objective = MLLMObjective(model, geometry["main_frames"], geometry["aux_frames"], stage.align_config())
        seed_everything(train.seed, info.rank)
        result = fit(
            objective, items, sequence_lengths(items, model.cfg.speech_encoder_ds_rate), collate_lists,
            lambda m, batch: m(batch), train, info, resume=args.resume, config=raw, stop_after=args.stop_after,
            shard_classes=(DecoderLayer,),
            batch_stats=lambda b: {"items": len(b["target_ids"]),
                                   "audio_s": float(sum(s.sum() for s in b["audio_s"]))},
            step_metrics=lambda m: m.last,
        )
        result.extra["params"] = trainable_summary(model)
        if info.is_main and result.state.step >= train.max_steps:
            scale = stage.lora_alpha / stage.lora_rank if stage.llm == "lora" else None
            result.extra["export"] = export_mllm(model.cfg, latest_checkpoint(train.out_dir),
                                                 Path(train.out_dir) / "model", lora_scale=scale)
        return result
    finally:
        cleanup()


if __name__ == "__main__":
    res = main()
    last = res.history[-1] if res.history else {}
    print(f"step {res.state.step}: loss {last.get('loss', float('nan')):.4f}", file=sys.stderr)
