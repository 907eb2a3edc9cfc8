"""The one transcriber: equals a direct MLLM call, its budget grows with the audio (no 4096 cut), clear errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
import torch

from mgm_omni.config import OmniConfig
from mgm_omni.generation.mllm.runner import MLLM, TextDecodeConfig, TextStep
from mgm_omni.generation.mllm.transcriber import (
    TRANSCRIBE_PROMPT,
    TranscribeConfig,
    TranscribeError,
    Transcriber,
    looping_tail,
)
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.hub.tiny_brain import random_audio_tower, random_mgm_omni, tiny_omni_config
from mgm_omni.models.omni_lm import MediaFeatures
from mgm_omni.text import Tokenizer, mllm_user_content


@pytest.fixture(scope="module")
def mllm(tmp_path_factory):
    """A tiny MLLM with a dual tower on 1 s windows (5 audio tokens per window), greedy."""
    from mgm_omni.hub.tiny_brain import _write_tokenizer
    from mgm_omni.hub.tiny_mouth import BuiltinModelError

    root = tmp_path_factory.mktemp("tok")
    try:
        _write_tokenizer(root)
    except BuiltinModelError as exc:
        pytest.skip(str(exc))
    tok = Tokenizer.from_dir(root)
    cfg = OmniConfig.from_dict(tiny_omni_config(audio_width=16))
    model = random_mgm_omni(cfg, seed=5)
    model.attach_towers(speech_tower=random_audio_tower(cfg, window_positions=50, seed=6))
    return MLLM(model, tok, TextDecodeConfig(SamplingConfig(temperature=0.0)), stop_ids=[tok.eos_token_id])


def test_transcript_equals_a_direct_mllm_call(mllm):
    torch.set_num_threads(1)
    wave = 0.1 * torch.randn(16000 * 5 // 2, generator=torch.Generator().manual_seed(0))  # 2.5 s: 3 windows
    transcriber = Transcriber(mllm, TranscribeConfig(max_new_tokens=10, stop_loops=False))  # this one loops
    pieces = [step.text for step in transcriber.stream(wave, language="en")]
    audio = mllm.encode_audio(wave)
    prompt = mllm.prompt([("user", mllm_user_content(TRANSCRIBE_PROMPT, speech=True))], [audio])
    text, ids = mllm.generate(prompt, TextDecodeConfig(SamplingConfig(temperature=0.0), max_new_tokens=10))
    assert "".join(pieces) == text and transcriber.transcribe(wave) == text.strip()
    last = transcriber.last
    assert (last.audio_tokens, last.text_tokens, last.budget) == (15, len(ids), 10)
    assert last.finish_reason in ("eos", "max_tokens") and last.language is None


@dataclass
class RecordingMLLM:
    """Stands in for an MLLM: records the decode settings the transcriber asks for."""

    config: TextDecodeConfig = field(default_factory=TextDecodeConfig)
    asked: list = field(default_factory=list)

    def encode_audio(self, wave, trim_padding=False):
        return MediaFeatures("audio", torch.zeros(max(1, wave.shape[0] // 16000 * 5), 4))

    def prompt(self, messages, media):
        self.asked.append(messages)
        return object()

    def stream(self, prompt, config):
        self.asked.append(config)
        yield TextStep(7, "hello")
        yield TextStep(8, " world", "max_tokens")


@pytest.mark.parametrize("seconds,cap,budget", [(1, None, 72), (3600, None, 28_864), (3600, 5000, 5000)])
def test_budget_grows_with_the_audio(seconds, cap, budget):
    fake = RecordingMLLM()
    transcriber = Transcriber(fake, TranscribeConfig(max_new_tokens=cap, prompt="Transcribe it."))
    assert transcriber.transcribe(torch.zeros(seconds * 16000), "zh") == "hello world"
    messages, config = fake.asked
    assert messages == [("user", "<speech>\nTranscribe it.")]
    assert config.max_new_tokens == budget and config.sampling.temperature == 0.0
    assert transcriber.last.text_tokens == 2 and transcriber.last.language == "zh"


@pytest.mark.parametrize("wave,language,match", [
    (torch.zeros(2, 16000), None, "mono"),
    (torch.zeros(0), None, "mono"),
    (torch.zeros(16000, dtype=torch.int16), None, "float"),
    (torch.zeros(16000), "english please", "language"),
])
def test_bad_input_is_refused_before_any_work(wave, language, match):
    fake = RecordingMLLM()
    with pytest.raises(TranscribeError, match=match):
        Transcriber(fake).transcribe(wave, language)
    assert fake.asked == []


def test_bad_settings_are_refused():
    with pytest.raises(TranscribeError):
        TranscribeConfig(max_new_tokens=0)
    with pytest.raises(TranscribeError):
        TranscribeConfig(prompt="  ")


@dataclass
class SegmentMLLM:
    """Stands in for a brain trained on one window at a time: each prompt's reply names the audio it heard."""

    segment_seconds: float | None = 30.0
    loop: bool = False
    config: TextDecodeConfig = field(default_factory=TextDecodeConfig)
    heard: list = field(default_factory=list)
    limits: list = field(default_factory=list)

    @property
    def model(self):
        return type("M", (), {"cfg": type("C", (), {"speech_segment_seconds": self.segment_seconds})()})()

    def encode_audio(self, wave, trim_padding=False):
        self.heard.append(wave.shape[0])
        return MediaFeatures("audio", torch.zeros(-(-wave.shape[0] // 3200), 4))

    def prompt(self, messages, media):
        return len(self.heard)

    def stream(self, prompt, config):
        self.limits.append(config.max_new_tokens)
        if self.loop:  # never stops by itself: every segment runs to its budget
            for n in range(1, config.max_new_tokens + 1):
                yield TextStep(5, "la ", "max_tokens" if n == config.max_new_tokens else None)
            return
        yield TextStep(7, f"seg{prompt}")
        yield TextStep(8, ".")
        yield TextStep(2, "", "eos")


def paused_wave(seconds: float, pauses: list[float]) -> torch.Tensor:
    wave = 0.3 * torch.randn(int(seconds * 16000), generator=torch.Generator().manual_seed(1))
    for p in pauses:
        wave[int(p * 16000):int((p + 0.5) * 16000)] = 0.0
    return wave


def test_a_one_window_brain_hears_long_audio_as_segments_cut_at_pauses():
    fake = SegmentMLLM()
    transcriber = Transcriber(fake)
    steps = list(transcriber.stream(paused_wave(70.0, [25.0, 52.0]), "en"))
    assert "".join(s.text for s in steps) == "seg1. seg2. seg3."
    assert [s.finish_reason for s in steps][:-1] == [None] * (len(steps) - 1) and steps[-1].finish_reason == "eos"
    assert [round(n / 16000, 1) for n in fake.heard] == [25.2, 27.0, 17.8]  # the middle of each 0.5 s pause
    last = transcriber.last
    assert (last.segments, last.cut_segments, last.text_tokens) == (3, 0, 6)
    assert last.audio_tokens == sum(-(-n // 3200) for n in fake.heard)
    assert fake.limits == [-(-n * 8 // 16000) + 64 for n in fake.heard] and last.budget == sum(fake.limits)
    assert transcriber.transcribe(torch.zeros(16000 * 20)) == "seg4."  # short audio: one prompt


def test_segments_follow_the_config_over_the_brain():
    wave = paused_wave(70.0, [25.0, 52.0])
    one = SegmentMLLM()
    assert Transcriber(one, TranscribeConfig(segment_seconds=float("inf"))).transcribe(wave) == "seg1."
    assert one.heard == [70 * 16000]
    official = SegmentMLLM(segment_seconds=None)  # the official brains read an hour in one prompt
    assert Transcriber(official).transcribe(wave) == "seg1." and official.heard == [70 * 16000]
    forced = SegmentMLLM(segment_seconds=None)
    assert Transcriber(forced, TranscribeConfig(segment_seconds=40.0)).transcribe(wave) == "seg1. seg2."
    with pytest.raises(TranscribeError):
        TranscribeConfig(segment_seconds=0.5)


def test_each_segment_has_its_own_budget_and_the_cap_bounds_the_whole():
    fake = SegmentMLLM(loop=True)
    transcriber = Transcriber(fake, TranscribeConfig(stop_loops=False))
    steps = list(transcriber.stream(paused_wave(70.0, [25.0, 52.0])))
    budgets = [-(-n * 8 // 16000) + 64 for n in fake.heard]
    assert fake.limits == budgets and len(steps) == sum(budgets) == transcriber.last.budget
    assert transcriber.last.cut_segments == 2 and steps[-1].finish_reason == "max_tokens"
    capped = SegmentMLLM(loop=True)
    transcriber = Transcriber(capped, TranscribeConfig(max_new_tokens=300, stop_loops=False))
    steps = list(transcriber.stream(paused_wave(70.0, [25.0, 52.0])))
    assert len(steps) == 300 and capped.limits == [budgets[0], 300 - budgets[0]]
    assert steps[-1].finish_reason == "max_tokens" and len(capped.heard) == 2


@dataclass
class LoopingMLLM(SegmentMLLM):
    """Each segment: its own sentence, then one sentence of 8 ids over and over until the budget."""

    def stream(self, prompt, config):
        self.limits.append(config.max_new_tokens)
        yield TextStep(7, f"seg{prompt}.")
        for n in range(2, config.max_new_tokens + 1):
            yield TextStep(10 + n % 8, " burglar" if n % 8 == 0 else "-", "max_tokens" if n == config.max_new_tokens else None)


def test_a_segment_that_falls_into_a_loop_ends_and_the_next_goes_on():
    fake = LoopingMLLM()
    transcriber = Transcriber(fake)
    steps = list(transcriber.stream(paused_wave(70.0, [25.0, 52.0])))
    text = "".join(s.text for s in steps)
    assert text.count("seg") == 3 and len(fake.heard) == 3  # every segment was still heard
    stats = transcriber.last
    assert stats.loops == 3 and steps[-1].finish_reason == "repetition" and stats.finish_reason == "repetition"
    # each segment stops once its 8-id block came twice in a row: 1 + 16 (+ the id that closed a full block)
    assert stats.text_tokens <= 3 * (1 + 17) < sum(fake.limits) / 4
    off = Transcriber(LoopingMLLM(), TranscribeConfig(stop_loops=False))
    assert len(list(off.stream(paused_wave(70.0, [25.0, 52.0])))) == off.last.budget and off.last.loops == 0


@pytest.mark.parametrize("ids, block", [
    ([1, 2, 3, 4, 5, 6, 7, 8] * 2, 8),            # a sentence twice
    ([9, 1, 2, 3, 4, 5, 6, 7, 8] * 2, 9),
    ([0, 5, 6, 7, 5, 6, 7], 0),                   # "beautiful gun, beautiful gun": a short phrase twice
    ([0] + [5, 6, 7, 8] * 3, 4),                  # four ids three times
    ([0] + [5, 6, 7, 8] * 2, 0),
    ([4] * 6, 1),                                 # one id six times
    ([3] + [4] * 5, 0),
    ([], 0),
])
def test_looping_tail_tells_a_loop_from_a_repeated_phrase(ids, block):
    assert looping_tail(ids) == block


def test_segmented_transcript_equals_the_segments_transcribed_one_by_one(mllm):
    torch.set_num_threads(1)
    wave = 0.1 * torch.randn(16000 * 5 // 2, generator=torch.Generator().manual_seed(0))  # 2.5 s
    wave[16000 * 8 // 10:16000 * 9 // 10] = 0.0  # a pause: the first cut goes there
    cfg = TranscribeConfig(tokens_per_second=0.001, min_new_tokens=9, segment_seconds=1.0, pause_search_seconds=0.5)
    segmented = Transcriber(mllm, cfg)
    text = segmented.transcribe(wave)
    spans = cfg.spans(wave.shape[0], wave, 1.0)
    assert len(spans) == 3 and 0.8 * 16000 < spans[0][1] < 0.9 * 16000
    whole = Transcriber(mllm, dataclasses.replace(cfg, segment_seconds=float("inf")))  # 10 tokens each, as above
    parts = [whole.transcribe(wave[a:b]) for a, b in spans]
    assert whole.last.segments == 1 and segmented.last.segments == 3
    assert text.split() == " ".join(parts).split() and text != whole.transcribe(wave)
