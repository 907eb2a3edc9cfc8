"""The default brain's assembly (fast: a tiny stand-in LLM and random 80-bin towers of the real widths).

The real parts (Qwen2.5-Coder GGUF, Whisper base and tiny.en) are exercised in ``test_default_brain_real.py``
(slow). Here: the config the brain declares, the directory layout the official loaders read (index over the
linked LLM + the projector file), the towers' geometry, no vision, and the projector checksums.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from mgm_omni.checkpoint import save_state_dict
from mgm_omni.config import OmniConfig
from mgm_omni.generation.mllm.long_audio import tower_mel
from mgm_omni.generation.mllm.runner import MLLM, TextDecodeConfig
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.hub.default_brain import (
    ASSETS,
    AUX_DIR,
    LORA_FILE,
    MAIN_DIR,
    MERGED_FILE,
    PROJECTOR_FILE,
    SEGMENT_SECONDS,
    BrainAssetError,
    brain_fields,
    shipped_lora,
    shipped_projector,
    write_brain_dir,
)
from mgm_omni.hub.tiny_brain import _write_tokenizer
from mgm_omni.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from mgm_omni.models.omni_lm import OmniInputError
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig
from mgm_omni.models.qwen import CausalLM

QWEN05B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
           "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
           "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
           "bos_token_id": 151643, "eos_token_id": 151645, "gguf_name": "Qwen2.5 Coder 0.5B Instruct AWQ"}


def test_declared_config_is_the_small_dual_tower_brain():
    cfg = OmniConfig.from_dict(brain_fields(QWEN05B))
    assert (cfg.family, cfg.hidden_size, cfg.num_hidden_layers, cfg.brain_tokenizer) == ("qwen2", 896, 24, "llm")
    assert cfg.mm_vision_tower is None and cfg.mrope_section is None
    assert cfg.mm_speech_tower == f"Dual-{MAIN_DIR}" and cfg.speech_tower_aux == AUX_DIR
    proj = SpeechProjectorConfig.from_omni(cfg)
    assert (proj.main_dim, proj.aux_dim, proj.out_dim, proj.ds_rate, proj.mlp_dim) == (512, 384, 896, 5, 2048)
    assert proj.tokens_for(750) == 150  # 5 tokens per second of audio, as the official k = 5
    assert proj.trim_padding and cfg.speech_trim_padding  # trained on real-audio tokens only
    assert cfg.speech_segment_seconds == 12.0  # trained on short items: long audio goes in segments


@pytest.fixture(scope="module")
def tiny_brain(tmp_path_factory):
    """A brain directory around a 1-layer, width-64 Qwen2 stand-in; random towers of the real widths."""
    tmp = tmp_path_factory.mktemp("brain")
    torch.manual_seed(0)
    llm_cfg = {**QWEN05B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
               "num_attention_heads": 4, "num_key_value_heads": 2}
    llm_dir = tmp / "llm-converted"
    llm_dir.mkdir()
    (llm_dir / "config.json").write_text(json.dumps(llm_cfg))
    (llm_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": 151645}))
    _write_tokenizer(llm_dir)
    from mgm_omni.config.brain import load_llm_config

    save_state_dict({k: v.to(torch.bfloat16) for k, v in CausalLM(load_llm_config(llm_dir)).state_dict().items()},
                    llm_dir)
    root = tmp / "brain"
    encoders = {}
    for name, kind, width, heads in ((MAIN_DIR, "qwen2_audio_encoder", 512, 8), (AUX_DIR, "whisper", 384, 6)):
        cfg = AudioEncoderConfig(model_type=kind, d_model=width, encoder_layers=1, encoder_attention_heads=heads,
                                 encoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500)
        (root / name).mkdir(parents=True)
        cfg.save(root / name / "config.json")
        save_state_dict(AudioEncoder(cfg).state_dict(), root / name)
        encoders[name] = root / name
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=512, aux_dim=384, out_dim=64))
    proj_state = {f"model.mm_speech_projector.{k}": v.to(torch.bfloat16).contiguous()
                  for k, v in proj.state_dict().items()}
    save_file(proj_state, str(tmp / PROJECTOR_FILE))
    write_brain_dir(root, llm_dir, tmp / PROJECTOR_FILE, encoders)
    return root, proj_state


def test_directory_loads_through_the_official_loaders(tiny_brain):
    root, proj_state = tiny_brain
    assert (root / "llm").is_symlink()  # the 1.3 GB LLM is linked, not copied
    index = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["lm_head.weight"] == "llm/model.safetensors" and index["model.norm.weight"] == "llm/model.safetensors"
    assert {k for k, s in index.items() if s == PROJECTOR_FILE} == set(proj_state)
    mllm = MLLM.from_pretrained(root)  # towers ("audio", "vision") asked for: vision is simply absent
    backbone = mllm.model.model
    assert backbone.vision_tower is None and mllm.model.cfg.family == "qwen2"
    assert mllm.stop_ids == (151645, 151643)
    for k, v in proj_state.items():
        assert torch.equal(mllm.model.state_dict()[k].to(torch.bfloat16), v)
    tower = backbone.speech_tower
    assert tower_mel(tower).n_mels == 80
    assert (tower.main_cfg.output_positions, tower.aux_cfg.output_positions) == (750, 1500)
    wave = 0.1 * torch.sin(2 * math.pi * 220 * torch.arange(16000 * 35) / 16000)
    audio = mllm.encode_audio(wave)
    assert audio.embeddings.shape == (150 + 25, 64)  # 35 s: a full window, then 5 s (padding tokens dropped)
    greedy = TextDecodeConfig(SamplingConfig(temperature=0.0), max_new_tokens=4)
    prompt = mllm.prompt([("user", "<speech>\nPlease transcribe the audio.")], [audio])
    assert mllm.generate(prompt, greedy) == mllm.generate(prompt, greedy)
    with pytest.raises(OmniInputError, match="no vision tower"):
        mllm.encode_visual(None)


def test_an_outdated_assembled_config_is_noticed_and_segments_reach_the_transcriber(tiny_brain):
    from mgm_omni.generation.mllm.transcriber import Transcriber
    from mgm_omni.hub.default_brain import _config_current

    root, _ = tiny_brain
    assert _config_current(root)
    assert Transcriber(MLLM.from_pretrained(root, towers=("audio",))).segment_seconds() == SEGMENT_SECONDS == 12.0
    config = root / "config.json"
    written = config.read_text()
    try:
        config.write_text(json.dumps({k: v for k, v in json.loads(written).items()
                                      if k != "speech_segment_seconds"}))
        assert not _config_current(root)  # default_brain_dir re-assembles such a directory
    finally:
        config.write_text(written)


def test_projector_file_must_hold_only_projector_tensors(tiny_brain, tmp_path):
    root, proj_state = tiny_brain
    bad = tmp_path / PROJECTOR_FILE
    save_file({**proj_state, "model.norm.weight": torch.ones(64)}, str(bad))
    encoders = {MAIN_DIR: root / MAIN_DIR, AUX_DIR: root / AUX_DIR}
    with pytest.raises(BrainAssetError, match="unexpected tensors"):
        write_brain_dir(tmp_path / "b", (root / "llm").resolve(), bad, encoders)


def test_missing_or_altered_projector_is_refused(tmp_path):
    with pytest.raises(BrainAssetError, match="no trained projector"):
        shipped_projector(tmp_path)
    save_file({"model.mm_speech_projector.linear2.bias": torch.zeros(4)}, str(tmp_path / PROJECTOR_FILE))
    (tmp_path / "brain.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(BrainAssetError, match="damaged"):
        shipped_projector(tmp_path)


@pytest.mark.skipif(not (ASSETS / "brain.json").is_file(), reason="no trained projector ships yet")
def test_shipped_projector_passes_its_checksum_and_fits_the_brain(tmp_path):
    from mgm_omni.checkpoint import load_into, load_state_dict

    weights, card = shipped_projector()
    assert weights.stat().st_size <= 30 * 2**20
    proj = DualMLPSpeechProjector(SpeechProjectorConfig.from_omni(OmniConfig.from_dict(brain_fields(QWEN05B))))
    load_into(proj, load_state_dict(weights, strip_prefix="model.mm_speech_projector."))
    altered = tmp_path / "assets"
    shutil.copytree(ASSETS, altered)
    data = bytearray((altered / PROJECTOR_FILE).read_bytes())
    data[-1] ^= 1
    (altered / PROJECTOR_FILE).write_bytes(bytes(data))
    with pytest.raises(BrainAssetError, match="damaged"):
        shipped_projector(altered)


def test_default_resolution_prefers_official_then_default_brain_then_tiny(monkeypatch, tmp_path):
    from mgm_omni.hub import default_brain as db
    from mgm_omni.hub import resolve, tiny_brain

    assert not db.default_brain_available(tmp_path)  # no trained projector in this folder
    monkeypatch.setattr(resolve, "cached_on_hub", lambda repo: False)
    for available, expected in ((True, db.DEFAULT_BRAIN_NAME), (False, tiny_brain.TINY_NAME)):
        monkeypatch.setattr(db, "default_brain_available", lambda assets=ASSETS, a=available: a)
        assert resolve.default_brain() == expected
        assert tiny_brain.default_mllm("no-such-owner/no-such-repo") == expected


def test_shipped_lora_is_merged_into_the_assembled_llm_as_its_adapters_compute(tiny_brain, tmp_path):
    from mgm_omni.training.lora import apply_lora

    root, _ = tiny_brain
    llm_dir = (root / "llm").resolve()
    base = MLLM.from_pretrained(root, towers=("audio",)).model
    torch.manual_seed(1)
    names = apply_lora(base, ["q_proj", "down_proj"], rank=2, alpha=4.0, under="model.layers.", dtype=torch.float32)
    factors = {}
    for name in names:
        layer = base.get_submodule(name)
        with torch.no_grad():
            layer.lora_B.normal_(0, 0.5)
        factors.update({f"{name}.lora_A": layer.lora_A.detach().clone(), f"{name}.lora_B": layer.lora_B.detach().clone()})
    save_file(factors, str(tmp_path / LORA_FILE))
    encoders = {MAIN_DIR: root / MAIN_DIR, AUX_DIR: root / AUX_DIR}
    out = write_brain_dir(tmp_path / "b", llm_dir, root / PROJECTOR_FILE, encoders, (tmp_path / LORA_FILE, 2.0))
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert {k for k, s in index.items() if s == MERGED_FILE} == {f"{n}.weight" for n in names}
    merged = MLLM.from_pretrained(out, towers=("audio",)).model
    for name in names:  # the merged weight computes what the adapter computed (to bf16 rounding)
        layer = merged.get_submodule(name)
        x = torch.randn(3, layer.in_features).to(layer.weight.dtype)
        torch.testing.assert_close(merged.get_submodule(name)(x).float(), base.get_submodule(name)(x).float(),
                                   atol=0.05, rtol=0.02)
    unchanged = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged.state_dict()[unchanged], base.state_dict()[unchanged])
    assert not torch.equal(merged.state_dict()[f"{names[0]}.weight"], base.state_dict()[f"{names[0]}.weight"])


def test_missing_or_altered_lora_is_refused(tmp_path):
    assert shipped_lora(tmp_path, {"sha256": "x"}) is None  # a brain without adapters
    card = {"sha256": "x", "lora": {"sha256": "0" * 64, "rank": 2, "alpha": 4.0}}
    with pytest.raises(BrainAssetError, match="missing"):
        shipped_lora(tmp_path, card)
    save_file({"model.layers.0.mlp.down_proj.lora_A": torch.zeros(2, 4)}, str(tmp_path / LORA_FILE))
    with pytest.raises(BrainAssetError, match="damaged"):
        shipped_lora(tmp_path, card)


def test_default_brain_dir_merges_shipped_lora_and_reassembles_when_it_changes(tiny_brain, tmp_path, monkeypatch):
    import hashlib

    from mgm_omni.hub import default_brain
    from mgm_omni.hub.default_brain import BrainParts, default_brain_dir

    root, proj_state = tiny_brain
    encoders = {MAIN_DIR: root / MAIN_DIR, AUX_DIR: root / AUX_DIR}
    monkeypatch.setattr(default_brain, "brain_parts", lambda *a, **k: BrainParts((root / "llm").resolve(), encoders))
    assets = tmp_path / "assets"
    assets.mkdir()
    save_file(proj_state, str(assets / PROJECTOR_FILE))
    torch.manual_seed(2)
    name = "model.layers.0.self_attn.q_proj"
    save_file({f"{name}.lora_A": torch.randn(2, 64), f"{name}.lora_B": torch.randn(64, 2)}, str(assets / LORA_FILE))

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    card = {"sha256": sha(assets / PROJECTOR_FILE), "lora": {"sha256": sha(assets / LORA_FILE), "rank": 2, "alpha": 4}}
    (assets / "brain.json").write_text(json.dumps(card))
    built = default_brain_dir(cache=tmp_path / "cache", progress=False, assets=assets)
    index = json.loads((built / "model.safetensors.index.json").read_text())["weight_map"]
    assert index[f"{name}.weight"] == MERGED_FILE and (built / MERGED_FILE).is_file()
    del card["lora"]  # the same projector without adapters: the assembled brain must not keep the merged shard
    (assets / "brain.json").write_text(json.dumps(card))
    built = default_brain_dir(cache=tmp_path / "cache", progress=False, assets=assets)
    index = json.loads((built / "model.safetensors.index.json").read_text())["weight_map"]
    assert index[f"{name}.weight"] == "llm/model.safetensors" and not (built / MERGED_FILE).exists()
