"""The native CPU decode step (``generation/native_step.py`` + ``csrc/decode_step.c``) against the PyTorch step."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.generation.speech import native_build
from mgm_omni.generation.speech.native_build import NativeUnavailable
from mgm_omni.generation.speech.runner import SpeechLMRunner
from mgm_omni.models.speech_lm import random_speech_lm
from test_speech_lm import random_rows, small_cfg

from mgm_omni.config import SpeechLMConfig

pytestmark = pytest.mark.skipif(not native_build.available(), reason="native step unavailable (no C compiler?)")


def wider_cfg() -> SpeechLMConfig:
    """Hidden 128: wide enough for quantisation and rounding statistics to settle."""
    return SpeechLMConfig(vocab_size=50 + 4 * 40, tokenizer_text_size=50, tokenizer_speech_size=40,
                          speech_token_count=4, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=32, tts_adapter_type="qwen3",
                          tts_adapter_config="(2,128,4_2,256)", rope_theta=10000.0)


def _native(model, weights=None, threads=None):
    from mgm_omni.generation.speech.native_step import NativeStep

    return NativeStep(model, weights, threads)


def _decode(runner: SpeechLMRunner, prompts: list[torch.Tensor], steps: torch.Tensor) -> list[torch.Tensor]:
    """Prefill ``prompts`` then feed steps[:, t] one row per sequence; logits of every call."""
    out = [runner.start(prompts)]
    for t in range(steps.shape[1]):
        out.append(runner.step(steps[:, t]))
    return out


@pytest.mark.parametrize("adapter", ["(2,32,4_2,48)", None])
def test_fp32_native_step_equals_pytorch_step(adapter):
    """Batch of 2 with different prompt lengths, caches that must grow, Qwen3 q/k norms."""
    model = random_speech_lm(small_cfg(adapter=adapter), seed=1)
    rows = random_rows(model.cfg, 2, 30, seed=3)
    prompts, steps = [rows[0, :9], rows[1, :4]], rows[:, 9:]
    ref = _decode(SpeechLMRunner(model, initial_rows=4), prompts, steps)
    got = _decode(SpeechLMRunner(model, initial_rows=4, native=_native(model)), prompts, steps)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())


def test_native_step_with_qkv_bias_and_no_qk_norm():
    """A Qwen2-style stack (q/k/v bias, no q/k norm) through the same kernel."""
    model = random_speech_lm(small_cfg(attention_bias=True, qk_norm=False), seed=4)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.v_proj.bias.normal_()
    rows = random_rows(model.cfg, 1, 12, seed=5)
    ref = _decode(SpeechLMRunner(model), [rows[0, :5]], rows[:, 5:])
    got = _decode(SpeechLMRunner(model, native=_native(model)), [rows[0, :5]], rows[:, 5:])
    for a, b in zip(ref, got):
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())


def test_threads_do_not_change_results():
    model = random_speech_lm(small_cfg(), seed=2)
    rows = random_rows(model.cfg, 2, 14, seed=6)
    outs = []
    for threads in (1, 2, 3):
        runner = SpeechLMRunner(model, native=_native(model, threads=threads))
        outs.append(torch.stack(_decode(runner, [rows[0, :6], rows[1, :6]], rows[:, 6:])))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_batched_native_equals_one_by_one_and_keep():
    """Sequences of a batch do not see each other; dropping one (``keep``) leaves the other unchanged."""
    model = random_speech_lm(small_cfg(), seed=7)
    native = _native(model)
    rows = random_rows(model.cfg, 3, 16, seed=8)
    lengths = [7, 3, 5]
    runner = SpeechLMRunner(model, native=native)
    batched = [runner.start([rows[i, :n] for i, n in enumerate(lengths)])]
    for t in range(4):
        batched.append(runner.step(torch.stack([rows[i, n + t] for i, n in enumerate(lengths)])))
    runner.keep([2, 0])
    tail = [runner.step(torch.stack([rows[i, lengths[i] + 4 + t] for i in (2, 0)])) for t in range(3)]
    for i, n in enumerate(lengths):
        alone = _decode(SpeechLMRunner(model, native=native), [rows[i, :n]], rows[i:i + 1, n:n + 7])
        for t in range(5):
            assert torch.allclose(batched[t][i], alone[t][0], atol=1e-5)
        if i in (2, 0):
            for t in range(3):
                assert torch.allclose(tail[t][[2, 0].index(i)], alone[5 + t][0], atol=1e-5)


def test_bf16_native_is_closer_to_float32_than_the_pytorch_bf16_step():
    """bf16 weights with float32 activations (native) vs bf16 everywhere (PyTorch), both against the
    float32 computation on the same bf16-rounded weights."""
    cfg = wider_cfg()
    half = random_speech_lm(cfg, seed=9, dtype=torch.bfloat16)
    full = random_speech_lm(cfg, seed=9).float()
    full.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    rows = random_rows(cfg, 1, 24, seed=10)
    prompts, steps = [rows[0, :8]], rows[:, 8:]
    ref = _decode(SpeechLMRunner(full), prompts, steps)[1:]
    torch_bf16 = _decode(SpeechLMRunner(half), prompts, steps)[1:]
    native_bf16 = _decode(SpeechLMRunner(half, native=_native(half)), prompts, steps)[1:]
    err = {name: max((a - b).abs().max().item() for a, b in zip(ref, out))
           for name, out in (("torch", torch_bf16), ("native", native_bf16))}
    assert _native(half).weights == "bf16"
    assert err["native"] < err["torch"], err
    agree = torch.stack([(a.argmax(-1) == b.argmax(-1)).float().mean() for a, b in zip(ref, native_bf16)])
    assert agree.mean() > 0.9


def test_int8_native_stays_close():
    cfg = wider_cfg()
    model = random_speech_lm(cfg, seed=11)
    rows = random_rows(cfg, 1, 24, seed=12)
    ref = torch.cat(_decode(SpeechLMRunner(model), [rows[0, :8]], rows[:, 8:])[1:])
    got = torch.cat(_decode(SpeechLMRunner(model, native=_native(model, "int8")), [rows[0, :8]], rows[:, 8:])[1:])
    assert ((ref - got).norm() / ref.norm()).item() < 0.1
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean().item() > 0.8


def test_bad_inputs():
    model = random_speech_lm(small_cfg(), seed=3)
    native = _native(model)
    runner = SpeechLMRunner(model, native=native)
    runner.start([random_rows(model.cfg, 1, 4)[0]])
    with pytest.raises(ValueError, match="columns"):
        native(torch.zeros(1, 3, dtype=torch.long), [4], runner.caches)
    with pytest.raises(ValueError, match="weights must be"):
        _native(model, "int4")
    with pytest.raises(IndexError, match="outside the cache"):
        native(torch.zeros(1, model.num_slots + 1, dtype=torch.long), [-1], runner.caches)


def test_disabled_and_failed_builds_raise_clear_errors(monkeypatch, tmp_path):
    native_build.load_library.cache_clear()
    try:
        monkeypatch.setenv("MGM_OMNI_NATIVE", "0")
        with pytest.raises(NativeUnavailable, match="MGM_OMNI_NATIVE"):
            native_build.load_library()
        native_build.load_library.cache_clear()
        monkeypatch.setenv("MGM_OMNI_NATIVE", "1")
        monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path))
        bad = tmp_path / "decode_step.c"
        bad.write_text("this is not C\n")
        monkeypatch.setattr(native_build, "SOURCE", bad)
        with pytest.raises(NativeUnavailable, match="compiling decode_step.c failed"):
            native_build.load_library()
        assert not list((tmp_path / "native").glob("*.so"))  # nothing half-built left behind
    finally:
        native_build.load_library.cache_clear()


def test_rebinds_every_layer_when_a_new_cache_reuses_some_addresses():
    """A new cache can get some of a freed cache's blocks back from the allocator (its first layer's keys and
    last layer's values, say) and not others: the step must then point every layer at the new storage, or
    it reads and writes freed memory (seen as corrupt rows when another thread reused that memory)."""
    from mgm_omni.generation.kv_cache import KVCache

    model = random_speech_lm(small_cfg(adapter=None), seed=1)
    cfg = model.cfg
    step = _native(model, threads=2)
    shape = (cfg.num_hidden_layers, 1, cfg.num_key_value_heads, cfg.dim_per_head, 8)
    first, second = KVCache(*shape), KVCache(*shape)
    second.k[0], second.v[-1] = first.k[0], first.v[-1]  # the blocks the allocator handed back
    row = random_rows(cfg, 1, 1, seed=5)[0]
    step(row, [0], (first, None))
    step(row, [0], (second, None))
    for layer, c in enumerate(step.backbone.layers):
        assert (c.k_cache, c.v_cache) == (second.k[layer].data_ptr(), second.v[layer].data_ptr())
    for layer in range(1, cfg.num_hidden_layers):  # the new storage got this step's keys, equal to the first's
        assert second.k[layer][0, :, 0].abs().sum() > 0 and torch.equal(second.k[layer], first.k[layer])


@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8"])
def test_every_instruction_set_computes_the_same_step(weights):
    """The plain-C, AVX2 and AVX-512 (and AMX where present) versions differ only in summation order."""
    from mgm_omni.generation.speech.native_step import supported_isas

    dtype = torch.bfloat16 if weights == "bf16" else torch.float32
    model = random_speech_lm(wider_cfg(), seed=13, dtype=dtype)
    rows = random_rows(model.cfg, 2, 14, seed=14)
    outs = {}
    for isa in supported_isas():
        runner = SpeechLMRunner(model, native=_native_isa(model, weights, isa))
        outs[isa] = torch.stack(_decode(runner, [rows[0, :6], rows[1, :4]], rows[:, 6:])[1:])
    ref = outs["generic"]
    # a bf16 KV cache re-rounds what differs in the last bit; int8 codes can flip by one
    tol = {"fp32": 1e-5, "bf16": 1e-3, "int8": 1e-2}[weights]
    for isa, out in outs.items():
        assert ((out - ref).norm() / ref.norm()).item() < tol, isa


def test_rope_positions_apart_from_cache_slots():
    """A row written at slot s with RoPE position p (a windowed cache) equals the PyTorch step doing the same."""
    model = random_speech_lm(small_cfg(), seed=15)
    native = _native(model)
    rows = random_rows(model.cfg, 1, 9, seed=16)
    outs = []
    for step in (None, native):
        runner = SpeechLMRunner(model, native=step, window_rows=None)
        runner.start([rows[0, :8]])
        runner.positions = [20]  # as if 12 rows had been dropped before slot 8
        outs.append(runner.step(rows[:, 8]))
    assert (outs[0] - outs[1]).abs().max().item() < 1e-4
    moved = SpeechLMRunner(model, native=native)
    moved.start([rows[0, :8]])
    assert (moved.step(rows[:, 8]) - outs[1]).abs().max().item() > 1e-4  # the position does matter


def _native_isa(model, weights, isa):
    from mgm_omni.generation.speech.native_step import NativeStep

    return NativeStep(model, weights, isa=isa)
