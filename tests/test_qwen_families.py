"""LLM families from config: Hugging Face directories (official Qwen2.5 / Llama / Qwen3 safetensors layout) load
through one loader and match transformers; a brain around a plain LLM; family and brain-spec config rules."""

from __future__ import annotations

import json

import pytest
import torch

from mgm_omni.config import ConfigError, DecoderConfig, OmniConfig
from mgm_omni.config.brain import BrainSpec, load_llm_config
from mgm_omni.models.omni_lm import MGMOmni, OmniInputError
from mgm_omni.models.qwen import CausalLM

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512)
HF = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "llama": ("LlamaConfig", "LlamaForCausalLM"),
      "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}


def _hf_dir(tmp_path, family: str, tie: bool):
    conf_cls, model_cls = (getattr(transformers, n) for n in HF[family])
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls.__name__)(conf_cls(**SMALL, tie_word_embeddings=tie, head_dim=16))
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.eval().save_pretrained(tmp_path / family)
    return hf, tmp_path / family


@pytest.mark.parametrize("family,tie", [("qwen2", True), ("llama", False), ("qwen3", True)])
def test_hf_directory_loads_and_matches_transformers(tmp_path, family, tie):
    hf, root = _hf_dir(tmp_path, family, tie)
    ours = CausalLM.from_pretrained(root)
    assert ours.cfg.family == family
    assert ours.cfg.attention_bias == (family == "qwen2") and ours.cfg.qk_norm == (family == "qwen3")
    ids = torch.randint(0, 300, (2, 19))
    with torch.no_grad():
        assert (ours(ids) - hf(input_ids=ids).logits).abs().max() < 1e-4


def test_brain_around_a_plain_llm_equals_the_llm(tmp_path):
    _, root = _hf_dir(tmp_path, "llama", False)
    llm = CausalLM.from_pretrained(root)
    brain = MGMOmni.from_llm(root)
    assert brain.cfg.family == "llama" and brain.cfg.mrope_section is None and brain.model.mm_speech_projector is None
    ids = torch.randint(0, 300, (1, 11))
    positions = torch.arange(11).expand(3, 1, 11)  # what the MLLM prompt gives for text: equal axes
    with torch.no_grad():
        assert torch.equal(brain(brain.model.embed_tokens(ids), positions), llm(ids))
        with pytest.raises(OmniInputError, match="no mRoPE"):
            brain(brain.model.embed_tokens(ids), positions + torch.tensor([0, 1, 0])[:, None, None])


def test_family_fixes_the_flags():
    llama = OmniConfig(llm_family="llama")
    assert (llama.attention_bias, llama.qk_norm, llama.family) == (False, False, "llama")
    qwen3 = DecoderConfig(llm_family="qwen3")
    assert (qwen3.attention_bias, qwen3.qk_norm) == (False, True)
    assert OmniConfig().family == "qwen2" and DecoderConfig(qk_norm=True).family == "qwen3"
    with pytest.raises(ConfigError, match="contradicts llm_family 'qwen2'"):
        DecoderConfig(llm_family="qwen2", qk_norm=True)
    with pytest.raises(ConfigError, match="llm_family must be one of"):
        OmniConfig(llm_family="gpt2")
    with pytest.raises(ConfigError, match="rope_scaling type 'llama3'"):
        DecoderConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0})


@pytest.mark.parametrize("extra,match", [({"model_type": "gpt2"}, "not a supported LLM family"),
                                         ({"mlp_bias": True}, "MLP biases"),
                                         ({"use_sliding_window": True}, "sliding-window")])
def test_unsupported_llm_configs_are_refused(tmp_path, extra, match):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **SMALL, **extra}))
    with pytest.raises(ConfigError, match=match):
        load_llm_config(tmp_path)


def test_brain_spec_names_the_tokenizer_folder(tmp_path):
    cfg = OmniConfig(llm_family="llama", brain_tokenizer="tok")
    with pytest.raises(ConfigError, match="tokenizer"):
        BrainSpec.of(tmp_path, cfg)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    assert BrainSpec.of(tmp_path, cfg) == BrainSpec("llama", tmp_path / "tok")
    assert OmniConfig.from_dict(cfg.to_dict()).brain_tokenizer == "tok"
