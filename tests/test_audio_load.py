"""Audio decoding: common formats and containers, channel mixing, resampling, and one-line errors for bad
input (files, waveforms, mel configs).

All audio fixtures are generated into pytest's tmp dirs; nothing binary is committed.
"""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from mgm_omni.audio import (
    COSYVOICE2_24K,
    WHISPER_128,
    AudioError,
    MelConfig,
    load_audio,
    log_mel,
    resample,
    whisper_features,
)

# ------------------------------------------------------------------------------------ decoding


def _tone(sr, seconds=1.0, hz=440.0, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(wave, sr):
    w = np.asarray(wave, dtype=np.float64)
    spec = np.abs(np.fft.rfft(w * np.hanning(w.size)))
    return np.argmax(spec) * sr / w.size


def _encode_av(path, fmt, codec, sr, channels):
    layout = "stereo" if channels == 2 else "mono"
    y = np.stack([_tone(sr)] * channels)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(y, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


SF_FORMATS = [("wav", {"subtype": "PCM_16"}, 16000), ("flac", {}, 22050),
              ("ogg", {"subtype": "VORBIS"}, 44100),
              ("opus", {"format": "OGG", "subtype": "OPUS"}, 48000), ("mp3", {}, 24000)]
AV_FORMATS = [("mp4", "mp4", "aac", 44100), ("mkv", "matroska", "libmp3lame", 44100),
              ("webm", "webm", "libopus", 48000)]


@pytest.mark.parametrize("ext,kw,sr", SF_FORMATS, ids=[f[0] for f in SF_FORMATS])
def test_load_soundfile_formats(tmp_path, ext, kw, sr):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(sr), sr, **kw)
    wave, got_sr = load_audio(path)
    assert got_sr == sr and wave.dtype == torch.float32 and wave.dim() == 1
    assert wave.shape[0] == sr
    assert abs(_peak_hz(wave, sr) - 440) <= 2
    corr = np.corrcoef(wave.numpy(), _tone(sr))[0, 1]
    assert corr > (0.9999 if ext in ("wav", "flac") else 0.99)


@pytest.mark.parametrize("ext,fmt,codec,sr", AV_FORMATS, ids=[f[0] for f in AV_FORMATS])
def test_load_container_audio_tracks(tmp_path, ext, fmt, codec, sr):
    path = tmp_path / f"clip.{ext}"
    _encode_av(path, fmt, codec, sr, channels=2)
    with pytest.raises(sf.LibsndfileError):  # proves the FFmpeg path is the one exercised
        sf.info(str(path))
    wave, got_sr = load_audio(path, sample_rate=16000)
    assert got_sr == 16000 and wave.dim() == 1 and abs(wave.shape[0] - 16000) <= 16
    assert abs(_peak_hz(wave, 16000) - 440) <= 2
    stereo, native = load_audio(path, mono=False)
    assert native == sr and stereo.shape[0] == 2 and stereo.shape[1] == sr  # encoder priming/padding dropped
    assert np.corrcoef(stereo[0].numpy(), _tone(sr))[0, 1] > 0.999  # and aligned: no shift
    from_bytes, _ = load_audio(path.read_bytes(), mono=False)
    torch.testing.assert_close(from_bytes, stereo, atol=0, rtol=0)


def test_stereo_and_multichannel_mix(tmp_path):
    sr = 16000
    left, right = _tone(sr, hz=440), _tone(sr, hz=1000, amp=0.3)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono.numpy(), (left + right) / 2, atol=1e-7)
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, sr)
    np.testing.assert_array_equal(load_audio(path, channel=1)[0].numpy(), right)
    six = np.stack([_tone(sr, hz=200 * (k + 1), amp=0.1) for k in range(6)], axis=1)
    sf.write(tmp_path / "six.wav", six, sr, subtype="FLOAT")
    with open(tmp_path / "six.wav", "rb") as f:  # file objects work too
        mono6, _ = load_audio(f)
    np.testing.assert_allclose(mono6.numpy(), six.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("src_sr", [44100, 11025, 8000])
def test_resample_preserves_tone(tmp_path, src_sr):
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(src_sr, hz=1000), src_sr, subtype="FLOAT")
    wave, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and wave.shape[0] == 16000
    assert abs(_peak_hz(wave, sr) - 1000) <= 2
    core = wave[800:-800].numpy()  # away from the filter's edge transients
    np.testing.assert_allclose(np.sqrt(np.mean(core**2)), 0.5 / np.sqrt(2), rtol=0.01)
    ref = _tone(16000, hz=1000)[800:-800]
    assert np.abs(core - ref).max() < 0.01


