"""What both SpeechLM stage recipes read: the ``model`` and ``data`` sections, the row data, the model to start from.

``model``: a fresh model from ``config`` (SpeechLMConfig fields, random weights from ``init_seed``) or an
official-format SpeechLM directory ``init`` (e.g. the ``model/`` export of stage 1). k is the config's
``speech_token_count`` and P its ``speech_token_pre_pad`` (default 4).

``data``: row shards at ``shards``. When that folder has no shards yet they are written first (by rank 0)
from corpus ``manifests``, the unit shards of each (``units``: default ``<manifest dir>/units``), optional
``pairs`` files and the mouth's text front-end (``text_frontend``: its tokenizer directory).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgm_omni.checkpoint import load_state_dict, save_state_dict
from mgm_omni.config import ConfigError, SpeechLMConfig
from mgm_omni.generation.speech.layout import ChunkRules
from mgm_omni.models.speech_lm import SpeechLM, random_speech_lm
from mgm_omni.text import load_text_frontend
from mgm_omni.training.distributed import DistInfo, barrier
from mgm_omni.training.shards import INDEX, ShardDataset
from mgm_omni.training.speechlm_rows import (
    SequenceSpec,
    choose_references,
    read_jsonl,
    write_sequences,
)
from mgm_omni.training.unit_shards import read_units

log = logging.getLogger(__name__)


@dataclass
class SpeechLMModelSection:
    """Where the weights start: ``config`` (fresh, seeded) or ``init`` (a SpeechLM directory); not both."""

    config: dict | None = None
    init: str | None = None
    init_seed: int = 0
    init_embed_std: float = 0.02  # fresh model: embedding / tied lm_head rows N(0, std)
    init_norm_jitter: float = 0.0  # fresh model: norm gains 1 + jitter N(0, 1)
    freeze_pretrained: bool = True  # stage 1 keeps the Qwen3 layers and text rows; false for a backbone from scratch
    # weight of the next-text-token loss (1.0 = the official CE_text + CE_speech). A pretrained LLM keeps its text
    # prediction for free; a small backbone from scratch spends about half its gradient on it.
    text_loss_weight: float = 1.0
    # guided attention and the phoneme aid (mgm_omni.training.speechlm_guide.GuideConfig fields: weight, layer,
    # heads, sigma, min_sigma, align_sigma, phone_weight, phone_classes); empty or weights 0: the official loss
    guide: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.config is None) == (self.init is None):
            raise ConfigError("model: give exactly one of 'config' (a fresh model) or 'init' (a SpeechLM directory)")
        if self.text_loss_weight < 0:
            raise ConfigError(f"model.text_loss_weight must be >= 0, got {self.text_loss_weight}")


@dataclass
class SpeechLMDataSection:
    """Row shards, and how to write them when they are missing (see the module docstring)."""

    shards: str
    manifests: list = field(default_factory=list)
    units: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    splits: list = field(default_factory=lambda: ["train"])
    text_frontend: str | None = None
    frontend_kind: str = "own-bpe"
    g2p: str | None = None
    max_rows: int = 4096
    filler_unit: int | None = None
    sentence_min_text: int = 50
    max_text: int = 100
    max_reference_units: int = 375
    unit_rate: float = 25.0
    seed: int = 0
    # forced alignments for the guide and the phoneme aid (recipes/speechlm_align.py: an .npz of item id -> per
    # unit (text-id index, phoneme id)); the rows then carry an `align` field. Write them into a new `shards` folder.
    alignments: str | None = None

    def __post_init__(self) -> None:
        if self.units and len(self.units) != len(self.manifests):
            raise ConfigError("data.units must list one unit folder per manifest (or be empty for the defaults)")
        if self.pairs and len(self.pairs) != len(self.manifests):
            raise ConfigError("data.pairs must list one pairs file per manifest (or be empty)")


def build_speech_lm(section: SpeechLMModelSection) -> SpeechLM:
    """The starting model, fp32, in train mode."""
    if section.init is not None:
        return SpeechLM.from_pretrained(section.init).train()
    cfg = SpeechLMConfig.from_dict(dict(section.config), strict=True)
    return random_speech_lm(cfg, seed=section.init_seed, norm_jitter=section.init_norm_jitter,
                            embed_std=section.init_embed_std).train()


def export_speech_lm(cfg: SpeechLMConfig, checkpoint: str | os.PathLike, out: str | os.PathLike,
                     prefix: str = "model.") -> Path:
    """Write an official-format directory (``config.json`` + ``model.safetensors``) from a training checkpoint
    of :class:`~mgm_omni.training.speechlm_objective.SpeechLMObjective` (its keys under ``prefix``); ``init``
    and ``SpeechLM.from_pretrained`` read it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k[len(prefix):]: v for k, v in load_state_dict(checkpoint).items() if k.startswith(prefix)}
    cfg.save(out / "config.json")
    save_state_dict(state, out)
    return out


def prepare_rows(section: SpeechLMDataSection, cfg: SpeechLMConfig, info: DistInfo) -> ShardDataset:
    """Open the row shards, writing them first (rank 0; the others wait) if ``section.shards`` has none."""
    out = Path(section.shards)
    if info.is_main and not (out / INDEX).is_file():
        if not section.manifests or section.text_frontend is None:
            raise ConfigError(f"{out}: no row shards, and data.manifests / data.text_frontend to write them "
                              "from are not given")
        frontend = load_text_frontend(section.text_frontend, section.frontend_kind, ".", section.g2p)
        items, units, pairs = [], {}, []
        for i, manifest in enumerate(section.manifests):
            rows = [r for r in read_jsonl(manifest) if r.get("split", "train") in section.splits]
            items += rows
            units.update(read_units(section.units[i] if section.units else Path(manifest).parent / "units"))
            if section.pairs:
                wanted = {r["id"] for r in rows}
                pairs += choose_references(rows, [p for p in read_jsonl(section.pairs[i])
                                                  if p["target_id"] in wanted], section.seed)
            else:
                pairs += choose_references(rows, None, section.seed)
        spec = SequenceSpec(ChunkRules(sentence_min_text=section.sentence_min_text, max_text=section.max_text),
                            section.max_rows, section.filler_unit, section.unit_rate, section.max_reference_units)
        alignments = None
        if section.alignments is not None:
            with np.load(section.alignments) as found:
                alignments = {key: found[key] for key in found.files}
        counts = write_sequences(out, frontend, cfg, items, units, pairs, spec, alignments=alignments)
        log.warning("SpeechLM rows written to %s: %s", out, dict(counts))
        if not counts["written"]:
            raise ValueError(f"no sequence could be laid out from {section.manifests}: {dict(counts)}")
    barrier()
    return ShardDataset(out)
