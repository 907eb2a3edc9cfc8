"""Recipe: SpeechLM stage 1, the LLM frozen; the TTS-Adapter and the new embedding rows trained (spec §5).

    python recipes/speechlm_stage1.py --config recipes/configs/speechlm_stage1_small.yaml
    torchrun --nproc_per_node 2 recipes/speechlm_stage1.py --config ... train.strategy=ddp
    mgm-omni train speechlm_stage1 --config ... [--resume] [section.key=value ...]

1. Read the config: ``train`` (optimiser, schedule, batches, precision, cadence, ``out_dir``), ``model``
   (a fresh config or an ``init`` directory; k and P come from its config) and ``data`` (row shards, written
   from the corpus manifests, unit shards and the text front-end when missing).
2. Build the model and freeze the Qwen3 layers; the embedding / ``lm_head`` rows of the text vocabulary
   keep their values (gradient mask), the audio ids, the k speech blocks and the adapter learn.
3. Train on ``CE_text + CE_speech`` (spec §1.6) over voice-cloning sequences (prompt rows with the
   reference speech block, then the target in chunks with P delay rows; long-form items in several chunks).
4. Export ``<out_dir>/model/`` (official layout), the ``init`` of stage 2.
"""

from __future__ import annotations

import sys

from mgm_omni.training.recipe_config import parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult
from mgm_omni.training.speechlm_stage import run_speechlm_stage

STAGE = "stage1"


def main(argv: list[str] | None = None) -> FitResult:
    return run_speechlm_stage(STAGE, parse_recipe_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    print(main().summary(), file=sys.stderr)
