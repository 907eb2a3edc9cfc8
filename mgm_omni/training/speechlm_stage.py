"""One SpeechLM training stage from its parsed command line: what ``recipes/speechlm_stage{1,2}.py`` both run.

The two stages read the same sections and differ only in ``stage`` (what trains, see
:func:`~mgm_omni.training.speechlm_objective.set_stage`); the recipes hold the stage's story and its config.
"""

from __future__ import annotations

from pathlib import Path

from mgm_omni.models.layers import DecoderLayer
from mgm_omni.training.checkpointing import latest_checkpoint
from mgm_omni.training.config import TrainConfig, from_dict
from mgm_omni.training.distributed import cleanup, init_distributed
from mgm_omni.training.recipe_config import RecipeArgs, load_recipe_config
from mgm_omni.training.recipe_loop import FitResult, fit
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.speechlm_guide import GuideConfig
from mgm_omni.training.speechlm_objective import SpeechLMObjective, set_stage, trainable_summary
from mgm_omni.training.speechlm_rows import RowCollate, speech_seconds
from mgm_omni.training.speechlm_setup import (
    SpeechLMDataSection,
    SpeechLMModelSection,
    build_speech_lm,
    export_speech_lm,
    prepare_rows,
)

SECTIONS = ("train", "model", "data")


def run_speechlm_stage(stage_name: str, args: RecipeArgs) -> FitResult:
    """The model with ``stage_name``'s trainable parameters, its row shards (written when missing), the fit,
    and on the main rank after the last step (``max_steps`` or ``--stop-after``) the export to
    ``<out_dir>/model/`` (official layout)."""
    raw = load_recipe_config(args.config, args.overrides, SECTIONS)
    train = from_dict(TrainConfig, raw["train"])
    model_section = from_dict(SpeechLMModelSection, raw["model"])
    data_section = from_dict(SpeechLMDataSection, raw["data"])
    info = init_distributed()
    try:
        seed_everything(train.seed)  # the same initial weights on every rank
        model = build_speech_lm(model_section)
        set_stage(model, stage_name, model_section.freeze_pretrained)
        rows = prepare_rows(data_section, model.cfg, info)
        seed_everything(train.seed, info.rank)
        speech_eos, rate = model.cfg.speech_eos, data_section.unit_rate
        objective = SpeechLMObjective(model, model_section.text_loss_weight,
                                      from_dict(GuideConfig, model_section.guide))
        result = fit(
            objective, rows, rows.lengths, RowCollate(),
            lambda m, batch: m(batch), train, info,
            resume=args.resume, config=raw, stop_after=args.stop_after, shard_classes=(DecoderLayer,),
            batch_stats=lambda b: {"items": len(b["rows"]), "audio_s": speech_seconds(b, speech_eos, rate)},
            step_metrics=lambda m: m.last,
        )
        result.extra["params"] = trainable_summary(model)
        planned_end = train.max_steps if args.stop_after is None else min(train.max_steps, args.stop_after)
        if info.is_main and result.state.step >= planned_end:  # also a --stop-after end: that model is kept
            result.extra["export"] = export_speech_lm(model.cfg, latest_checkpoint(train.out_dir),
                                                      Path(train.out_dir) / "model")
        return result
    finally:
        cleanup()
