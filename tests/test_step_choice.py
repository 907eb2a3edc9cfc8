"""Per-machine decode step choice: measured, exact only, cached per CPU and shape, overridable."""

from __future__ import annotations

import logging

import pytest
from test_speech_lm import small_cfg

from mgm_omni.generation.speech import native_build, step_choice
from mgm_omni.generation.speech.step_choice import StepChoiceError, candidates, choose_step
from mgm_omni.models.speech_lm import random_speech_lm


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path))
    monkeypatch.delenv("MGM_OMNI_STEP", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def model():
    return random_speech_lm(small_cfg(), seed=1)


def test_measures_every_candidate_and_takes_the_fastest(cache, model):
    names = candidates(model)
    assert names[-1] == "torch"
    if native_build.available():
        assert "native-fp32-generic" in names
    choice = choose_step(model, use_cache=False, steps=2)
    assert set(choice.timings_ms) == set(names) and choice.source == "measured"
    assert all(err < 1e-3 for err in choice.errors.values())  # every candidate computes the same logits
    assert choice.name == min(choice.timings_ms, key=choice.timings_ms.get)
    assert choice.name in choice.describe()


def test_a_candidate_that_disagrees_is_never_chosen(cache, model, monkeypatch, caplog):
    fake = {"native-fp32-avx2": 1.0, "native-fp32-generic": 3.0, "torch-packed": 2.0, "torch": 9.0}
    errors = {"native-fp32-avx2": 0.5, "native-fp32-generic": 1e-7, "torch-packed": 1e-7, "torch": 0.0}
    monkeypatch.setattr(step_choice, "candidates", lambda m, q=None: list(fake))
    monkeypatch.setattr(step_choice, "measure", lambda m, names, threads, steps: (fake, errors))
    with caplog.at_level(logging.WARNING):
        choice = choose_step(model, use_cache=False)
    assert choice.name == "torch-packed"  # the fastest one that agrees with PyTorch
    assert "native-fp32-avx2 disagrees" in caplog.text


def test_the_choice_is_cached_per_cpu_shape_and_threads(cache, model, monkeypatch):
    calls = []

    def measure(m, names, threads, steps):
        calls.append(threads)
        return {n: float(i + 1) for i, n in enumerate(names)}, {n: 0.0 for n in names}

    monkeypatch.setattr(step_choice, "measure", measure)
    first = choose_step(model, threads=1)
    again = choose_step(model, threads=1)
    assert (first.source, again.source, again.name) == ("measured", "cache", first.name)
    assert calls == [1]
    choose_step(model, threads=2)  # another thread count is another key
    other = random_speech_lm(small_cfg(speech_size=41), seed=1)
    choose_step(other, threads=1)  # and another shape
    assert calls == [1, 2, 1]
    assert (cache / "step_choice.json").is_file()


def test_override_by_argument_or_environment(cache, model, monkeypatch):
    assert choose_step(model, override="torch").name == "torch"
    monkeypatch.setenv("MGM_OMNI_STEP", "torch")
    choice = choose_step(model)
    assert (choice.name, choice.source, choice.native, choice.pack) == ("torch", "override", None, False)
    if native_build.available():
        native = choose_step(model, override="native")
        assert (native.name, native.native, native.isa) == ("native-fp32-auto", "fp32", "auto")
    with pytest.raises(StepChoiceError, match="cannot run"):
        choose_step(model, override="native-fp32-avx1024")


def test_int8_chooses_among_int8_steps_only(cache, model):
    if not native_build.available():
        pytest.skip("native step unavailable")
    names = candidates(model, "int8")
    assert names and all(n.startswith("native-int8-") for n in names)
    choice = choose_step(model, "int8", use_cache=False, steps=2)
    assert choice.native == "int8" and max(choice.errors.values()) < 0.2


def test_generator_settings_follow_the_choice(cache, model, monkeypatch):
    monkeypatch.setenv("MGM_OMNI_STEP", "torch")
    native, pack = step_choice.step_for_cpu(model)
    assert native is None and pack is False
    if native_build.available():
        monkeypatch.setenv("MGM_OMNI_STEP", "native-fp32-generic")
        native, pack = step_choice.step_for_cpu(model)
        assert native.name == "native-fp32-generic" and pack is False
