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

from mgm_omni.training.recipe_config import parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult
from mgm_omni.training.speechlm_stage import run_speechlm_stage

STAGE = "stage2"


def main(argv: list[str] | None = None) -> FitResult:
    return run_speechlm_stage(STAGE, parse_recipe_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    print(main().summary(), file=sys.stderr)
