"""Recipe: MLLM stage 1, audio-to-text pre-training: the speech projector trained, towers and LLM frozen (spec §5).

    python recipes/mllm_stage1.py --config recipes/configs/mllm_stage1_tiny.yaml
    torchrun --nproc_per_node 2 recipes/mllm_stage1.py --config ... train.strategy=ddp
    mgm-omni train mllm_stage1 --config ... [--resume] [section.key=value ...]

1. Read the config: ``train``, ``model`` (an MLLM directory ``init``, or a fresh ``config``), ``stage``
   (``llm: frozen``; ``align``: the optional alignment loss of spec §5, soft-DTW or truncated InfoNCE) and
   ``data`` (item shards; written from corpus manifests when missing).
2. Items: each clip's 30 s windows through the frozen dual audio tower once (features cached in shards), the
   user turn ``<speech>\\n{instruction}`` and the transcript as the reply.
3. Build the MLLM; only ``mm_speech_projector`` trains.
4. Train on the reply's next-token cross-entropy (+ ``align.weight`` x the alignment loss), the audio tokens
   spliced as at inference (mRoPE positions, labels only on the reply).
5. Export ``<out_dir>/model/`` (``config.json`` + LLM and projector weights).
"""

from __future__ import annotations

import sys

from mgm_omni.training.mllm_stage import run_mllm_stage
from mgm_omni.training.recipe_config import parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult

STAGE = "stage1"


def main(argv: list[str] | None = None) -> FitResult:
    return run_mllm_stage(STAGE, parse_recipe_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    print(main().summary(), file=sys.stderr)