def test_resample_batched_equals_per_channel_and_identity():
    x = torch.from_numpy(np.stack([_tone(44100, hz=300), _tone(44100, hz=5000, amp=0.2)]))
    both = resample(x, 44100, 24000)
    assert both.shape == (2, 24000)
    for i in range(2):
        torch.testing.assert_close(both[i], resample(x[i], 44100, 24000), atol=1e-6, rtol=0)
    torch.testing.assert_close(resample(x, 16000, 16000), x, atol=0, rtol=0)


# ----------------------------------------------------------------------------------- bad input


def _raises_one_line(match, fn, *args, **kwargs):
    with pytest.raises(AudioError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return str(info.value)


def test_bad_files_give_one_line_errors(tmp_path):
    _raises_one_line("file not found", load_audio, tmp_path / "missing.wav")
    _raises_one_line("not a regular file", load_audio, tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    _raises_one_line(r"empty file \(0 bytes\)", load_audio, tmp_path / "empty.wav")
    _raises_one_line("empty input", load_audio, b"")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)  # a valid header and no samples
    _raises_one_line("zero-length", load_audio, tmp_path / "zero.wav")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    msg = _raises_one_line("unreadable or unsupported", load_audio, tmp_path / "noise.mp3")
    assert "libsndfile" in msg and "ffmpeg" in msg
    sf.write(tmp_path / "ok.flac", _tone(16000), 16000)
    (tmp_path / "cut.flac").write_bytes((tmp_path / "ok.flac").read_bytes()[:30])  # header torn off mid-way
    _raises_one_line("unreadable|zero-length", load_audio, tmp_path / "cut.flac")
    _raises_one_line("cannot read audio from a int", load_audio, 42)


def test_nan_inf_and_bad_header_rate(tmp_path):
    for bad in (np.nan, np.inf):
        x = _tone(16000)
        x[100] = bad
        sf.write(tmp_path / "bad.wav", x, 16000, subtype="FLOAT")
        _raises_one_line("NaN or Inf", load_audio, tmp_path / "bad.wav")
    buf = io.BytesIO()
    sf.write(buf, _tone(16000), 16000, format="WAV")
    raw = bytearray(buf.getvalue())
    raw[24:28] = struct.pack("<I", 0)  # sample rate field of the fmt chunk
    _raises_one_line("unreadable|sample rate", load_audio, bytes(raw))


def test_no_audio_track(tmp_path):
    if "mpeg4" not in av.codecs_available:
        pytest.skip("FFmpeg build without the mpeg4 encoder")
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    _raises_one_line("no audio track", load_audio, path)


def test_max_duration_guard(tmp_path):
    sf.write(tmp_path / "long.wav", np.zeros(3 * 8000, np.float32), 8000)
    msg = _raises_one_line("max_seconds=1", load_audio, tmp_path / "long.wav", max_seconds=1.0)
    assert "3.0 s" in msg
    assert load_audio(tmp_path / "long.wav", max_seconds=3.0)[0].shape == (24000,)
    _encode_av(tmp_path / "long.mp4", "mp4", "aac", 44100, channels=1)
    _raises_one_line("over the max_seconds", load_audio, tmp_path / "long.mp4", max_seconds=0.5)
    _raises_one_line("max_seconds must be positive", load_audio, tmp_path / "long.wav", max_seconds=0)


def test_bad_rates_and_channels(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(16000), 16000)
    for bad in (0, -16000, 16000.5, True):
        _raises_one_line("sample_rate must be a positive", load_audio, tmp_path / "a.wav", sample_rate=bad)
    _raises_one_line("orig_sr", resample, torch.zeros(10), 0, 16000)
    _raises_one_line("channel 1 requested but the audio has 1", load_audio, tmp_path / "a.wav", channel=1)


def test_log_mel_rejects_bad_waveforms_and_configs():
    _raises_one_line("too short", log_mel, torch.zeros(100), COSYVOICE2_24K)
    _raises_one_line("too short", log_mel, torch.zeros(200), WHISPER_128)  # reflect pad needs > n_fft/2
    _raises_one_line("float", log_mel, torch.zeros(16000, dtype=torch.int16), WHISPER_128)
    _raises_one_line(r"\(S,\) or \(B, S\)", log_mel, torch.zeros(1, 1, 16000), WHISPER_128)
    _raises_one_line("NaN or Inf", log_mel, torch.full((16000,), float("nan")), WHISPER_128)
    _raises_one_line("mono", whisper_features, torch.zeros(2, 16000))
    for kwargs in ({"n_fft": 0}, {"fmax": 9000.0}, {"win_length": 2048}, {"log": "db"}, {"power": 3.0},
                   {"mel_scale": "mel"}, {"pad_mode": "zeros"}, {"fmin": 8000.0, "fmax": 8000.0}):
        base = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80)
        with pytest.raises(ValueError):
            MelConfig(**{**base, **kwargs})
