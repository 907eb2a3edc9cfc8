"""The MLLM's frozen towers, each loaded from the repo its config field names (spec §4.3, §4.5).

``mm_speech_tower`` (with ``Dual-`` removed) and ``speech_tower_aux`` name the two audio encoders,
``mm_vision_tower`` the Qwen2.5-VL vision tower; a name that is a folder inside the model directory is used
from there, else it is a local path or a hub id.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict, resolve_pretrained
from mgm_omni.config import OmniConfig, read_json
from mgm_omni.models.audio_encoder import AudioEncoderConfig, DualAudioTower, encoder_state, main_encoder_name
from mgm_omni.models.vision import VISION_KEY_PREFIXES, VisionConfig, VisionTower, vision_state_from


def tower_dir(name: str, model_root: Path) -> Path:
    """A tower repo named in the MLLM config: a folder of the model directory, a local path, or a hub id."""
    if (model_root / name).is_dir():
        return model_root / name
    return resolve_pretrained(name, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])


def _tower_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "pytorch_model.bin").is_file() and not (path / "model.safetensors").is_file() \
            and not (path / "model.safetensors.index.json").is_file():
        return load_state_dict(path / "pytorch_model.bin")
    return load_state_dict(path)


def _load_encoder(path: Path) -> tuple[AudioEncoderConfig, dict[str, torch.Tensor]]:
    data = read_json(path / "config.json")
    if data.get("model_type") == "qwen2_audio":  # a full Qwen2-Audio repo: its encoder block
        data = data.get("audio_config") or {}
    state = _tower_weights(path)
    if any(k.startswith("audio_tower.") for k in state):
        state = {k[len("audio_tower."):]: v for k, v in state.items() if k.startswith("audio_tower.")}
    return AudioEncoderConfig.from_dict(data), encoder_state(state)


def load_audio_tower(cfg: OmniConfig, model_root: Path) -> DualAudioTower:
    """The dual audio tower named by ``mm_speech_tower`` (must contain "dual") and ``speech_tower_aux``."""
    if "dual" not in cfg.mm_speech_tower.lower() or not cfg.speech_tower_aux:
        raise CheckpointError(f"mm_speech_tower {cfg.mm_speech_tower!r}: only the dual tower (a name containing "
                              "'Dual', plus speech_tower_aux) is supported")
    main_cfg, main_state = _load_encoder(tower_dir(main_encoder_name(cfg.mm_speech_tower), model_root))
    aux_cfg, aux_state = _load_encoder(tower_dir(cfg.speech_tower_aux, model_root))
    tower = DualAudioTower(main_cfg, aux_cfg)
    load_into(tower.speech_tower, main_state)
    load_into(tower.speech_tower_aux, aux_state)
    return tower


def _vision_weights(path: Path) -> dict[str, torch.Tensor]:
    # A Qwen2.5-VL repo is mostly LLM: read only the shards that hold vision tensors.
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return _tower_weights(path)
    weight_map = read_json(index).get("weight_map", {})
    shards = sorted({f for k, f in weight_map.items() if k.startswith(VISION_KEY_PREFIXES[:-1])})
    if not shards:
        raise CheckpointError(f"{path}: the index lists no vision tower tensors")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_state_dict(path / shard))
    return state


def load_vision_tower(cfg: OmniConfig, model_root: Path) -> VisionTower:
    """The Qwen2.5-VL vision tower named by ``mm_vision_tower`` (its repo's ``vision_config`` if it has one,
    else the MLLM config's); its output width must be the LLM's."""
    path = tower_dir(cfg.mm_vision_tower, model_root)
    data = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    block = data.get("vision_config")
    vcfg = VisionConfig.from_dict(block) if block else VisionConfig.from_omni(cfg)
    if vcfg.out_hidden_size != cfg.hidden_size:
        raise CheckpointError(f"{path}: vision out_hidden_size {vcfg.out_hidden_size} != LLM hidden_size "
                              f"{cfg.hidden_size}")
    tower = VisionTower(vcfg)
    load_into(tower, vision_state_from(_vision_weights(path)))
    return tower
