"""SpeechLM long-form KV policy: prompt block + the last W..1.25W rows, positions kept; bounded cache."""

from __future__ import annotations

import pytest
import torch
from test_speech_lm import random_rows, small_cfg

from mgm_omni.generation.speech import native_build
from mgm_omni.generation.speech.runner import SpeechLMRunner
from mgm_omni.models.speech_lm import random_speech_lm

PROMPT, STEPS, WINDOW = 6, 40, 8  # slack = 2: rows are dropped two at a time


@pytest.fixture(scope="module")
def model():
    return random_speech_lm(small_cfg(adapter="(2,32,4_2,48)"), seed=3)


@pytest.fixture(scope="module")
def rows(model):
    return random_rows(model.cfg, 1, PROMPT + STEPS + 1, seed=4)


def _decode(runner, rows):
    out = [runner.start([rows[0, :PROMPT]])]
    sizes = []
    for t in range(STEPS):
        out.append(runner.step(rows[:, PROMPT + t]))
        sizes.append(runner.caches[0].capacity)
    return out, sizes


def _visible(t: int) -> list[int]:
    """Rows the row written at step t attends to under the policy (prompt, kept rows, itself)."""
    kept = t if t < WINDOW + 2 else WINDOW + (t - WINDOW) % 2  # decoded rows held before step t
    return list(range(PROMPT)) + list(range(PROMPT + t - kept, PROMPT + t + 1))


def _reference(model, rows) -> list[torch.Tensor]:
    """One uncached pass over every row, each decoded row masked to what the policy let it see when it was
    decoded (its keys were computed then): the logits of every step."""
    n = PROMPT + STEPS
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for t in range(STEPS):
        row = torch.zeros(n, dtype=torch.bool)
        row[_visible(t)] = True
        mask[PROMPT + t] = row
    cos, sin = model.rope(torch.arange(n)[None])
    h = model.embed_rows(rows[:, :n])
    for stack in (model.model, model.tts_adapter):
        for layer in stack.layers:
            h = layer(h, cos, sin, mask[None, None])
        h = stack.norm(h) if stack.norm is not None else h
    return [model.speech_logits(h[:, i]).float() for i in range(PROMPT - 1, n)]


def test_window_larger_than_the_stream_changes_nothing(model, rows):
    full, _ = _decode(SpeechLMRunner(model, window_rows=None), rows)
    wide, _ = _decode(SpeechLMRunner(model, window_rows=64), rows)
    for a, b in zip(full, wide):
        assert torch.equal(a, b)


def test_windowed_steps_equal_one_masked_pass(model, rows):
    runner = SpeechLMRunner(model, window_rows=WINDOW, initial_rows=4)
    out, sizes = _decode(runner, rows)
    assert max(sizes) <= PROMPT + WINDOW + 2  # the cache never holds more than prompt + 1.25 W rows
    with torch.inference_mode():
        ref = _reference(model, rows)
    for t, (a, b) in enumerate(zip(out, ref)):
        assert (a - b).abs().max().item() < 1e-4, t
    full, _ = _decode(SpeechLMRunner(model, window_rows=None), rows)
    assert (full[-1] - out[-1]).abs().max().item() > 1e-3  # dropping rows does change the result


@pytest.mark.skipif(not native_build.available(), reason="native step unavailable")
def test_native_and_torch_steps_agree_on_the_window(model, rows):
    from mgm_omni.generation.speech.native_step import NativeStep

    ref, _ = _decode(SpeechLMRunner(model, window_rows=WINDOW), rows)
    got, _ = _decode(SpeechLMRunner(model, window_rows=WINDOW, native=NativeStep(model)), rows)
    for a, b in zip(ref, got):
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())


def test_batched_sequences_drop_rows_on_their_own_schedule(model):
    rows = random_rows(model.cfg, 2, 40, seed=9)
    lengths = [6, 3]
    batch = SpeechLMRunner(model, window_rows=WINDOW)
    got = [batch.start([rows[0, :6], rows[1, :3]])]
    for t in range(20):
        got.append(batch.step(torch.stack([rows[i, n + t] for i, n in enumerate(lengths)])))
    for i, n in enumerate(lengths):
        alone = SpeechLMRunner(model, window_rows=WINDOW)
        ref = [alone.start([rows[i, :n]])] + [alone.step(rows[i:i + 1, n + t]) for t in range(20)]
        for a, b in zip(got, ref):
            assert (a[i] - b[0]).abs().max().item() < 1e-4


def test_bad_window():
    with pytest.raises(ValueError, match="window_rows"):
        SpeechLMRunner(random_speech_lm(small_cfg(), seed=1), window_rows=2)
