"""Chunk-Based Parallel Decoding on the golden sets: parity with the official decode (through both decode
steps), two-path agreement (batched vs alone, streamed vs final), the vocoder token stream, stop rules,
retries, the cache bound, bad input and long-form text. The chunk state machine alone is in
``test_chunk_state.py``, k = 4 vs k = 1 in ``test_chunk_k4_vs_k1.py``."""

from __future__ import annotations

import functools
import json
import logging

import pytest
import torch
from golden import (
    DECODE_STEPS,
    apply_variant,
    case_params,
    cases_by_checkpoint,
    golden_params,
    load_case,
    speechlm_checkpoint,
    variant_rows,
)

from mgm_omni.generation.speech.chunk_state import AbortCause, RowKind
from mgm_omni.generation.speech.native_build import available as native_available
from mgm_omni.generation.speech.chunked_decode import DecodeConfig, RetryPolicy
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.generator import SpeechGenerator, SpeechRequest
from mgm_omni.generation.speech.prompt import SpeechPromptError
from mgm_omni.generation.speech.token_stream import official_vocoder_tokens
from mgm_omni.models.speech_lm import SpeechLM
from mgm_omni.text import Tokenizer

GREEDY = DecodeConfig(sampling=SamplingConfig(temperature=0.0))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["pytorch-step", "native-step"])
def step_engine(request):
    """Every golden decode runs through both decode steps: PyTorch's and the native CPU step."""
    if request.param == "native-step" and not native_available():
        pytest.skip("native step unavailable (no C compiler?)")
    return request.param


@functools.lru_cache(maxsize=2)
def _generators(gdir, step_engine) -> dict[str, SpeechGenerator]:
    """{checkpoint name: SpeechGenerator} for every checkpoint the set's decode cases name: the tiny
    checkpoint itself, or it with a variant's rows written in (the README's recipe)."""
    ckpt = speechlm_checkpoint(gdir)
    tokenizer = Tokenizer.from_dir(ckpt)
    native = step_engine == "native-step"
    gens = {}
    for name in cases_by_checkpoint(gdir):
        model = SpeechLM.from_pretrained(ckpt)
        rows = variant_rows(gdir, name)
        if rows is not None:
            apply_variant(model, rows)
        gens[name] = SpeechGenerator(model, tokenizer, GREEDY, native=native)
        assert (gens[name].native is not None) == native
    return gens


@pytest.fixture(scope="module", params=golden_params(DECODE_STEPS))
def golden(request, step_engine):
    """(set dir, {checkpoint name: SpeechGenerator}) for one golden set."""
    return request.param, _generators(request.param, step_engine)


def _request(d: dict) -> SpeechRequest:
    return SpeechRequest(d["target_text"], d["text_refer"], d["ref_tokens"])


def _eos_cases(gdir, n: int = 1) -> tuple[str, list[dict]]:
    """The checkpoint whose cases end through real all-eos rows (``tts_error`` false) and those cases,
    at most one per row count (so they finish at different steps); skips if fewer than ``n``."""
    return _pick(gdir, n, tts_error=False)


def _capped_cases(gdir, n: int = 1) -> tuple[str, list[dict]]:
    """The checkpoint whose cases end through the step cap (random weights: eos never wins)."""
    return _pick(gdir, n, tts_error=True)


def _pick(gdir, n: int, tts_error: bool) -> tuple[str, list[dict]]:
    best: tuple[str, list[dict]] = ("", [])
    for ckpt, cases in cases_by_checkpoint(gdir).items():
        if all(c["tts_error"] is tts_error for c in cases):
            distinct = list({len(c["rows"]): c for c in cases}.values())
            if len(distinct) > len(best[1]):
                best = (ckpt, sorted(distinct, key=lambda c: c["name"]))
    if len(best[1]) < n:
        pytest.skip(f"golden set has fewer than {n} decode cases of one checkpoint with tts_error={tts_error}")
    return best


@pytest.mark.parametrize("case", case_params())
def test_greedy_decode_reproduces_official(case, step_engine):
    gdir, name = case
    d = load_case(gdir, name)
    gen = _generators(gdir, step_engine)[d["checkpoint"]]
    req = _request(d)
    k, ids = gen.cfg.speech_token_count, gen.ids
    prompt = gen.prompt(req)
    assert prompt.rows.tolist() == d["prefill_rows_full"][: d["prefill_len"]]
    assert prompt.buffer == d["text_tokens_buffer"]
    out = gen.generate(req)
    ref = [tuple(r) for r in d["rows"]]
    assert len(out.rows) == len(ref) and out.finish_reason == "end"
    assert out.rows[:-1] == ref[:-1]  # every row, text and speech, up to the END row
    # END row: same eos text id; speech forced to pad instead of the official's sampled ids (spec §2.9 #5)
    assert out.rows[-1] == (ref[-1][0],) + (ids.speech_pad,) * k and out.kinds[-1] is RowKind.END
    assert out.tts_error == d["tts_error"]
    if out.tts_error:  # with random weights every chunk ends through the step cap
        assert {a.cause for a in out.aborts} == {AbortCause.STEP_CAP}
        assert len(out.aborts) == sum(1 for kd in out.kinds if kd is RowKind.CLOSE)
    # The official token2audio (pre_pad 1 unless the config sets it) on these rows gives the golden
    # vocoder stream exactly ...
    assert gen.vocoder_tokens(out.rows, official_compat=True) == d["vocoder_tokens"]
    # ... ours drops the trained delay rows per chunk instead: that many rows fewer per chunk.
    official_pre_pad = gen.cfg.speech_token_pre_pad if gen.cfg.speech_token_pre_pad is not None else 1
    n_chunks = sum(1 for kd in out.kinds if kd is RowKind.SEP)
    assert out.tokens == official_vocoder_tokens(out.rows, ids, pre_pad=gen.cfg.delay_rows)
    assert len(out.tokens) == len(d["vocoder_tokens"]) - (gen.cfg.delay_rows - official_pre_pad) * k * n_chunks
    assert all(0 <= t < ids.speech_eos for t in out.tokens)


