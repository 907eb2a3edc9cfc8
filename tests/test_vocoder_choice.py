"""The vocoder's precision is chosen by measurement on this machine, kept on disk, and applied by the stack.

bfloat16 is taken only when it is measured faster and its wave stays close to float32; an override skips the
measurement; a bfloat16 stack streams what it renders offline and stays close to the float32 stack.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mgm_omni.generation.wave import vocoder_choice as vc
from mgm_omni.models.hifigan import HiFiGANConfig, HiFiGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path))
    monkeypatch.delenv("MGM_OMNI_VOCODER_DTYPE", raising=False)
    return tmp_path


def tiny_vocoder(seed: int = 0) -> HiFiGANGenerator:
    torch.manual_seed(seed)
    return HiFiGANGenerator(TINY).eval()


def fake_measure(timings, errors):
    def measure(vocoder, names, rounds=3):
        return {n: timings[n] for n in names}, {n: errors[n] for n in names}
    return measure


def test_faster_and_close_bfloat16_is_chosen_and_cached(cache, monkeypatch):
    monkeypatch.setattr(vc, "candidates", lambda: ["float32", "bfloat16"])
    monkeypatch.setattr(vc, "measure", fake_measure({"float32": 10.0, "bfloat16": 6.0},
                                                    {"float32": 0.0, "bfloat16": 0.04}))
    choice = vc.choose_vocoder_dtype(tiny_vocoder(), threads=1)
    assert (choice.dtype, choice.source) == ("bfloat16", "measured") and "bfloat16 6.0 ms" in choice.describe()
    stored = json.loads((cache / vc.CACHE_FILE).read_text())
    assert [v["dtype"] for v in stored.values()] == ["bfloat16"]
    monkeypatch.setattr(vc, "measure", lambda *a, **k: pytest.fail("measured again despite the cache"))
    assert vc.choose_vocoder_dtype(tiny_vocoder(), threads=1).source == "cache"
    monkeypatch.setattr(vc, "measure", fake_measure({"float32": 10.0, "bfloat16": 12.0},
                                                    {"float32": 0.0, "bfloat16": 0.04}))
    other = vc.choose_vocoder_dtype(tiny_vocoder(), threads=2)  # another thread count is measured on its own
    assert (other.dtype, other.source) == ("float32", "measured") and len(json.loads((cache / vc.CACHE_FILE).read_text())) == 2


@pytest.mark.parametrize("timings, errors", [
    ({"float32": 10.0, "bfloat16": 9.5}, {"float32": 0.0, "bfloat16": 0.04}),  # not faster by MIN_GAIN
    ({"float32": 10.0, "bfloat16": 5.0}, {"float32": 0.0, "bfloat16": 0.5}),  # faster but wrong
])
def test_bfloat16_that_is_slow_or_wrong_is_not_chosen(cache, monkeypatch, timings, errors):
    monkeypatch.setattr(vc, "candidates", lambda: ["float32", "bfloat16"])
    monkeypatch.setattr(vc, "measure", fake_measure(timings, errors))
    assert vc.choose_vocoder_dtype(tiny_vocoder(), threads=1).dtype == "float32"


def test_one_candidate_or_an_override_measures_nothing(cache, monkeypatch):
    monkeypatch.setattr(vc, "measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(vc, "candidates", lambda: ["float32"])
    assert (vc.choose_vocoder_dtype(tiny_vocoder()).dtype, vc.choose_vocoder_dtype(tiny_vocoder()).source) == \
        ("float32", "only")
    monkeypatch.setenv("MGM_OMNI_VOCODER_DTYPE", "bfloat16")
    assert vc.choose_vocoder_dtype(tiny_vocoder()).source == "override"
    assert vc.vocoder_for_cpu(tiny_vocoder()).conv_pre.weight.dtype == torch.bfloat16
    monkeypatch.setenv("MGM_OMNI_VOCODER_DTYPE", "float16")
    with pytest.raises(vc.VocoderChoiceError, match="bfloat16"):
        vc.vocoder_for_cpu(tiny_vocoder())


def test_measure_times_every_candidate_and_scores_it_against_float32():
    model = tiny_vocoder()
    timings, errors = vc.measure(model, ["float32", "bfloat16"], rounds=1)
    assert set(timings) == set(errors) == {"float32", "bfloat16"} and min(timings.values()) > 0
    assert errors["float32"] == 0.0 and 0.0 < errors["bfloat16"] < vc.TOLERANCE
    assert model.conv_pre.weight.dtype == torch.float32  # the measured copy, not the model, was converted


def test_a_bfloat16_stack_streams_as_it_renders_and_stays_close_to_float32(tiny_own_mouth, monkeypatch):
    from mgm_omni.generation.pipeline import TTSPipeline

    text = "The birch canoe slid on the smooth planks."
    ref = TTSPipeline.load(tiny_own_mouth, temperature=0.0, max_rows=24)
    monkeypatch.setenv("MGM_OMNI_VOCODER_DTYPE", "bfloat16")
    pipe = TTSPipeline.load(tiny_own_mouth, temperature=0.0, max_rows=24)
    assert pipe.token2wav.vocoder.conv_pre.weight.dtype == torch.bfloat16
    tokens = []
    audio = np.concatenate(list(pipe.stream(text, on_row=lambda r: tokens.extend(r.tokens))))
    want = ref.token2wav.render(ref.voice, tokens)
    assert audio.dtype == np.float32 and audio.shape == want.shape
    assert np.sqrt(np.mean((audio - want) ** 2)) < 0.3 * np.sqrt(np.mean(want ** 2))  # small phase shifts
    offline = pipe.token2wav.render(pipe.voice, tokens)
    assert np.abs(offline - audio).max() < 2e-2 * np.abs(want).max()
