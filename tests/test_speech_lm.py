"""SpeechLM model: official checkpoint loading, forward parity with the official golden, the training
loss, teacher-forced decode logits, cached == uncached, batched == single, any k (k = 1 included)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from golden import (
    DECODE_STEPS,
    SPEECHLM_CONFIG,
    apply_variant,
    case_params,
    decode_cases,
    golden_params,
    load_case,
    speechlm_checkpoint,
    variant_rows,
)
from safetensors.torch import load_file

from mgm_omni.checkpoint import CheckpointError
from mgm_omni.config import ConfigError, SpeechLMConfig
from mgm_omni.generation.speech.runner import CacheBoundError, SpeechLMRunner
from mgm_omni.models.speech_lm import SpeechLM, random_speech_lm, speech_lm_loss


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(k: int = 4, speech_size: int = 40, text_size: int = 50, adapter: str | None = "(2,32,4_2,48)",
              **kw) -> SpeechLMConfig:
    """A tiny SpeechLM with any k and speech vocabulary size."""
    return SpeechLMConfig(
        vocab_size=text_size + k * speech_size, tokenizer_text_size=text_size, tokenizer_speech_size=speech_size,
        speech_token_count=k, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, tts_adapter_type="qwen3" if adapter else None,
        tts_adapter_config=adapter, rope_theta=10000.0, **kw)


def random_rows(cfg: SpeechLMConfig, b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, cfg.text_size, (b, t, 1), generator=g)
    speech = torch.randint(0, cfg.tokenizer_speech_size, (b, t, cfg.speech_token_count), generator=g)
    return torch.cat([text, speech], dim=-1)


@pytest.fixture(scope="module")
def official(request):
    gdir = request.param
    return gdir, SpeechLM.from_pretrained(speechlm_checkpoint(gdir))


@functools.cache
def _case_model(ckpt, rows_file) -> SpeechLM:
    """The checkpoint a decode case was made with: the base, or the base with a variant's rows written in."""
    model = SpeechLM.from_pretrained(ckpt)
    if rows_file is not None:
        apply_variant(model, rows_file)
    return model


@pytest.mark.parametrize("official", golden_params(SPEECHLM_CONFIG), indirect=True)
def test_official_checkpoint_loads(official):
    gdir, model = official
    ckpt = speechlm_checkpoint(gdir)
    config = json.loads((ckpt / "config.json").read_text())
    state = load_file(str(ckpt / "model.safetensors"))
    tied = config.get("tie_word_embeddings", model.cfg.tie_word_embeddings)
    assert model.cfg.tie_word_embeddings == tied
    assert ("lm_head.weight" not in state) == tied  # tied: the loader must re-tie it
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    adapter_layers = {k.split(".")[2] for k in state if k.startswith("tts_adapter.layers.")}
    assert len(model.tts_adapter.layers) == len(adapter_layers) == model.cfg.adapter_config().num_hidden_layers
    assert model.tts_adapter.norm is None
    ours = model.state_dict()
    assert set(ours) == set(state) | ({"lm_head.weight"} if tied else set())
    for name, tensor in state.items():  # every saved tensor (random norm gains included) arrives
        assert torch.equal(ours[name], tensor.float()), name
    # the speech heads are a view of lm_head (no copy of the 177k-row matrix)
    assert model.speech_head_weight.data_ptr() == model.lm_head.weight[model.cfg.text_size].data_ptr()


@pytest.mark.parametrize("official", golden_params(SPEECHLM_CONFIG), indirect=True)
def test_forward_and_loss_match_official(official):
    gdir, model = official
    z = np.load(gdir / "speechlm" / "forward_golden.npz")
    ref = json.loads((gdir / "speechlm" / "forward_golden.json").read_text())
    rows = torch.from_numpy(z["rows"])[None]
    with torch.no_grad():
        h, g = model(rows)
        speech, text = model.speech_logits(g), model.text_logits(h)
        loss, loss_text, loss_speech = speech_lm_loss(text, speech, torch.from_numpy(z["labels"])[None])
    t, k = z["rows"].shape[0], z["rows"].shape[1] - 1
    assert speech.shape == (1, *z["speech_logits"].shape) == (1, t, k, model.cfg.tokenizer_speech_size)
    assert text.shape == (1, *z["text_logits"].shape) == (1, t, model.cfg.text_size)
    assert (h[0] - torch.from_numpy(z["llm_hidden"])).abs().max() < 1e-4
    assert (speech[0] - torch.from_numpy(z["speech_logits"])).abs().max() < 1e-4
    assert (text[0] - torch.from_numpy(z["text_logits"])).abs().max() < 1e-4
    assert loss.item() == pytest.approx(ref["loss"], abs=1e-4)
    assert loss_text.item() == pytest.approx(ref["loss_text"], abs=1e-4)
    assert loss_speech.item() == pytest.approx(ref["loss_speech"], abs=1e-4)