def test_batched_equals_one_by_one(golden):
    """Requests of different prompt lengths in one batch, each with its own chunk schedule, give the
    rows each gives alone (here: the official golden rows)."""
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir, 2)
    outs = gens[ckpt].generate([_request(d) for d in runs])
    assert len({len(o.rows) for o in outs}) == len(runs)  # they finish at different steps
    for d, out in zip(runs, outs):
        assert out.rows[:-1] == [tuple(r) for r in d["rows"][:-1]]
        assert out.tts_error == d["tts_error"] is False


def test_batched_base_model_with_row_limit(golden):
    gdir, gens = golden
    ckpt, runs = _capped_cases(gdir, 2)
    runs = runs[:2]
    limit = min(130, *(len(d["rows"]) - 1 for d in runs))
    outs = gens[ckpt].with_config(max_new_rows=limit).generate([_request(d) for d in runs])
    for d, out in zip(runs, outs):
        assert out.finish_reason == "max_rows" and len(out.rows) == limit
        assert out.rows == [tuple(r) for r in d["rows"][:limit]]
        voiced = [r[0] for r, k in zip(out.rows, out.kinds) if k is RowKind.TEXT]
        assert voiced + out.unspoken == d["text_tokens_buffer"]


def test_streamed_rows_equal_final_rows(golden):
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir, 2)
    gen = gens[ckpt]
    reqs = [_request(d) for d in runs[:2]]
    finals = gen.generate(reqs)
    seen_rows, seen_tokens, order = {0: [], 1: []}, {0: [], 1: []}, []
    first_token_at = None
    for i, item in enumerate(gen.stream(reqs)):
        seen_rows[item.event.request].append(item.event.row)
        seen_tokens[item.event.request] += item.tokens
        order.append(item.event.request)
        if item.tokens and first_token_at is None:
            first_token_at = i
    for r in (0, 1):
        assert seen_rows[r] == finals[r].rows
        assert seen_tokens[r] == finals[r].tokens  # streaming extraction == offline extraction
    assert order[:4] == [0, 1, 0, 1]  # rows of the two requests interleave as they are decoded
    assert first_token_at is not None and first_token_at < 20  # the vocoder can start long before the end


def test_cache_growth_and_bound(golden):
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir)
    d = max(runs, key=lambda c: len(c["rows"]))
    req, gen = _request(d), gens[ckpt]
    grown = gen.with_config(initial_cache_rows=8).generate(req)  # caches double several times on the way
    assert grown.rows[:-1] == [tuple(r) for r in d["rows"][:-1]]
    bound = d["prefill_len"] + min(40, len(d["rows"]) // 2)
    out = gen.with_config(max_cache_rows=bound).generate(req)
    assert out.finish_reason == "cache_full"
    assert len(out.rows) == bound - d["prefill_len"] + 1  # the last row is returned but never cached
    assert out.rows == [tuple(r) for r in d["rows"][: len(out.rows)]]
    voiced = [r[0] for r, k in zip(out.rows, out.kinds) if k is RowKind.TEXT]
    assert voiced + out.unspoken == d["text_tokens_buffer"]  # the caller can continue from here


def test_retry_policy_records_attempts(golden):
    gdir, gens = golden
    ckpt, runs = _capped_cases(gdir)
    req = _request(runs[0])
    gen = gens[ckpt].with_config(sampling=SamplingConfig(temperature=0.2), seed=7)
    short = SpeechRequest("Hello world.", req.reference_text, req.reference_tokens)
    out = gen.generate_with_retry(short, RetryPolicy(max_attempts=3))
    assert [a["temperature"] for a in out.attempts] == pytest.approx([0.2, 0.3, 0.4])  # never a jump to 1.0
    assert out.tts_error and all(a["tts_error"] for a in out.attempts)  # random weights: never recovers
    assert out.cause in (AbortCause.STEP_CAP, AbortCause.BLANK_RUN)
    assert RetryPolicy(max_attempts=12).temperature(11, 0.3) == 1.0
    assert RetryPolicy(3, temperatures=(0.5, 0.7)).temperature(2, 0.3) == 0.7


def test_sampled_decode_is_seeded(golden):
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir)
    req = _request(runs[0])
    gen = gens[ckpt].with_config(sampling=SamplingConfig(temperature=0.8, top_k=20, top_p=0.9), seed=3)
    a, b = gen.generate(req), gen.generate(req)
    assert a.rows == b.rows
    c = gen.with_config(seed=4).generate(req)
    assert a.rows != c.rows


