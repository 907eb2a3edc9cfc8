"""The one transcriber: equals a direct MLLM call, its budget grows with the audio (no 4096 cut), clear errors."""

from __future__ import annotations

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
    transcriber = Transcriber(mllm, TranscribeConfig(max_new_tokens=10))
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