@pytest.mark.parametrize("case", case_params())
def test_teacher_forced_decode_logits_match_official(case):
    """Prefill the golden prompt, feed the golden rows one by one through the KV-cached step, and compare
    every step's top-1 logit, eos logit and argmax with the official run (near-ties tolerated)."""
    gdir, name = case
    d = load_case(gdir, name)
    model = _case_model(speechlm_checkpoint(gdir), variant_rows(gdir, d["checkpoint"]))
    steps = np.load(gdir / "speechlm" / "decode" / "decode_steps.npz")
    prompt = torch.tensor(d["prefill_rows_full"][: d["prefill_len"]])
    gen = torch.tensor(d["rows"])
    runner = SpeechLMRunner(model, initial_rows=64)  # small: the caches must grow on the way
    logits = [runner.start([prompt])[0]]
    for row in gen[:-1]:
        logits.append(runner.step(row[None])[0])
    logits = torch.stack(logits)  # (N, k, S)
    top1 = torch.from_numpy(steps[f"{name}/top1"])
    assert logits.shape[:2] == top1.shape
    assert (logits.max(-1).values - top1).abs().max() < 1e-3
    eos = model.cfg.tokenizer_speech_size - 2  # relative ids: codes, then eos, then pad
    assert (logits[..., eos] - torch.from_numpy(steps[f"{name}/eos_logit"])).abs().max() < 1e-3
    first = torch.from_numpy(steps[f"{name}/first_step_speech_logits"])
    assert (logits[: len(first)] - first).abs().max() < 1e-3
    differ = logits.argmax(-1) != torch.from_numpy(steps[f"{name}/argmax"])
    assert (torch.from_numpy(steps[f"{name}/margin"])[differ] < 1e-3).all()  # only near-ties may flip


@pytest.mark.parametrize("k", [4, 1, 3])
def test_cached_decode_equals_uncached_forward(k):
    cfg = small_cfg(k=k)
    model = random_speech_lm(cfg, seed=k)
    rows = random_rows(cfg, 1, 30, seed=1)
    with torch.no_grad():
        full = model.speech_logits(model(rows)[1])[0]  # (T, k, S)
    runner = SpeechLMRunner(model, initial_rows=4)
    stepped = [runner.start([rows[0, :10]])[0]]
    for t in range(10, 29):
        stepped.append(runner.step(rows[0, t:t + 1])[0])
    assert full.shape == (30, k, cfg.tokenizer_speech_size)
    assert (torch.stack(stepped) - full[9:29]).abs().max() < 1e-4  # logits ~10: fp32 rounding


def test_batched_prefill_and_steps_equal_single_sequences():
    """Different prompt lengths in one batch: per-sequence cache positions give each sequence exactly
    its own logits; a finished sequence can leave the batch."""
    cfg = small_cfg()
    model = random_speech_lm(cfg, seed=3)
    seqs = [random_rows(cfg, 1, n, seed=n)[0] for n in (17, 9, 13)]
    prompts = [s[:n] for s, n in zip(seqs, (10, 4, 7))]
    singles = []
    for s, p in zip(seqs, prompts):
        r = SpeechLMRunner(model)
        out = [r.start([p])[0]]
        out += [r.step(row[None])[0] for row in s[len(p):len(p) + 5]]
        singles.append(torch.stack(out))
    r = SpeechLMRunner(model)
    batched = [r.start(prompts)]
    for i in range(5):
        batched.append(r.step(torch.stack([s[len(p) + i] for s, p in zip(seqs, prompts)])))
    batched = torch.stack(batched, dim=1)  # (B, 6, k, S)
    for b in range(3):
        assert (batched[b] - singles[b]).abs().max() < 1e-4
    r.keep([2, 0])  # drop the middle sequence, reorder
    nxt = r.step(torch.stack([seqs[2][12], seqs[0][15]]))
    ref2 = SpeechLMRunner(model)
    ref2.start([seqs[2][:12]])
    assert (nxt[0] - ref2.step(seqs[2][12][None])[0]).abs().max() < 1e-5


def test_model_without_adapter_and_wide_adapter_heads():
    plain = random_speech_lm(small_cfg(adapter=None))
    rows = random_rows(plain.cfg, 2, 5)
    h, g = plain(rows)
    assert g is h  # no adapter: the speech heads read the backbone state
    # adapter with 8 query heads of head_dim 8: q_proj is 32 -> 64, wider than the hidden size
    wide = random_speech_lm(small_cfg(adapter="(1,32,8_4,40)"))
    assert wide.tts_adapter.layers[0].self_attn.q_proj.weight.shape == (64, 32)
    assert wide.tts_adapter.layers[0].self_attn.k_proj.weight.shape == (16, 32)
    assert wide.speech_logits(wide(rows)[1]).shape == (2, 5, 4, 40)


