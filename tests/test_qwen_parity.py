"""Our Qwen2/Llama/Qwen3 decoder stacks against transformers (test-only oracle), and cached == uncached."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.checkpoint import load_into
from mgm_omni.config import DecoderConfig
from mgm_omni.generation.kv_cache import CacheFullError, KVCache, cache_for
from mgm_omni.models.layers import apply_rope, rope_cos_sin, rope_inv_freq
from mgm_omni.models.qwen import CausalLM

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512)


def _pair(kind: str, tie: bool = False):
    torch.manual_seed(0)
    if kind == "qwen3":
        cfg = DecoderConfig(**SMALL, qk_norm=True, attention_bias=False, tie_word_embeddings=tie, model_type="qwen3")
        hf_cfg = transformers.Qwen3Config(**SMALL, tie_word_embeddings=tie, attention_bias=False)
        hf = transformers.Qwen3ForCausalLM(hf_cfg)
    elif kind == "llama":  # the family decides: no q/k/v biases, no q/k norms
        cfg = DecoderConfig(**SMALL, tie_word_embeddings=tie, llm_family="llama")
        hf_cfg = transformers.LlamaConfig(**SMALL, tie_word_embeddings=tie, attention_bias=False)
        hf = transformers.LlamaForCausalLM(hf_cfg)
    else:
        cfg = DecoderConfig(**SMALL, qk_norm=False, attention_bias=True, tie_word_embeddings=tie, model_type="qwen2")
        hf_cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=tie)
        hf = transformers.Qwen2ForCausalLM(hf_cfg)
    hf.config._attn_implementation = "eager"
    with torch.no_grad():  # non-trivial norms and biases so that swapped keys show up
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.eval()
    ours = CausalLM(cfg).eval()
    load_into(ours, hf.state_dict(), tied=[("lm_head.weight", "model.embed_tokens.weight")])
    return ours, hf


@pytest.mark.parametrize("kind", ["qwen3", "qwen2", "llama"])
@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_transformers(kind, tie):
    ours, hf = _pair(kind, tie)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 37))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        out = ours(ids)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-4
    if tie:
        assert ours.lm_head.weight is ours.model.embed_tokens.weight


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])
def test_padded_batch_matches_transformers(kind):
    ours, hf = _pair(kind)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 20))
    pad = torch.ones(2, 20, dtype=torch.bool)
    pad[1, 13:] = False  # right padding on the second sequence
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=pad.long()).logits
        out = ours(ids, pad_mask=pad)
    assert (out - ref)[pad].abs().max().item() < 1e-4


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])
def test_cached_steps_equal_uncached(kind):
    ours, _ = _pair(kind)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 24))
    with torch.no_grad():
        full = ours(ids)
        cache = cache_for(ours.cfg, batch_size=2, capacity=8)  # small on purpose: must grow
        steps = [ours(ids[:, :10], cache=cache, cache_pos=0)]
        for t in range(10, 24):
            steps.append(ours(ids[:, t:t + 1], cache=cache, cache_pos=t))
    stepped = torch.cat(steps, dim=1)
    assert (stepped - full).abs().max().item() < 1e-5
    assert cache.lengths.tolist() == [24, 24]


def test_per_sequence_positions_batch_equals_single():
    """Two prompts of different lengths in one cache, each at its own positions, equal alone."""
    ours, _ = _pair("qwen3")
    a = torch.randint(0, 300, (1, 9))
    b = torch.randint(0, 300, (1, 14))
    with torch.no_grad():
        ref_a, ref_b = ours(a), ours(b)
        cache = cache_for(ours.cfg, batch_size=2, capacity=32)
        # prefill: right-pad a to 14; its padded slots (9..13) are overwritten by later steps
        batch = torch.cat([torch.cat([a, a[:, :5]], 1), b])
        pos = torch.arange(14).expand(2, 14)
        out = ours(batch, cache=cache, cache_pos=pos)
        assert (out[0, :9] - ref_a[0]).abs().max() < 1e-5
        assert (out[1] - ref_b[0]).abs().max() < 1e-5
        # one decode step each, at different positions
        nxt = torch.randint(0, 300, (2, 1))
        step = ours(nxt, cache=cache, cache_pos=torch.tensor([[9], [14]]))
        ref_a2 = ours(torch.cat([a, nxt[:1]], 1))[:, -1]
        ref_b2 = ours(torch.cat([b, nxt[1:]], 1))[:, -1]
    assert (step[0, 0] - ref_a2[0]).abs().max() < 1e-5
    assert (step[1, 0] - ref_b2[0]).abs().max() < 1e-5


def test_bf16_close_to_fp32():
    ours, _ = _pair("qwen3")
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        ref = ours(ids)
        out = ours.to(torch.bfloat16)(ids).float()
    rel = (out - ref).norm() / ref.norm()
    assert out.dtype == torch.float32 and rel < 0.05


def test_cache_bound_and_reset():
    cache = KVCache(1, 1, 1, 4, capacity=4, max_capacity=6)
    k = torch.randn(1, 1, 4, 4)
    cache.update(0, 0, k, k)
    with pytest.raises(CacheFullError, match="bounded at 6"):
        cache.update(0, 4, k, k)
    cache.reset()
    assert cache.lengths.tolist() == [0]


def test_mrope_matches_transformers():
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    section = (2, 3, 3)  # head_dim 16 -> 8 frequency pairs
    inv = rope_inv_freq(16, 10000.0)
    pos = torch.randint(0, 50, (3, 2, 7))
    cos, sin = rope_cos_sin(pos, inv, section)
    q = torch.randn(2, 4, 7, 16)
    k = torch.randn(2, 2, 7, 16)
    # reference: transformers' Qwen2.5-VL rotary recomposition, then its rotary application
    from types import SimpleNamespace

    freqs = pos.float()[..., None] * inv  # (3, B, T, D/2)
    recompose = m.Qwen2_5_VLRotaryEmbedding.recomposition_frequencies
    holder = SimpleNamespace(mrope_section=list(section))
    ref_cos, ref_sin = recompose(holder, freqs.cos()), recompose(holder, freqs.sin())
    ref_q, ref_k = m.apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    assert torch.allclose(apply_rope(q, cos, sin), ref_q, atol=1e-6)
    assert torch.allclose(apply_rope(k, cos, sin), ref_k, atol=1e-6)
    # equal positions on the three axes reduce to 1-D RoPE
    same = pos[0:1].expand(3, -1, -1)
    c3, s3 = rope_cos_sin(same, inv, section)
    c1, s1 = rope_cos_sin(pos[0], inv)
    assert torch.allclose(c3, c1) and torch.allclose(s3, s1)


def test_rope_frequencies_stay_fp32_in_bf16_models():
    ours, _ = _pair("qwen3")
    ours = ours.to(torch.bfloat16)
    assert ours.model.inv_freq.dtype == torch.float32
    assert torch.equal(ours.model.inv_freq, rope_inv_freq(16, SMALL["rope_theta"]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_query_attention_equals_sdpa(dtype):
    from mgm_omni.models.layers import one_query_attention

    q = torch.randn(3, 8, 1, 16, dtype=dtype)
    k, v = torch.randn(3, 2, 40, 16, dtype=dtype), torch.randn(3, 2, 40, 16, dtype=dtype)
    mask = (torch.arange(40) <= torch.tensor([39, 20, 5])[:, None])[:, None, None, :]  # per-sequence lengths
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (one_query_attention(q, k, v, mask) - ref).abs().max().item() < tol
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert (one_query_attention(q, k, v, None) - ref).abs().max().item() < tol
