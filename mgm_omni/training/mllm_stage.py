"""One MLLM training stage from its parsed command line: what ``recipes/mllm_stage{1,2}.py`` both run.

The two stages read the same sections and differ only in ``stage`` (which LLM weights train, see
:func:`~mgm_omni.training.mllm_objective.set_stage`); the recipes hold the stage's story and its config.
"""

from __future__ import annotations

import json
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
from mgm_omni.training.recipe_config import RecipeArgs, load_recipe_config
from mgm_omni.training.recipe_loop import FitResult, fit
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.speechlm_objective import trainable_summary

SECTIONS = ("train", "model", "stage", "data")


def run_mllm_stage(stage_name: str, args: RecipeArgs) -> FitResult:
    """Items (features of the frozen towers, cached), the MLLM with ``stage_name``'s trainable weights, the
    fit, and on the main rank after the last step the export to ``<out_dir>/model/`` (LoRA merged)."""
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
        set_stage(model, stage_name, stage.llm, stage.lora_rank, stage.lora_alpha, tuple(stage.lora_targets),
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
