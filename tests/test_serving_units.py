"""Serving pieces without HTTP: codecs, metrics, voice names and registry, the tiny front-end, the engine."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from serving_fixtures import TEXT, preset_clip, wav_bytes

from mgm_omni.audio import load_audio
from mgm_omni.generation.wave.reference import ReferenceConfig
from mgm_omni.serving.audio_codec import STREAMABLE, CodecError, StreamEncoder, encode_audio, to_pcm16
from mgm_omni.serving.config import ServingConfig
from mgm_omni.engine.speech_engine import QueueFull, SpeechEngine
from mgm_omni.serving.metrics import ServerMetrics
from mgm_omni.generation.wave.tiny_frontend import TinyFallbackFrontEnd
from mgm_omni.engine.voices import (
    PRESET_DIR,
    VoiceAudioError,
    VoiceExists,
    VoiceNameError,
    VoiceNotFound,
    VoiceReadOnly,
    VoiceRegistry,
    bundled_presets,
    check_name,
)

SR = 24000


def _tone(seconds=0.5):
    t = np.arange(int(SR * seconds)) / SR
    return (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_pcm16_rounds_and_clips():
    assert to_pcm16(np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5 / 32767], np.float32)).tolist() == [
        0, 32767, -32767, 32767, -32768, 0]


@pytest.mark.parametrize("fmt", STREAMABLE)
def test_stream_encoder_matches_whole_file(fmt):
    x = _tone()
    enc = StreamEncoder(fmt, SR)
    streamed = enc.start() + b"".join(enc.encode(x[i:i + 3000]) for i in range(0, x.size, 3000)) + enc.finish()
    whole = encode_audio(x, SR, fmt)
    if fmt == "pcm":
        assert streamed == whole
    elif fmt == "wav":  # identical samples; only the header's length fields differ (unknown while streaming)
        assert streamed[44:] == whole[44:] and streamed[:4] == whole[:4] == b"RIFF"
    else:
        a, _ = load_audio(streamed)
        b, _ = load_audio(whole)
        assert abs(a.shape[0] - b.shape[0]) <= 1152 and float((a[2000:10000] - b[2000:10000]).abs().max()) < 0.05


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus", "aac"])
def test_whole_formats_decode_back(fmt):
    x = _tone()
    wave, sr = load_audio(encode_audio(x, SR, fmt))
    assert sr in (SR, 48000) and abs(wave.shape[0] / sr - 0.5) < 0.1
    if fmt in ("wav", "flac"):
        assert np.array_equal(to_pcm16(wave.numpy()), to_pcm16(x))


def test_unstreamable_format_is_refused():
    with pytest.raises(CodecError, match="cannot be streamed"):
        StreamEncoder("flac", SR)


def test_metrics_text_format():
    m = ServerMetrics(lambda: 3, lambda: 1)
    m.requests.inc(endpoint="/v1/audio/speech", status="200")
    m.first_audio.observe(0.3)
    m.first_audio.observe(7.0)
    text = m.render()
    assert 'mgm_requests_total{endpoint="/v1/audio/speech",status="200"} 1' in text
    assert 'mgm_time_to_first_audio_seconds_bucket{le="0.5"} 1' in text
    assert 'mgm_time_to_first_audio_seconds_bucket{le="+Inf"} 2' in text
    assert "mgm_queue_depth 3" in text and "mgm_time_to_first_audio_seconds_count 2" in text
    with pytest.raises(ValueError, match="labels"):
        m.requests.inc(endpoint="x")


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "a\\b", "", ".x", "-x", "x" * 65, "é", "a b", "a\0b"])
def test_voice_names_cannot_be_paths(name):
    with pytest.raises(VoiceNameError, match="invalid voice name"):
        check_name(name)
    assert check_name("My_voice-2") == "My_voice-2"


def test_config_validation():
    with pytest.raises(ValueError, match="max_batch"):
        ServingConfig(max_batch=0)
    with pytest.raises(ValueError, match="api_key"):
        ServingConfig(api_key=" ")


def test_tiny_frontend_is_deterministic_and_shaped():
    wave, sr = load_audio(PRESET_DIR / "alpha.flac")
    fe = TinyFallbackFrontEnd(6561, 192)
    a, b = fe.prompt(wave, sr, ReferenceConfig()), fe.prompt(wave.clone(), sr, ReferenceConfig())
    n = a.tokens.shape[1]
    assert n == int(wave.shape[0] / sr * 25) and a.mel.shape == (1, 2 * n, 80) and a.xvector.shape == (1, 192)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mel, b.mel) and torch.equal(a.xvector, b.xvector)
    assert 0 <= int(a.tokens.min()) and int(a.tokens.max()) < 6561 and len(set(a.tokens[0].tolist())) > n // 2
    other, sr2 = load_audio(PRESET_DIR / "rms.flac")
    c = fe.prompt(other, sr2, ReferenceConfig())
    assert not torch.equal(c.tokens[:, :50], a.tokens[:, :50])
    assert torch.nn.functional.cosine_similarity(a.xvector, c.xvector).item() < 0.99


def test_registry_store_reload_remove(tmp_path):
    fe = TinyFallbackFrontEnd(6561, 192)
    reg = VoiceRegistry(tmp_path, fe, bundled_presets(fe))
    assert reg.names()[:3] == ["default", "alpha", "rms"]
    v = reg.add("mine", preset_clip(), "  the transcript ")
    assert v.text == "the transcript" and (tmp_path / fe.id / "mine" / "prompt.safetensors").is_file()
    fresh = VoiceRegistry(tmp_path, fe, bundled_presets(fe)).get("mine")  # as after a restart
    assert torch.equal(fresh.mel, v.mel) and torch.equal(fresh.tokens, v.tokens) and fresh.frontend == fe.id
    assert fresh.text == "the transcript"
    with pytest.raises(VoiceExists):
        reg.add("mine", preset_clip(), "")
    with pytest.raises(VoiceReadOnly):
        reg.add("alpha", preset_clip(), "")
    with pytest.raises(VoiceAudioError, match="over the max_seconds"):
        reg.add("long", wav_bytes(np.full(16000 * 40, 0.1, np.float32), 16000), "")
    reg.remove("mine")
    assert "mine" not in reg.names() and not any(p.name.startswith(".") for p in (tmp_path / fe.id).iterdir())
    with pytest.raises(VoiceNotFound):
        reg.remove("mine")
    with pytest.raises(VoiceReadOnly):
        reg.remove("default")


def test_registry_of_a_model_uses_its_front_end_and_the_one_cache(tiny_cache):
    """The tiny model's registry: its stand-in front-end, the voice it ships as ``default``, stored under
    $MGM_OMNI_CACHE/voices unless told otherwise."""
    from mgm_omni.generation.voice import shipped_voice
    from mgm_omni.hub import resolve_mouth
    from mgm_omni.serving.services import voice_registry

    reg = voice_registry("tiny-random")
    assert reg.frontend.id == TinyFallbackFrontEnd.id and reg.dir == tiny_cache / "voices" / reg.frontend.id
    default, shipped = reg.get("default"), shipped_voice(resolve_mouth("tiny-random").path)
    assert default.preset and torch.equal(default.tokens, shipped.tokens) and default.text == shipped.text


def test_presets_of_a_model_without_its_onnx_front_end_answer_503(tiny_cache, tmp_path):
    import shutil

    from mgm_omni.engine.voices import FrontendUnavailable, registry_for
    from mgm_omni.hub import resolve_mouth

    root = tmp_path / "official"  # an official-format directory: no mouth.json, no ONNX files
    root.mkdir()
    shutil.copy(resolve_mouth("tiny-random").path / "config.json", root)
    reg = registry_for(root, tmp_path / "voices")
    assert reg.frontend.id == "cosyvoice2" and reg.names()[:3] == ["default", "alpha", "rms"]
    with pytest.raises(FrontendUnavailable, match="speech_tokenizer_v2.onnx") as info:
        reg.get("default")
    assert info.value.status == 503


@pytest.fixture(scope="module")
def long_generator(tiny_cache):
    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.hub import resolve_mouth

    yield TTSPipeline.load(resolve_mouth("tiny-random").path, temperature=0.0, max_rows=400)


def test_cancel_frees_the_slot_at_once_and_queue_is_bounded(long_generator):
    pipe = long_generator
    engine = SpeechEngine(pipe.generator, pipe.token2wav, max_batch=1, max_queue=1, batch_window_s=0.0)
    try:
        first = engine.submit(engine.make_job(TEXT * 4, pipe.voice))
        while not engine.running:
            time.sleep(0.01)
        second = engine.submit(engine.make_job("Next.", pipe.voice))
        with pytest.raises(QueueFull):  # one running, one waiting: the queue (max 1) is full
            engine.submit(engine.make_job("Third.", pipe.voice))
        next(first.chunks(timeout=60))
        cancelled_at = time.perf_counter()
        first.cancel()
        list(first.chunks(timeout=60))
        assert first.stats.finish_reason == "cancelled" and first.stats.rows < 400
        audio = second.audio()
        assert second.stats.queued_s < cancelled_at - second.submitted + 1.0  # started right after the cancel
        assert audio.size > 0 and second.stats.batch_size == 1
    finally:
        engine.stop()


def test_demo_service_chat_and_inputs(tmp_path):
    from types import SimpleNamespace

    from mgm_omni.serving.demo_service import NO_MLLM, DemoService

    from serving_fixtures import ScriptedBackend

    services = SimpleNamespace(backend=None, config=ServingConfig(voices_dir=tmp_path, max_audio_seconds=2.0))
    demo = DemoService(services)
    with pytest.raises(ValueError, match="Type a message"):
        demo.user_message("", None, None, None, None)
    assert list(demo.chat([], demo.user_message("hi", None, None, None, None), "default", True)) == [(NO_MLLM, None)]
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes(np.full(8000, 0.1, np.float32), 16000))
    message = demo.user_message("hi", str(clip), None, None, None)
    assert [p.kind for p in message.parts] == ["text", "audio"] and message.parts[1].audio.shape == (8000,)
    clip.write_bytes(wav_bytes(np.full(16000 * 3, 0.1, np.float32), 16000))
    with pytest.raises(ValueError, match="max_seconds"):
        demo.user_message("hi", None, None, None, str(clip))
    services.backend = ScriptedBackend("One two three.")
    texts = [t for t, audio in demo.chat([], message, "default", False)]
    assert texts[-1] == "One two three." and texts[0] == "One"
