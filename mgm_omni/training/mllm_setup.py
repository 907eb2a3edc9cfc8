"""What both MLLM stage recipes read: the ``model``, ``stage`` and ``data`` sections, the items, the export.

``model``: an official-format MLLM directory ``init`` (LLM, projector, and the audio towers its config
names), or a fresh ``config`` (OmniConfig fields: random LLM, projector and a random dual tower with
``tower_window_positions`` positions per window; tests and benchmarks). The towers only compute the items'
features; they are not part of the trained module.

``data``: item shards at ``items``; when missing they are written (rank 0) from corpus ``manifests``
(transcription: ``instruction`` -> transcript) and instruction JSONL files (``instructions``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mgm_omni.checkpoint import load_state_dict, save_state_dict
from mgm_omni.config import ConfigError, OmniConfig
from mgm_omni.hub.tiny_brain import random_audio_tower, random_mgm_omni
from mgm_omni.models.audio_encoder import DualAudioTower
from mgm_omni.models.omni_lm import MGMOmni
from mgm_omni.text import DEFAULT_SYSTEM_PROMPT, Tokenizer
from mgm_omni.training.align_loss import AlignConfig
from mgm_omni.training.distributed import DistInfo, barrier
from mgm_omni.training.lora import merge_lora_state
from mgm_omni.training.mllm_data import asr_items, instruction_items, open_items, write_mllm_items
from mgm_omni.training.shards import INDEX, ShardDataset


@dataclass
class MLLMModelSection:
    init: str | None = None
    config: dict | None = None
    init_seed: int = 0
    tower_window_positions: int = 1500

    def __post_init__(self) -> None:
        if (self.config is None) == (self.init is None):
            raise ConfigError("model: give exactly one of 'init' (an MLLM directory) or 'config' (a fresh model)")


@dataclass
class MLLMStageSection:
    """What trains besides the projector (``llm``) and the optional alignment loss (``align``: AlignConfig fields)."""

    llm: str = "frozen"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    top_layers: int = 0
    align: dict | None = None

    def align_config(self) -> AlignConfig | None:
        return AlignConfig(**self.align) if self.align is not None else None


@dataclass
class MLLMDataSection:
    items: str
    manifests: list = field(default_factory=list)
    instructions: list = field(default_factory=list)
    splits: list = field(default_factory=lambda: ["train"])
    instruction: str = "Please transcribe the audio."
    tokenizer: str | None = None  # default: the model.init directory
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    feature_dtype: str = "float16"


def build_mllm(section: MLLMModelSection) -> tuple[MGMOmni, DualAudioTower]:
    """The MLLM to train (fp32, no towers attached) and its frozen dual audio tower."""
    if section.init is not None:
        model = MGMOmni.from_pretrained(section.init, towers=("audio",))
        tower = model.model.speech_tower
        if tower is None:
            raise ConfigError(f"{section.init}: the MLLM names no audio tower (mm_speech_tower)")
        model.model.speech_tower = None
    else:
        cfg = OmniConfig.from_dict(dict(section.config))
        model = random_mgm_omni(cfg, seed=section.init_seed)
        tower = random_audio_tower(cfg, section.tower_window_positions, seed=section.init_seed + 1)
    return model.float().train(), tower.float().eval()


def prepare_items(section: MLLMDataSection, model_section: MLLMModelSection, tower: DualAudioTower,
                  info: DistInfo) -> ShardDataset:
    """Open the item shards, writing them first (rank 0; the others wait) when ``section.items`` has none."""
    out = Path(section.items)
    if info.is_main and not (out / INDEX).is_file():
        tok_dir = section.tokenizer or model_section.init
        if tok_dir is None or not (section.manifests or section.instructions):
            raise ConfigError(f"{out}: no MLLM items, and no data.tokenizer plus manifests / instructions to "
                              "write them from")
        items = [it for m in section.manifests for it in asr_items(m, section.splits, section.instruction)]
        items += [it for path in section.instructions for it in instruction_items(path)]
        n = write_mllm_items(out, items, tower, Tokenizer.from_dir(tok_dir), section.system_prompt,
                             section.feature_dtype)
        print(f"MLLM items written to {out}: {n}", file=sys.stderr)
    barrier()
    return open_items(out)


def export_mllm(cfg: OmniConfig, checkpoint: str | os.PathLike, out: str | os.PathLike,
                lora_scale: float | None = None, prefix: str = "model.") -> Path:
    """``config.json`` + ``model.safetensors`` (LLM and projector, LoRA merged) from a training checkpoint of
    :class:`~mgm_omni.training.mllm_objective.MLLMObjective`; the towers stay where the config names them."""
    state = {k[len(prefix):]: v for k, v in load_state_dict(checkpoint).items() if k.startswith(prefix)}
    if lora_scale is not None:
        state = merge_lora_state(state, lora_scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    save_state_dict(state, out)
    return out
