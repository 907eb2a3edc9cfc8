"""Audio encoders: parity with transformers' Whisper / Qwen2-Audio encoders, the dual tower, the CTranslate2
reader, and the real Whisper-base weights against the reference implementations."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from mgm_omni.audio import WHISPER_128, whisper_features
from mgm_omni.checkpoint import CheckpointError, load_into
from mgm_omni.config import ConfigError
from mgm_omni.models.audio_encoder import (
    AudioEncoder,
    AudioEncoderConfig,
    AudioEncoderError,
    DualAudioTower,
    encoder_state,
    main_encoder_name,
    sinusoids,
)

transformers = pytest.importorskip("transformers")

TINY = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96, num_mel_bins=16,
            max_source_positions=40)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (LayerNorm gains/biases included) so parity tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = 0.5 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _hf_whisper_encoder(seed: int = 0):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    hf = WhisperEncoder(WhisperConfig(**TINY, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=32,
                                      vocab_size=100, max_target_positions=8, pad_token_id=0, bos_token_id=0,
                                      eos_token_id=0, decoder_start_token_id=0)).eval()
    _randomise(hf, seed)
    return hf


def _hf_qwen2_audio_encoder(seed: int = 1):
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    hf = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**TINY)).eval()
    _randomise(hf, seed)
    return hf


def _features(batch: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TINY["num_mel_bins"], 2 * TINY["max_source_positions"], generator=g)


@pytest.mark.parametrize("kind", ["whisper", "qwen2_audio_encoder"])
def test_encoder_matches_transformers(kind):
    hf = _hf_whisper_encoder() if kind == "whisper" else _hf_qwen2_audio_encoder()
    cfg = AudioEncoderConfig.from_dict(hf.config.to_dict())
    assert cfg.model_type == kind and cfg.d_model == 64 and cfg.num_mel_bins == 16
    ours = AudioEncoder(cfg)
    load_into(ours, hf.state_dict())  # HF names load directly, strictly
    x = _features(3)
    with torch.no_grad():
        ref = hf(x).last_hidden_state
        got = ours(x)
    expected_t = 40 if kind == "whisper" else 20  # Qwen2-Audio average-pools to half the positions
    assert got.shape == ref.shape == (3, expected_t, 64)
    assert (got - ref).abs().max().item() < 1e-4
    # Each window is encoded independently: batch of 3 == three batches of 1.
    with torch.no_grad():
        one_by_one = torch.cat([ours(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(one_by_one, got, atol=1e-5, rtol=0)


def test_encoder_is_frozen_by_default_and_unfreezable():
    cfg = AudioEncoderConfig(**TINY)
    assert not any(p.requires_grad for p in AudioEncoder(cfg).parameters())
    trainable = AudioEncoder(cfg, frozen=False)
    assert trainable.conv1.weight.requires_grad and not trainable.embed_positions.weight.requires_grad


def test_default_positions_are_whisper_sinusoids():
    from transformers.models.whisper.modeling_whisper import sinusoids as hf_sinusoids

    torch.testing.assert_close(sinusoids(1500, 64), hf_sinusoids(1500, 64), atol=1e-6, rtol=0)
    assert torch.equal(AudioEncoder(AudioEncoderConfig(**TINY)).embed_positions.weight, sinusoids(40, 64))


def test_config_reads_hf_json_and_round_trips():
    from transformers import WhisperConfig

    data = json.loads(WhisperConfig(**TINY).to_json_string())
    cfg = AudioEncoderConfig.from_dict(data)
    assert (cfg.pool_stride, cfg.input_frames, cfg.output_positions) == (1, 80, 40)
    assert cfg.extra["decoder_layers"] == data["decoder_layers"]  # unknown keys kept
    assert cfg.to_dict() == data
    q = AudioEncoderConfig()  # Qwen2-Audio-7B encoder
    assert (q.pool_stride, q.input_frames, q.output_positions, q.d_model) == (2, 3000, 750, 1280)


@pytest.mark.parametrize("bad, match", [
    (dict(model_type="bert"), "model_type"),
    (dict(model_type="qwen2_audio"), "audio_config"),
    (dict(d_model=60, encoder_attention_heads=7), "divisible"),
    (dict(encoder_layers=0), "encoder_layers"),
    (dict(activation_function="relu"), "gelu"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        AudioEncoderConfig(**{**TINY, **bad})


@pytest.mark.parametrize("shape", [(16, 80), (1, 15, 80), (1, 16, 79), (1, 16, 3000)])
def test_encoder_rejects_bad_feature_shapes(shape):
    enc = AudioEncoder(AudioEncoderConfig(**TINY))
    with pytest.raises(AudioEncoderError, match=r"expects \(batch, 16, 80\)"):
        enc(torch.zeros(shape))


def test_encoder_state_accepts_whisper_model_prefixes_and_rejects_others():
    hf = _hf_whisper_encoder()
    bare = hf.state_dict()
    assert set(encoder_state(bare)) == set(bare)
    for prefix in ("encoder.", "model.encoder."):
        state = {prefix + k: v for k, v in bare.items()}
        state[prefix.replace("encoder.", "decoder.") + "layers.0.fc1.weight"] = torch.zeros(1)  # left out
        got = encoder_state(state)
        assert set(got) == set(bare) and got["conv1.weight"] is bare["conv1.weight"]
    with pytest.raises(AudioEncoderError, match="no audio encoder"):
        encoder_state({"model.decoder.embed_tokens.weight": torch.zeros(1)})
    wrong = dict(bare)
    wrong.pop("layers.1.fc2.bias")
    with pytest.raises(CheckpointError):
        load_into(AudioEncoder(AudioEncoderConfig(**TINY)), wrong)


def test_main_encoder_name_strips_dual_prefix():
    assert main_encoder_name("wcy1122/Dual-Qwen2A-7B-Encoder") == "wcy1122/Qwen2A-7B-Encoder"
    assert main_encoder_name("wcy1122/Qwen2A-7B-Encoder") == "wcy1122/Qwen2A-7B-Encoder"


def test_dual_tower_matches_both_reference_encoders():
    main_hf, aux_hf = _hf_qwen2_audio_encoder(), _hf_whisper_encoder()
    tower = DualAudioTower(AudioEncoderConfig.from_dict(main_hf.config.to_dict()),
                           AudioEncoderConfig.from_dict(aux_hf.config.to_dict()))
    state = {f"speech_tower.{k}": v for k, v in main_hf.state_dict().items()}
    state.update({f"speech_tower_aux.{k}": v for k, v in aux_hf.state_dict().items()})
    load_into(tower, state)
    x = _features(2, seed=5)
    with torch.no_grad():
        main, aux = tower(x)
        assert main.shape == (2, 20, 64) and aux.shape == (2, 40, 64)  # 25 Hz vs 50 Hz
        assert (main - main_hf(x).last_hidden_state).abs().max() < 1e-4
        assert (aux - aux_hf(x).last_hidden_state).abs().max() < 1e-4


def test_dual_tower_rejects_mismatched_encoders():
    main = AudioEncoderConfig(**TINY)
    with pytest.raises(ConfigError, match="same mel window"):
        DualAudioTower(main, AudioEncoderConfig(**{**TINY, "num_mel_bins": 8, "model_type": "whisper"}))
    with pytest.raises(ConfigError, match="multiple"):
        DualAudioTower(AudioEncoderConfig(**{**TINY, "model_type": "whisper"}),
                       AudioEncoderConfig(**{**TINY, "model_type": "qwen2_audio_encoder"}))


# ------------------------------------------------------------------------- real Whisper base (ASSETS §1)


@pytest.fixture(scope="module")
def whisper_base():
    from mgm_omni.checkpoint import whisper_ct2 as w

    try:
        directory = w.whisper_base_ct2_dir()
    except w.AssetMissingError as exc:
        pytest.skip(str(exc))
    model = w.read_ct2_model(directory / "model.bin")
    return directory, model, w.ct2_whisper_to_hf(model), w.ct2_whisper_config(model)


def test_ct2_whisper_base_converts_to_hf_names(whisper_base):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    _, model, state, cfg = whisper_base
    assert model.spec == "WhisperSpec" and len(model.variables) == 212
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert cfg["d_model"] == 512 and cfg["num_mel_bins"] == 80 and cfg["encoder_layers"] == 6
    assert cfg["encoder_attention_heads"] == 8 and cfg["vocab_size"] == 51865
    hf = WhisperForConditionalGeneration(WhisperConfig(**cfg))
    result = hf.load_state_dict(state, strict=False)
    assert result.unexpected_keys == [] and result.missing_keys == ["proj_out.weight"]  # tied to embed_tokens
    assert sum(t.numel() for t in state.values()) == pytest.approx(72.59e6, rel=1e-3)
    qkv = model.variables["encoder/layer_3/self_attention/linear_0/weight"].float()
    assert torch.equal(state["model.encoder.layers.3.self_attn.k_proj.weight"], qkv[512:1024])
    enc = AudioEncoder(AudioEncoderConfig.from_dict(cfg))
    load_into(enc, encoder_state(state))


def test_ct2_reader_rejects_truncated_and_foreign_files(tmp_path):
    from mgm_omni.checkpoint.whisper_ct2 import Ct2FormatError, read_ct2_model

    (tmp_path / "v5.bin").write_bytes((5).to_bytes(4, "little"))
    with pytest.raises(Ct2FormatError, match="version 5"):
        read_ct2_model(tmp_path / "v5.bin")
    (tmp_path / "short.bin").write_bytes((6).to_bytes(4, "little") + (20).to_bytes(2, "little") + b"Whisp")
    with pytest.raises(Ct2FormatError, match="truncated"):
        read_ct2_model(tmp_path / "short.bin")
    with pytest.raises(Ct2FormatError, match="cannot read"):
        read_ct2_model(tmp_path / "absent.bin")


def _speechlike(seconds: float) -> torch.Tensor:
    sr, g = 16000, torch.Generator().manual_seed(3)
    t = torch.arange(int(seconds * sr)) / sr
    voice = sum(torch.sin(2 * math.pi * f * (1 + 0.05 * torch.sin(2 * math.pi * 3 * t)) * t) / i
                for i, f in enumerate((150, 300, 450, 900), start=1))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 2.5 * t).clamp(min=0)
    return 0.2 * voice * envelope + 0.01 * torch.randn(t.shape, generator=g)


def test_real_whisper_base_encoder_matches_ct2_and_transformers(whisper_base):
    """Our encoder with the offline Whisper-base weights vs transformers (same weights) and CTranslate2."""
    import numpy as np
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    ctranslate2 = pytest.importorskip("ctranslate2")
    directory, _, state, cfg = whisper_base
    mel80 = dataclasses.replace(WHISPER_128, n_mels=80)  # Whisper base takes 80 bins
    features = whisper_features(_speechlike(7.3), mel80)  # (1, 80, 3000)
    enc = AudioEncoder(AudioEncoderConfig.from_dict(cfg))
    load_into(enc, encoder_state(state))
    hf = WhisperEncoder(WhisperConfig(**cfg)).eval()
    hf.load_state_dict(encoder_state(state))
    with torch.no_grad():
        ours, ref = enc(features), hf(features).last_hidden_state
    assert ours.shape == (1, 1500, 512)
    assert (ours - ref).abs().max().item() < 1e-4
    ct2 = ctranslate2.models.Whisper(str(directory), device="cpu", compute_type="float32", intra_threads=1)
    encoded = ct2.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True)
    out = torch.from_numpy(np.array(encoded))
    diff = (ours - out).abs()
    # CT2 stores fp16 weights and runs its own kernels; ASSETS measured 7.3e-4 max, 2.1e-6 mean.
    assert diff.max().item() < 3e-3 and diff.mean().item() < 1e-5
