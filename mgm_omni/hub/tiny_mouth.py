"""The built-in ``tiny-random`` model: an official-format SpeechLM directory with random weights.

It exists so the whole pipeline (tokenizer -> SpeechLM -> flow -> HiFT -> WAV) runs on any machine
with no download. It is written once into a cache directory with exactly the layout of a released
``MGM-Omni-TTS`` repo (``config.json``, ``model.safetensors``, tokenizer files and ``cosyvoice2/``),
so it goes through the same loaders as a real checkpoint. Its audio is noise-like: the weights are
random. The text tokenizer is the Qwen3 one shipped inside this package (:mod:`mgm_omni.hub.qwen_bpe`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mgm_omni.hub.cache import cache_root

TINY_NAME = "tiny-random"
TINY_VERSION = 2  # 2: mouth.json (its stand-in reference front-end, float32) and a shipped default voice
# What the tiny mouth declares beyond the official defaults (see config/mouth.py).
MOUTH = {"speech_tokenizer": "tiny-hash", "speaker_encoder": "tiny-dvector", "default_voice": "voice",
         "dtype": "float32"}

SPEECHLM_CONFIG = {
    "architectures": ["MGMTTSForCausalLM"], "model_type": "MGMTTS", "attention_bias": False, "head_dim": 16,
    "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 40960,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "tokenizer_speech_size": 6563,
    "tokenizer_text_size": 151672, "tts_adapter_config": "(2,64,4_2,128)", "tts_adapter_type": "qwen3",
    "vocab_size": 177924, "speech_token_pre_pad": 4, "bos_token_id": 151643, "eos_token_id": 151645,
}

COSYVOICE_YAML = """\
# tiny random CosyVoice2 decoder (same structure as cosyvoice2.yaml, shrunk)
sample_rate: 24000
spk_embed_dim: 192
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 64
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: 64
        attention_heads: 4
        linear_units: 128
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: 64
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 32
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 32
"""


class BuiltinModelError(RuntimeError):
    """The built-in model cannot be prepared (a missing offline asset)."""


def builtin_voice(n_tokens: int = 100, xvector_dim: int = 192, codes: int = 6561):
    """The tiny model's shipped voice: a fixed synthetic prompt (random codes, a slowly varying log-mel, a
    random x-vector) with a transcript; it stands for no recording."""
    from mgm_omni.generation.voice import Voice

    gen = torch.Generator().manual_seed(2024)
    tokens = torch.randint(0, codes, (1, n_tokens), generator=gen)
    mel = -6.0 + torch.randn(1, 2 * n_tokens, 80, generator=gen).cumsum(1) * 0.05  # slowly varying log-mel
    xvector = torch.randn(1, xvector_dim, generator=gen)
    return Voice(tokens, mel, xvector, text="This is the reference voice.", name="default", frontend="builtin",
                 description="a synthetic voice of the built-in tiny model")


def qwen_tokenizer_json() -> Path:
    """``tokenizer.json`` of the Qwen3 tokenizer shipped in the package (written into the cache once)."""
    from mgm_omni.hub.qwen_bpe import BPEPackError, tokenizer_json

    try:
        return tokenizer_json(cache_root())
    except BPEPackError as exc:
        raise BuiltinModelError(str(exc)) from None


def ensure_tiny_random(root: Path | None = None) -> Path:
    """The directory of the built-in tiny random model, written on first use (about 50 MB)."""
    root = (root or cache_root()) / f"{TINY_NAME}-v{TINY_VERSION}"
    if (root / ".complete").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(root)
    _write_speechlm(root)
    _write_cosyvoice(root / "cosyvoice2")
    (root / "mouth.json").write_text(json.dumps(MOUTH, indent=1) + "\n")
    builtin_voice().save(root / MOUTH["default_voice"])
    (root / ".complete").write_text("ok\n")
    return root


def _write_tokenizer(root: Path) -> None:
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(qwen_tokenizer_json()))
    audio = ["<|audio_start|>", "<|audio_end|>", "<|audio_sep|>"]
    speech = [f"speech_layer_{i}_{j}" for i in range(4) for j in [*range(6561), "eos", "pad"]]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in audio + speech])
    if tok.get_vocab_size(with_added_tokens=True) != SPEECHLM_CONFIG["vocab_size"]:
        raise BuiltinModelError("the Qwen3 tokenizer has an unexpected size; cannot build the built-in model")
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))


def _write_speechlm(root: Path) -> None:
    from mgm_omni.checkpoint import save_state_dict
    from mgm_omni.config import SpeechLMConfig
    from mgm_omni.models.speech_lm import random_speech_lm

    cfg = SpeechLMConfig.from_dict(SPEECHLM_CONFIG)
    cfg.save(root / "config.json")
    (root / "generation_config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": 151645}))
    save_state_dict(random_speech_lm(cfg, seed=1234).state_dict(), root)


def _write_cosyvoice(path: Path) -> None:
    from mgm_omni.config.cosyvoice import CosyVoice2Config
    from mgm_omni.generation.wave.assets import build_flow, build_hift

    path.mkdir(parents=True, exist_ok=True)
    (path / "cosyvoice2.yaml").write_text(COSYVOICE_YAML)
    cfg = CosyVoice2Config.from_yaml(path / "cosyvoice2.yaml")
    gen = torch.Generator().manual_seed(4321)
    for name, module in (("flow.pt", build_flow(cfg)), ("hift.pt", build_hift(cfg))):
        with torch.no_grad():
            for pname, p in module.named_parameters():
                if p.dim() == 1:  # norms and biases: near their usual values
                    base = 1.0 if pname.endswith("weight") else 0.0
                    p.copy_(base + 0.05 * torch.randn(p.shape, generator=gen))
                else:
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        torch.save(module.state_dict(), path / name)
