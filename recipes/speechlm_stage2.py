"""Recipe: SpeechLM stage 2, joint optimisation: LLM, TTS-Adapter and embeddings all trained (spec §5).

    python recipes/speechlm_stage2.py --config recipes/configs/speechlm_stage2_small.yaml
    torchrun --nproc_per_node 2 recipes/speechlm_stage2.py --config ... train.strategy=ddp
    mgm-omni train speechlm_stage2 --config ... [--resume] [section.key=value ...]

1. Read the config: ``train``, ``model`` (normally ``init`` = stage 1's ``<out_dir>/model``; k and P come
   from its config) and ``data`` (the same row shards as stage 1, or new ones, e.g. more long-form items).
2. Build the model; every parameter trains (usually at a lower learning rate than stage 1).
3. Train on ``CE_text + CE_speech`` (spec §1.6) over the same voice-cloning sequence format as stage 1.
4. Export ``<out_dir>/model/`` (official layout: ``SpeechLM.from_pretrained`` and the mouth loaders read it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mgm_omni.models.layers import DecoderLayer
from mgm_omni.training.checkpointing import latest_checkpoint
from mgm_omni.training.config import TrainConfig, from_dict
from mgm_omni.training.distributed import cleanup, init_distributed
from mgm_omni.training.recipe_config import load_recipe_config, parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult, fit
from mgm_omni.training.rng import seed_everything
from mgm_omni.training.speechlm_objective import SpeechLMObjective, set_stage, trainable_summary
from mgm_omni.training.speechlm_rows import RowCollate, speech_seconds
from mgm_omni.training.speechlm_setup import (
    SpeechLMDataSection,
    SpeechLMModelSection,
    build_speech_lm,
    export_speech_lm,
    prepare_rows,
)

STAGE = "stage2"
SECTIONS = ("train", "model", "data")


def main(argv: list[str] | None = None) -> FitResult:
    args = parse_recipe_args(argv, __doc__.splitlines()[0])
    raw = load_recipe_config(args.config, args.overrides, SECTIONS)
    train = from_dict(TrainConfig, raw["train"])
    model_section = from_dict(SpeechLMModelSection, raw["model"])
    data_section = from_dict(SpeechLMDataSection, raw["data"])
    info = init_distributed()
    try:
        seed_everything(train.seed)  # the same initial weights on every rank
        model = build_speech_lm(model_section)
        set_stage(model, STAGE)
        rows = prepare_rows(data_section, model.cfg, info)
        seed_everything(train.seed, info.rank)
        speech_eos, rate = model.cfg.speech_eos, data_section.unit_rate
        result = fit(
            SpeechLMObjective(model), rows, rows.lengths, RowCollate(), lambda m, batch: m(batch), train, info,
            resume=args.resume, config=raw, stop_after=args.stop_after, shard_classes=(DecoderLayer,),
            batch_stats=lambda b: {"items": len(b["rows"]), "audio_s": speech_seconds(b, speech_eos, rate)},
            step_metrics=lambda m: m.last,
        )
        result.extra["params"] = trainable_summary(model)
        if info.is_main and result.state.step >= train.max_steps:
            result.extra["export"] = export_speech_lm(model.cfg, latest_checkpoint(train.out_dir),
                                                      Path(train.out_dir) / "model")
        return result
    finally:
        cleanup()


if __name__ == "__main__":
    res = main()
    last = res.history[-1] if res.history else {}
    print(f"step {res.state.step}: loss {last.get('loss', float('nan')):.4f}", file=sys.stderr)
