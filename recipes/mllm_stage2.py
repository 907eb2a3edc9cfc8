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

import sys

from mgm_omni.training.mllm_stage import run_mllm_stage
from mgm_omni.training.recipe_config import parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult

STAGE = "stage2"


def main(argv: list[str] | None = None) -> FitResult:
    return run_mllm_stage(STAGE, parse_recipe_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    print(main().summary(), file=sys.stderr)
