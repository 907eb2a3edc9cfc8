"""Transcription and chat through the server with the real MLLM code path (the built-in tiny RANDOM MLLM:
its text is gibberish, so the checks are that the HTTP path and a direct MLLM call agree, greedy)."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import pytest
from serving_fixtures import wav_bytes

from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.http_input import decode_audio
from mgm_omni.serving.server import BackgroundServer

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tiny_cache, tmp_path_factory):
    from mgm_omni.generation.sampling import SamplingConfig
    from mgm_omni.serving.services import Services

    services = Services.load(ServingConfig(voices_dir=tmp_path_factory.mktemp("voices"), max_rows=16),
                             model="tiny-random", mllm="tiny-random", temperature=0.0)
    mllm = services.backend.mllm
    mllm.config = dataclasses.replace(mllm.config, sampling=SamplingConfig(temperature=0.0), max_new_tokens=8)
    transcriber = services.backend.transcriber
    transcriber.config = dataclasses.replace(transcriber.config, max_new_tokens=8)
    srv = BackgroundServer(services).start()
    yield srv, services
    srv.stop()


def _direct_transcript(mllm, wave16k) -> str:
    from mgm_omni.generation.mllm.transcriber import TRANSCRIBE_PROMPT
    from mgm_omni.text import mllm_user_content

    from mgm_omni.generation.mllm.transcriber import looping_tail

    prompt = mllm.prompt([("user", mllm_user_content(TRANSCRIBE_PROMPT, speech=True))], [mllm.encode_audio(wave16k)])
    text, ids = mllm.generate(prompt)  # greedy, 8 tokens: the fixture's settings
    loop = next((n for n in range(1, len(ids) + 1) if looping_tail(ids[:n])), None)
    return (text if loop is None else mllm.tokenizer.decode(ids[:loop])).strip()  # the transcriber stops a loop


def test_transcription_equals_a_direct_mllm_call(served):
    srv, services = served
    clip = wav_bytes((0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32), 24000)
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        assert c.get("/health").json()["mllm_loaded"] is True
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["mgm-omni-tts", "mgm-omni"]
        text = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)}).json()["text"]
    expected = _direct_transcript(services.backend.mllm, decode_audio(clip, 60.0))
    assert text == expected and len(text) > 0
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    assert client.audio.transcriptions.create(model="mgm-omni", file=("a.wav", clip, "audio/wav")).text == expected


def test_chat_equals_omnichat_and_can_speak(served):
    from mgm_omni.generation.omni import OmniChat

    srv, services = served
    expected = OmniChat(services.backend.mllm).say("Hello!", speak=False)
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        reply = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello!"}]}).json()
        assert reply["choices"][0]["message"]["content"] == expected.text
        assert reply["choices"][0]["finish_reason"] == {"eos": "stop", "max_tokens": "length"}[expected.text_finish]
        spoken = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello!"}],
                                                       "modalities": ["text", "audio"],
                                                       "audio": {"voice": "default", "format": "wav"}}).json()
        audio = spoken["choices"][0]["message"]["audio"]
        assert audio["transcript"] == expected.text and len(audio["data"]) > 100
        two_clips = [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}] * 2
        err = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": two_clips}]})
        assert err.status_code == 400
