"""Log-mel features: golden mel parity (CosyVoice2 prompt mel, Whisper log-mel and 30 s windows) and
independent references (numpy filterbanks and formulas, the ``transformers`` Whisper extractor).

Nothing binary is committed: the signals are generated, the references read from the golden sets.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from golden import golden_params
from safetensors.torch import load_file

from mgm_omni.audio import (
    COSYVOICE2_24K,
    HIFIGAN_22K,
    WHISPER_128,
    MelConfig,
    log_mel,
    mel_filterbank,
    whisper_features,
)

# README §9 suggests atol 1e-4 for the feature extractors; we reach bit-exact (0.0) except the HF
# extractor, which builds its own float64 filterbank (1.2e-7 measured).
GOLDEN_ATOL = 1e-4


# --------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("gdir", golden_params("mel24k/mel24k.safetensors"))
def test_cosyvoice2_prompt_mel_matches_golden(gdir):
    g = load_file(gdir / "mel24k" / "mel24k.safetensors")
    fb = mel_filterbank(COSYVOICE2_24K)
    assert fb.shape == g["mel_basis"].shape == (80, 961)
    torch.testing.assert_close(fb, g["mel_basis"], atol=1e-9, rtol=0)
    mel = log_mel(g["waveform"], COSYVOICE2_24K)  # (1, 80, T)
    n = g["waveform"].shape[-1]
    assert mel.shape == g["mel"].shape == (1, 80, 1 + (n + 1440 - 1920) // 480)
    torch.testing.assert_close(mel, g["mel"], atol=GOLDEN_ATOL, rtol=0)
    # the flow's prompt_feat layout
    torch.testing.assert_close(mel.transpose(1, 2), g["speech_feat"], atol=GOLDEN_ATOL, rtol=0)


@pytest.mark.parametrize("gdir", golden_params("whisper_mel/whisper_logmel128.safetensors"))
def test_whisper_logmel_unpadded_matches_golden(gdir):
    g = load_file(gdir / "whisper_mel" / "whisper_logmel128.safetensors")
    torch.testing.assert_close(mel_filterbank(WHISPER_128), g["mel_filters_128"], atol=1e-9, rtol=0)
    out = log_mel(g["waveform"], WHISPER_128)  # (1, 128, S // 160)
    assert out.shape == g["log_mel"].shape == (1, 128, g["waveform"].shape[-1] // 160)
    torch.testing.assert_close(out, g["log_mel"], atol=GOLDEN_ATOL, rtol=0)
    # 1-D input gives the unbatched layout with the same values
    torch.testing.assert_close(log_mel(g["waveform"][0], WHISPER_128), out[0], atol=0, rtol=0)


@pytest.mark.parametrize("gdir", golden_params("whisper_mel/hf_whisper_feature_extractor.safetensors"))
def test_whisper_features_30s_window_matches_golden(gdir):
    g = load_file(gdir / "whisper_mel" / "hf_whisper_feature_extractor.safetensors")
    torch.testing.assert_close(mel_filterbank(WHISPER_128), g["mel_filters_201x128"].T, atol=1e-7, rtol=0)
    feats = whisper_features(g["waveform"])
    assert feats.shape == (1, 128, 3000)
    torch.testing.assert_close(feats[0], g["input_features"], atol=GOLDEN_ATOL, rtol=0)
    assert int(g["attention_mask"].sum()) == g["waveform"].shape[0] // WHISPER_128.hop_length


# ------------------------------------------------------------------------- independent references


def _np_hz2mel(f, htk):
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: 3 mels per 200 Hz up to 1 kHz (= mel 15), then 27 mels per factor 6.4
    return np.where(f < 1000, f * 3 / 200, 15 + 27 * np.log(np.maximum(f, 1e-3) / 1000) / np.log(6.4))


def _np_mel2hz(m, htk):
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))


def _np_mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk=False, slaney_norm=True):
    """Plain float64 triangles, written straight from the definitions."""
    edges = _np_mel2hz(np.linspace(_np_hz2mel(fmin, htk), _np_hz2mel(fmax, htk), n_mels + 2), htk)
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[m] = np.clip(np.minimum(up, down), 0, None)
        if slaney_norm:
            fb[m] *= 2.0 / (hi - lo)
    return fb


def test_filterbank_matches_numpy_reference_slaney_and_htk():
    ref = _np_mel_filterbank(22050, 1024, 80, 0.0, 8000.0)
    ours = mel_filterbank(HIFIGAN_22K).double().numpy()
    assert ours.shape == (80, 513)
    np.testing.assert_allclose(ours, ref, rtol=2.5e-7, atol=1e-12)  # float32 rounding of float64 weights
    cfg = MelConfig(16000, n_fft=512, hop_length=160, n_mels=40, fmin=50.0, fmax=7000.0, mel_scale="htk",
                    mel_norm=None)
    ref = _np_mel_filterbank(16000, 512, 40, 50.0, 7000.0, htk=True, slaney_norm=False)
    np.testing.assert_allclose(mel_filterbank(cfg).double().numpy(), ref, atol=1e-6, rtol=0)
    assert not np.allclose(ref, _np_mel_filterbank(16000, 512, 40, 50.0, 7000.0, slaney_norm=False)[:, :257])


def test_hifigan_mel_matches_direct_numpy_formula():
    rng = np.random.default_rng(3)
    sr, n = 22050, 22050 // 2 + 77
    t = np.arange(n) / sr
    x = (0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)
         + 0.01 * rng.standard_normal(n)).astype(np.float32)
    # centred STFT: reflect-pad n_fft/2, periodic Hann, |rfft|, Slaney mels, ln(max(., 1e-7))
    xp = np.pad(x.astype(np.float64), 512, mode="reflect")
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    frames = np.stack([xp[i * 256:i * 256 + 1024] * win for i in range(1 + (xp.size - 1024) // 256)])
    mel = _np_mel_filterbank(sr, 1024, 80, 0.0, 8000.0) @ np.abs(np.fft.rfft(frames)).T
    ref = np.log(np.maximum(mel, 1e-7))
    ours = log_mel(torch.from_numpy(x), HIFIGAN_22K)
    assert ours.shape == (80, 1 + n // 256) == ref.shape
    np.testing.assert_allclose(ours.double().numpy(), ref, atol=2e-4, rtol=0)


def test_whisper_features_match_transformers_extractor():
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=128)
    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    ref = fe(x, sampling_rate=16000, return_tensors="pt")["input_features"][0]
    torch.testing.assert_close(whisper_features(torch.from_numpy(x))[0], ref, atol=GOLDEN_ATOL, rtol=0)


def test_whisper_windows_count_and_independence():
    w = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal(16000 * 5 // 2)).astype(np.float32))
    feats = whisper_features(w, window_seconds=1.0)  # 2.5 s -> 3 windows of 100 frames, last zero-padded
    assert feats.shape == (3, 128, 100)
    torch.testing.assert_close(feats[1], log_mel(w[16000:32000], WHISPER_128), atol=0, rtol=0)
    assert whisper_features(w[:32000], window_seconds=1.0).shape[0] == 2  # exact multiple: no extra window
    # batched log-mel floors each item at its own max - 8
    batch = torch.stack([w[:16000], 0.01 * w[16000:32000]])
    out = log_mel(batch, WHISPER_128)
    for i in range(2):
        torch.testing.assert_close(out[i], log_mel(batch[i], WHISPER_128), atol=0, rtol=0)
