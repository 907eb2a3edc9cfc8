"""The HTTP API against a real uvicorn server on 127.0.0.1 with the built-in tiny model."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading

import httpx
import numpy as np
import pytest
import soundfile as sf
from serving_fixtures import TEXT, ScriptedBackend, pcm16, preset_clip, wav_bytes

from mgm_omni.serving.audio_codec import to_pcm16
from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.server import BackgroundServer
from mgm_omni.serving.services import Services

pytest.importorskip("fastapi")
MAX_ROWS = 40
UPLOAD_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


def _config(voices_dir, **kw) -> ServingConfig:
    base = dict(voices_dir=voices_dir, max_rows=MAX_ROWS, max_input_chars=2000, max_upload_bytes=UPLOAD_LIMIT,
                max_voice_seconds=20.0, max_audio_seconds=30.0, max_batch=8, batch_window_s=0.05)
    return ServingConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def services(tiny_cache, voices_dir):
    svc = Services.load(_config(voices_dir), model="tiny-random", temperature=0.0)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def server(services):
    srv = BackgroundServer(services, close_services=False).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def reference_audio(tiny_cache):
    """The same text through the plain pipeline (no server): the second path every response must match."""
    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.hub import resolve_mouth

    pipe = TTSPipeline.load(resolve_mouth("tiny-random").path, temperature=0.0, max_rows=MAX_ROWS)
    # the pipeline seeds its vocoder noise with its decode seed (0), as the server does each job's
    # (ServingConfig.seed = 0)
    return to_pcm16(pipe.synthesize(TEXT).audio)


def _speech(client, **body):
    r = client.post("/v1/audio/speech", json={"input": TEXT, "voice": "default", **body})
    assert r.status_code == 200, r.text
    return r


def _error(r, status: int, code: str):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"], err
    return err


def test_health_models_and_metrics(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tiny_random_model"] and not health["mllm_loaded"]
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["mgm-omni-tts"]
    _speech(client, response_format="pcm")
    text = client.get("/metrics").text
    assert 'mgm_requests_total{endpoint="/v1/audio/speech",status="200"}' in text
    assert "mgm_time_to_first_audio_seconds_count" in text and "mgm_real_time_factor_bucket" in text


def test_speech_equals_the_pipeline_in_every_container(client, reference_audio):
    wav = _speech(client, response_format="wav")
    assert wav.headers["content-type"] == "audio/wav"
    samples, sr = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert sr == 24000 and np.array_equal(samples, reference_audio)
    assert np.array_equal(pcm16(_speech(client, response_format="pcm").content), reference_audio)
    flac, _ = sf.read(io.BytesIO(_speech(client, response_format="flac").content), dtype="int16")
    assert np.array_equal(flac, reference_audio)  # lossless
    mp3 = _speech(client, response_format="mp3")
    assert mp3.headers["content-type"] == "audio/mpeg"
    from mgm_omni.audio import load_audio

    decoded, sr = load_audio(mp3.content)
    assert sr == 24000 and abs(decoded.shape[0] - reference_audio.shape[0]) < 2 * 1152 + 1105  # codec delay


def test_streaming_reassembles_to_the_same_audio(client, reference_audio):
    whole = _speech(client, response_format="pcm").content
    with client.stream("POST", "/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "stream": True}) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        parts = [p for p in r.iter_raw() if p]
    assert len(parts) >= 2 and b"".join(parts) == whole
    with client.stream("POST", "/v1/audio/speech", json={"input": TEXT, "response_format": "wav", "stream": True}) as r:
        body = b"".join(r.iter_raw())
    assert body[:4] == b"RIFF" and np.array_equal(pcm16(body[44:]), reference_audio)
    r = client.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "stream_format": "sse"})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    deltas = [base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta"]
    assert b"".join(deltas) == whole and events[-1]["type"] == "speech.audio.done"
    _error(client.post("/v1/audio/speech", json={"input": TEXT, "response_format": "flac", "stream": True}),
           400, "unsupported_format")


def test_concurrent_requests_share_a_batch_and_match_solo_output(client, services, reference_audio):
    texts = [TEXT, "A different sentence to speak.", "Third one."]
    solo = {t: pcm16(_speech(client, input=t, response_format="pcm").content) for t in texts[1:]}
    solo[TEXT] = reference_audio
    out, before = {}, len(services.engine.batch_sizes)

    def run(t):
        with httpx.Client(base_url=str(client.base_url), timeout=120) as c:
            out[t] = pcm16(c.post("/v1/audio/speech", json={"input": t, "response_format": "pcm"}).content)

    threads = [threading.Thread(target=run, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(list(services.engine.batch_sizes)[before:]) >= 2  # decoded together, not one by one
    for t in texts:
        assert np.array_equal(out[t], solo[t]), t  # greedy rows and per-job vocoder noise: batch-independent


def test_client_disconnect_cancels_the_job(voices_dir):
    # A server whose jobs run long (6000 rows, long text), so the decode is surely still running when the
    # client goes away, however loaded the machine is.
    services = Services.load(_config(voices_dir, max_rows=6000, max_input_chars=20000), model="tiny-random",
                             temperature=0.0)
    srv = BackgroundServer(services).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            with client.stream("POST", "/v1/audio/speech", json={"input": TEXT * 20, "response_format": "pcm",
                                                                 "stream": True}) as r:
                job_id = r.headers["x-request-id"]
                next(r.iter_raw())
        for _ in range(400):  # the engine sees the cancel at its next row
            jobs = [j for j in services.engine.recent if j.id == job_id]
            if jobs and jobs[0].done:
                break
            threading.Event().wait(0.05)
        # the disconnect reached the job (how fast the slot is freed is checked in test_serving_units.py)
        assert jobs and jobs[0].stats.finish_reason == "cancelled"
        assert services.metrics.cancelled.value() == 1
    finally:
        srv.stop()


def test_voice_upload_list_use_delete_and_restart(client, services, voices_dir, tiny_cache):
    r = client.post("/v1/audio/voices", data={"name": "rms-clone", "text": "The birch canoe slid."},
                    files={"file": ("rms.flac", preset_clip(), "audio/flac")})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "rms-clone" and r.json()["prompt_tokens"] > 100
    names = [v["name"] for v in client.get("/v1/audio/voices").json()["data"]]
    assert names[0] == "default" and "rms-clone" in names and "alpha" in names
    cloned = pcm16(_speech(client, voice="rms-clone", response_format="pcm").content)
    default = pcm16(_speech(client, voice="default", response_format="pcm").content)
    assert cloned.size and not np.array_equal(cloned, default)
    _error(client.post("/v1/audio/voices", data={"name": "rms-clone"}, files={"file": ("a.flac", preset_clip())}),
           409, "voice_exists")
    # restart: a new server process state (new Services, same voices_dir) still has the voice
    again = Services.load(_config(voices_dir), model="tiny-random", temperature=0.0)
    srv = BackgroundServer(again).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c2:
            assert "rms-clone" in [v["name"] for v in c2.get("/v1/audio/voices").json()["data"]]
            after = pcm16(c2.post("/v1/audio/speech", json={"input": TEXT, "voice": "rms-clone",
                                                            "response_format": "pcm"}).content)
            assert np.array_equal(after, cloned)
            assert c2.delete("/v1/audio/voices/rms-clone").json()["deleted"] is True
    finally:
        srv.stop()
    services.voices._cache.pop("rms-clone", None)  # the first server cached it; the disk copy is gone
    _error(client.delete("/v1/audio/voices/rms-clone"), 404, "voice_not_found")
    _error(client.post("/v1/audio/speech", json={"input": TEXT, "voice": "rms-clone"}), 400, "voice_not_found")


def test_voice_names_ignore_case_and_openai_names_reach_presets(client):
    alpha = pcm16(_speech(client, voice="alpha", response_format="pcm").content)
    assert np.array_equal(pcm16(_speech(client, voice="ALPHA", response_format="pcm").content), alpha)
    assert np.array_equal(pcm16(_speech(client, voice="nova", response_format="pcm").content), alpha)
    rms = pcm16(_speech(client, voice="Onyx", response_format="pcm").content)
    assert np.array_equal(rms, pcm16(_speech(client, voice="rms", response_format="pcm").content))
    assert not np.array_equal(rms, alpha)
    r = client.post("/v1/audio/voices", data={"name": "Mixed-Case"}, files={"file": ("r.flac", preset_clip())})
    assert r.status_code == 201, r.text
    try:
        _error(client.post("/v1/audio/voices", data={"name": "mixed-case"}, files={"file": ("r.flac", preset_clip())}),
               409, "voice_exists")
        assert _speech(client, voice="MIXED-CASE", response_format="pcm").content
    finally:
        assert client.delete("/v1/audio/voices/mixed-CASE").json()["name"] == "Mixed-Case"


def test_error_cases_have_documented_status_codes(client, voices_dir):
    big = b"\0" * (UPLOAD_LIMIT + 10)
    _error(client.post("/v1/audio/voices", data={"name": "big"}, files={"file": ("big.wav", big)}),
           413, "request_too_large")
    def chunked():  # no Content-Length: the limit is enforced while the body streams in
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(UPLOAD_LIMIT // 65536 + 2):
            yield b"\0" * 65536

    _error(client.post("/v1/audio/voices", content=chunked(),
                       headers={"content-type": "multipart/form-data; boundary=xyz"}), 413, "request_too_large")
    _error(client.post("/v1/audio/speech", json={"input": "x" * 100_000}), 400, "string_above_max_length")
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.post("/v1/audio/speech", content=b'{"input": "hi",', headers={"content-type": "application/json"}),
           400, "invalid_json")
    _error(client.post("/v1/audio/speech", json={"input": "hi", "voice": "nobody"}), 400, "voice_not_found")
    _error(client.post("/v1/audio/speech", json={"input": "hi", "speed": 1.5}), 400, "unsupported_value")
    err = _error(client.post("/v1/audio/speech", json={"input": "hi", "colour": 1}), 400, "invalid_request")
    assert err["param"] == "colour"
    _error(client.post("/v1/audio/speech", json={"input": "hi", "voice": "../etc"}), 400, "invalid_voice_name")
    for name in ("../evil", "..", "a/b", ".hidden", "x" * 65):
        _error(client.post("/v1/audio/voices", data={"name": name}, files={"file": ("a.flac", preset_clip())}),
               400, "invalid_voice_name")
    assert not any(p.name == "evil" for p in voices_dir.parent.rglob("evil"))
    _error(client.delete("/v1/audio/voices/a.b"), 400, "invalid_voice_name")
    assert client.delete("/v1/audio/voices/..%2F..%2Fetc").status_code in (400, 404)
    _error(client.delete("/v1/audio/voices/default"), 403, "voice_is_preset")
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 21).astype(np.float32)
    _error(client.post("/v1/audio/voices", data={"name": "long"}, files={"file": ("l.wav", wav_bytes(noise, 16000))}),
           400, "audio_too_long")
    _error(client.post("/v1/audio/voices", data={"name": "junk"}, files={"file": ("j.wav", b"not audio at all")}),
           400, "invalid_audio")
    _error(client.post("/v1/audio/voices", data={"name": "silent"},
                       files={"file": ("s.wav", wav_bytes(np.zeros(32000, np.float32), 16000))}), 400, "invalid_audio")


def test_understanding_endpoints_without_mllm_answer_503(client):
    clip = wav_bytes(np.zeros(16000, np.float32), 16000)
    _error(client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, data={"model": "x"}),
           503, "model_not_loaded")
    _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
           503, "model_not_loaded")
    _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                     "modalities": ["text", "audio"]}), 400, "invalid_value")


@pytest.fixture(scope="module")
def scripted_server(services):
    """The same engine behind a second app whose MLLM is a scripted test double, with an API key."""
    backend = ScriptedBackend()
    svc = dataclasses.replace(services, backend=backend,
                              config=dataclasses.replace(services.config, api_key="sk-test"))
    srv = BackgroundServer(svc, close_services=False).start()
    yield srv, backend
    srv.stop()


def test_api_key_is_required_when_set(scripted_server):
    srv, _ = scripted_server
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        _error(c.get("/v1/models"), 401, "invalid_api_key")
        _error(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
        assert c.get("/v1/models", headers={"Authorization": "Bearer sk-test"}).status_code == 200


def test_transcription_and_chat_http_layer(scripted_server, client):
    srv, backend = scripted_server
    auth = {"Authorization": "Bearer sk-test"}
    clip = wav_bytes(np.zeros(24000, np.float32) + 0.01, 24000)  # 1 s at 24 kHz -> 16000 samples at 16 kHz
    with httpx.Client(base_url=srv.url, timeout=120, headers=auth) as c:
        assert c.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)}).json() == {
            "text": "16000 samples at 16 kHz"}
        assert c.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)},
                      data={"response_format": "text"}).text == "16000 samples at 16 kHz"
        verbose = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)},
                         data={"response_format": "verbose_json", "language": "en"}).json()
        assert verbose["duration"] == 1.0 and verbose["language"] == "en"
        _error(c.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"garbage")}), 400, "invalid_audio")
        png = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (8, 8), "red").save(png, format="PNG")
        content = [{"type": "text", "text": "What is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(
                       png.getvalue()).decode()}},
                   {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip).decode(), "format": "wav"}}]
        body = {"model": "mgm-omni", "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": content}]}
        reply = c.post("/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == backend.reply
        assert backend.seen[-1] == ("chat", ["text", "text", "image", "audio"], False, ["system", "user"])
        _error(c.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]}), 400, "unsupported_url")
        # audio out, streamed: transcript deltas, then pcm16 chunks equal to /v1/audio/speech of the same text
        r = c.post("/v1/chat/completions", json={**body, "modalities": ["text", "audio"], "stream": True,
                                                  "audio": {"voice": "default", "format": "pcm16"}})
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
        transcript = "".join(d.get("audio", {}).get("transcript", "") for d in chunks)
        audio = b"".join(base64.b64decode(d["audio"]["data"]) for d in chunks if "data" in d.get("audio", {}))
        assert transcript == backend.reply
    spoken = client.post("/v1/audio/speech", json={"input": backend.reply, "response_format": "pcm"}).content
    assert audio == spoken and len(audio) > 0


def test_openai_client_library(server, scripted_server, reference_audio):
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    speech = c.audio.speech.create(model="mgm-omni-tts", voice="default", input=TEXT, response_format="pcm")
    assert np.array_equal(pcm16(speech.content), reference_audio)
    with c.audio.speech.with_streaming_response.create(model="mgm-omni-tts", voice="default", input=TEXT,
                                                       response_format="wav") as r:
        body = b"".join(r.iter_bytes())
    assert np.array_equal(sf.read(io.BytesIO(body), dtype="int16")[0], reference_audio)
    with pytest.raises(openai.BadRequestError) as bad:
        c.audio.speech.create(model="mgm-omni-tts", voice="nobody", input=TEXT)
    assert bad.value.code == "voice_not_found"
    clip = wav_bytes(np.zeros(24000, np.float32) + 0.01, 24000)
    with pytest.raises(openai.APIStatusError) as unavailable:
        c.audio.transcriptions.create(model="mgm-omni", file=("a.wav", clip, "audio/wav"))
    assert unavailable.value.status_code == 503 and unavailable.value.code == "model_not_loaded"
    # the same client against the scripted MLLM test double: the transcription request/response round trip
    srv, backend = scripted_server
    c2 = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-test", max_retries=0)
    assert c2.audio.transcriptions.create(model="mgm-omni", file=("a.wav", clip, "audio/wav")).text == \
        "16000 samples at 16 kHz"
    stream = c2.chat.completions.create(model="mgm-omni", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == backend.reply