def test_bad_input(golden, caplog):
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir)
    gen, req = gens[ckpt], _request(runs[0])
    ref = dict(reference_text=req.reference_text, reference_tokens=req.reference_tokens)
    with pytest.raises(SpeechPromptError, match="empty"):
        gen.generate(SpeechRequest("", **ref))
    with pytest.raises(SpeechPromptError, match="nothing to speak"):
        gen.generate(SpeechRequest("**\n\n## ** \n", **ref))
    with pytest.raises(SpeechPromptError, match="control token"):
        gen.generate(SpeechRequest("one<|audio_sep|>two", **ref))
    eos = gen.ids.speech_eos
    for bad in ([1, 2, eos, 3], [1, -4, 2, 3], [1.5, 2, 3, 4], [1, 2]):
        with pytest.raises(SpeechPromptError, match="reference"):
            gen.generate(SpeechRequest("Hello.", req.reference_text, bad))
    # Only punctuation is voiced normally (one chunk, the model decides what it sounds like).
    out = gen.generate(SpeechRequest("?!...", **ref))
    assert out.finish_reason == "end" and [k for k in out.kinds if k is RowKind.TEXT]
    # A transcript longer than the reference audio: warned about, cut to the speech block (as official).
    with caplog.at_level(logging.WARNING):
        prompt = gen.prompt(SpeechRequest("Hello.", "word " * 200, req.reference_tokens))
    assert "transcript" in caplog.text
    k = gen.cfg.speech_token_count
    assert prompt.block[1] - prompt.block[0] == gen.cfg.delay_rows + len(req.reference_tokens) // k + 1
    # 1 MB of text: accepted and decoded chunk by chunk; here cut by the row limit, the rest is returned.
    big = ("The cat sat on the mat. " * 44000)[:1_000_000]
    out = gen.with_config(max_new_rows=60).generate(SpeechRequest(big, **ref))
    assert out.finish_reason == "max_rows" and len(out.unspoken) > 200_000


@pytest.mark.slow
def test_long_form_ten_minutes(golden):
    """4000+ text tokens (10+ minutes of speech) in one request: one growing KV cache, chunk after chunk."""
    gdir, gens = golden
    ckpt, runs = _eos_cases(gdir)
    d = max(runs, key=lambda c: len(c["text_tokens_buffer"]))
    gen = gens[ckpt].with_config(initial_cache_rows=256, max_new_rows=20000)
    long_text = " ".join([d["target_text"]] * (4000 // len(d["text_tokens_buffer"]) + 2))
    req = SpeechRequest(long_text, d["text_refer"], d["ref_tokens"])
    out = gen.generate(req)
    n_text = len(gen.prompt(req).buffer)
    assert n_text > 4000 and out.finish_reason == "end" and not out.unspoken
    assert len(out.tokens) / 25 > 600  # seconds of speech for the vocoder
    assert out.kinds.count(RowKind.SEP) + 1 >= n_text / 101  # chunked, never more than 101 text ids a chunk


@pytest.mark.parametrize("gdir", golden_params(DECODE_STEPS))
def test_generator_from_pretrained(gdir):
    """Model, tokenizer and sampling settings from the checkpoint directory; on CPU the fast step is on."""
    ckpt = speechlm_checkpoint(gdir)
    config = json.loads((ckpt / "config.json").read_text())
    d = next(c for name, cases in cases_by_checkpoint(gdir).items() if variant_rows(gdir, name) is None
             for c in cases)  # a case decoded with the checkpoint as saved
    req, n = _request(d), min(40, len(d["rows"]) - 1)
    gen = SpeechGenerator.from_pretrained(ckpt, temperature=0.0)
    assert gen.config.sampling == SamplingConfig(temperature=0.0, top_k=50, top_p=1.0, repetition_penalty=1.0)
    assert not gen.packed and len(gen.tokenizer) == config["vocab_size"]
    assert gen.cfg.delay_rows == config.get("speech_token_pre_pad", 4)  # official default when absent: 4
    out = gen.with_config(max_new_rows=n).generate(req)
    assert out.rows == [tuple(r) for r in d["rows"][:n]]
    half = SpeechGenerator.from_pretrained(ckpt, dtype=torch.bfloat16, temperature=0.0)
    out = half.with_config(max_new_rows=n).generate(req)
    assert (half.native is not None) == native_available()  # the native step when it builds ...
    assert half.packed == (half.native is None)  # ... else oneDNN-packed weights
    assert [r[0] for r in out.rows] == [r[0] for r in d["rows"][:n]]  # text is forced; speech is bf16