def test_bad_rows_and_configs():
    model = random_speech_lm(small_cfg(k=2))
    with pytest.raises(ValueError, match="3 columns"):
        model(torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ConfigError, match="must equal hidden_size"):
        small_cfg(adapter="(2,64,4_2,48)")
    with pytest.raises(ConfigError, match="vocab_size"):
        SpeechLMConfig(vocab_size=100, tokenizer_text_size=50, tokenizer_speech_size=40, speech_token_count=2,
                       hidden_size=32, tts_adapter_config="(1,32,4,48)")


def test_cache_bound_is_enforced():
    model = random_speech_lm(small_cfg())
    runner = SpeechLMRunner(model, max_rows=8)
    rows = random_rows(model.cfg, 1, 12)[0]
    with pytest.raises(CacheBoundError):
        runner.start([rows[:8]])
    runner.start([rows[:6]])
    runner.step(rows[6:7])
    runner.step(rows[7:8])
    assert not runner.room(0)
    with pytest.raises(CacheBoundError):
        runner.step(rows[8:9])
    assert runner.caches[0].capacity <= 8


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        SpeechLM.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps(small_cfg().to_dict()))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        SpeechLM.from_pretrained(tmp_path)


def test_packed_bf16_weights_match_plain():
    """oneDNN-packed linears and speech head (the fast CPU bf16 path) give the plain path's logits."""
    from mgm_omni.generation.speech.cpu_linear import PackedLinear, pack_linears, packing_available
    from mgm_omni.generation.speech.runner import speech_head

    model = random_speech_lm(small_cfg(), seed=2, dtype=torch.bfloat16)
    if not packing_available(model.lm_head.weight):
        pytest.skip("oneDNN bf16 packing is not available in this torch build or on this CPU (needs AVX-512 BF16/BW or AVX-NE-CONVERT)")
    rows = random_rows(model.cfg, 1, 12)[0]
    plain = SpeechLMRunner(model)
    ref = [plain.start([rows[:8]])] + [plain.step(rows[t:t + 1]) for t in range(8, 11)]
    keys = list(model.state_dict())
    assert pack_linears(model, skip=("lm_head",)) == 2 * 7 + 2 * 7
    assert isinstance(model.model.layers[0].mlp.up_proj, PackedLinear) and list(model.state_dict()) == keys
    packed = SpeechLMRunner(model, head=speech_head(model, pack=True))
    out = [packed.start([rows[:8]])] + [packed.step(rows[t:t + 1]) for t in range(8, 11)]
    for a, b in zip(ref, out):
        assert (a - b).abs().max() < 0.05 * a.abs().max()  # bf16: a few units in the last place
        assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.7


def test_rope_frequencies_stay_float32_in_bf16():
    model = random_speech_lm(small_cfg(), dtype=torch.bfloat16)
    ref = SpeechLM(small_cfg()).model.inv_freq
    for stack in (model.model, model.tts_adapter):
        assert stack.inv_freq.dtype == torch.float32 and torch.equal(stack.inv_freq, ref)


@pytest.mark.parametrize("gdir", golden_params(DECODE_STEPS))
def test_int8_mode_keeps_speech_logits_close(gdir):
    """The opt-in int8 mode (native int8 steps where the native step builds, else PyTorch's dynamic int8
    layers): measured 98-99 % top-1 agreement on the golden runs (whose random logits have many
    near-ties) and a few % relative logit error, step by step after a float prefill."""
    from mgm_omni.generation.speech.generator import SpeechGenerator

    ckpt = speechlm_checkpoint(gdir)
    ref, q = SpeechGenerator.from_pretrained(ckpt, native=False), SpeechGenerator.from_pretrained(ckpt, quantize="int8")
    if q.native is not None:
        assert q.native.weights == "int8"
    else:
        assert type(q.decode_model.model.layers[0].mlp.up_proj) is not torch.nn.Linear  # really quantised
        assert type(q.model.model.layers[0].mlp.up_proj) is torch.nn.Linear  # in a copy: the model is untouched
    # the shortest case decoded with the base checkpoint (no variant rows)
    cases = [load_case(gdir, n) for n in decode_cases(gdir)]
    run = min((c for c in cases if variant_rows(gdir, c["checkpoint"]) is None), key=lambda c: len(c["rows"]))
    rows = torch.tensor(run["prefill_rows_full"][: run["prefill_len"]] + run["rows"])
    n = run["prefill_len"]
    ra, rb = ref.runner(), q.runner()
    a, b = [ra.start([rows[:n]])], [rb.start([rows[:n]])]
    for t in range(n, rows.shape[0] - 1):
        a.append(ra.step(rows[t:t + 1]))
        b.append(rb.step(rows[t:t + 1]))
    a, b = torch.cat(a[1:]), torch.cat(b[1:])  # the decode steps only
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() > 0.95
    assert ((a - b).norm() / a.norm()).item() < 0.1
    with pytest.raises(ValueError, match="quantize"):
        SpeechGenerator.from_pretrained(ckpt, quantize="int4")
