"""Chat completions honour max_tokens / max_completion_tokens / temperature, report usage, and a long chat
holds neither other chats nor transcriptions behind it (the HTTP layer, with a scripted MLLM test double)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from serving_fixtures import ScriptedBackend, wav_bytes

from mgm_omni.engine.understanding import ChatDelta
from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.metrics import ServerMetrics
from mgm_omni.serving.server import BackgroundServer
from mgm_omni.serving.services import Services

pytest.importorskip("fastapi")
REPLY = "one two three four five six seven eight nine ten"


class GatedBackend(ScriptedBackend):
    """A TEST DOUBLE whose first chat stops after its first word until ``gate`` is set: a long chat."""

    def __init__(self):
        super().__init__(REPLY)
        self.gate, self.waiting = threading.Event(), threading.Event()

    def chat(self, messages, want_audio, max_tokens=None, temperature=None):
        for i, delta in enumerate(super().chat(messages, want_audio, max_tokens, temperature)):
            if i == 1 and not self.gate.is_set() and messages[-1].text == "long":
                self.waiting.set()
                assert self.gate.wait(60)
            yield delta


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    backend = GatedBackend()
    config = ServingConfig(voices_dir=tmp_path_factory.mktemp("voices"), max_chat_tokens=100)
    # Chat and transcription need no speech engine: the services hold only what these routes use.
    services = Services(config, engine=None, voices=None, backend=backend, metrics=ServerMetrics(int, int),
                        model_id="none", tiny=False)
    server = BackgroundServer(services, close_services=False).start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, backend
    backend.gate.set()
    server.stop()


def _chat(client, content="hi", **body):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}], **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_max_tokens_temperature_and_usage(served):
    client, backend = served
    full = _chat(client)
    assert full["choices"][0]["message"]["content"] == REPLY and full["choices"][0]["finish_reason"] == "stop"
    assert full["usage"] == {"prompt_tokens": 1, "completion_tokens": 10, "total_tokens": 11}
    assert backend.limits == (None, None)  # nothing asked: the model's own settings
    cut = _chat(client, max_tokens=3, temperature=0)
    assert cut["choices"][0]["message"]["content"] == "one two three" and cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3 and backend.limits == (3, 0.0)
    newer = _chat(client, max_tokens=3, max_completion_tokens=5, temperature=1.5)  # the newer field wins
    assert newer["usage"]["completion_tokens"] == 5 and backend.limits == (5, 1.5)
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 101})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "at most 100 tokens" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "temperature": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"


def test_streamed_chat_reports_usage_when_asked(served):
    client, _ = served
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 4,
            "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "one two three four"
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 4
    body["stream_options"] = None
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert all("usage" not in json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {"))


def test_a_long_chat_holds_no_other_request(served):
    client, backend = served
    result = {}

    def long_chat():
        result["long"] = _chat(client, "long")

    thread = threading.Thread(target=long_chat)
    thread.start()
    try:
        assert backend.waiting.wait(30)  # the long chat is in the middle of its reply
        start = time.perf_counter()
        other = _chat(client, "short", max_tokens=2)
        files = {"file": ("a.wav", wav_bytes(__import__("numpy").zeros(1600, "float32"), 16000), "audio/wav")}
        r = client.post("/v1/audio/transcriptions", files=files)
        assert r.status_code == 200 and r.json()["text"] == "1600 samples at 16 kHz"
        assert other["choices"][0]["message"]["content"] == "one two" and time.perf_counter() - start < 20
        assert "long" not in result  # still waiting: the others did not queue behind it
    finally:
        backend.gate.set()
        thread.join(60)
    assert result["long"]["choices"][0]["message"]["content"] == REPLY


def test_slots_bound_concurrent_mllm_requests(tmp_path):
    """With one slot, a second chat waits for the first one's text (and starts as soon as it ends)."""
    backend = GatedBackend()
    config = ServingConfig(voices_dir=tmp_path, mllm_concurrency=1)
    services = Services(config, engine=None, voices=None, backend=backend, metrics=ServerMetrics(int, int),
                        model_id="none", tiny=False)
    server = BackgroundServer(services, close_services=False).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            done = []
            t = threading.Thread(target=lambda: done.append(_chat(client, "long")))
            t.start()
            assert backend.waiting.wait(30)
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                            timeout=1.0)
            backend.gate.set()
            t.join(30)
            assert done and _chat(client, "x", max_tokens=1)["usage"]["completion_tokens"] == 1
    finally:
        backend.gate.set()
        server.stop()


def test_usage_needs_both_counts():
    from mgm_omni.serving.understanding_api import usage

    assert usage(ChatDelta("", "stop")) is None
    assert usage(ChatDelta("", "stop", 7, 2)) == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
