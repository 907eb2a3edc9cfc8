"""Kaldi fbank: parity with kaldi-native-fbank (oracle, tests only), with a plain numpy loop written from the
Kaldi documentation, and hand-checked properties (frame counts, tone placement, scale, floor, errors)."""

import math

import numpy as np
import pytest
import torch

from mgm_omni.audio.fbank import (
    CAMPPLUS_FBANK,
    FLOAT32_EPS,
    FbankConfig,
    FbankError,
    campplus_features,
    kaldi_fbank,
    kaldi_mel_banks,
)

SR = 16000


def _signal(n: int, seed: int = 0) -> np.ndarray:
    """Noise plus a chirp-ish tone mix, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * rng.standard_normal(n) + 0.01
    return x.astype(np.float32)


# ------------------------------------------------------------------ independent numpy reference (float64, loops)


def _numpy_fbank(x: np.ndarray, bins: int = 80, window: str = "povey", snip: bool = True) -> np.ndarray:
    size, shift, n_fft = 400, 160, 512
    x = x.astype(np.float64)
    n = len(x)
    if snip:
        starts = [f * shift for f in range(1 + (n - size) // shift)]
    else:
        starts = [f * shift + shift // 2 - size // 2 for f in range((n + shift // 2) // shift)]

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(20.0), mel(SR / 2)
    step = (hi - lo) / (bins + 1)
    banks = np.zeros((bins, n_fft // 2))
    for b in range(bins):
        left, centre, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for k in range(n_fft // 2):
            m = mel(k * SR / n_fft)
            if left < m < right:
                banks[b, k] = (m - left) / (centre - left) if m <= centre else (right - m) / (right - centre)
    i = np.arange(size)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * i / (size - 1))
    win = {"povey": hann**0.85, "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * i / (size - 1))}[window]
    out = []
    for s in starts:
        idx = np.arange(s, s + size)
        while ((idx < 0) | (idx >= n)).any():
            idx = np.where(idx < 0, -idx - 1, idx)
            idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
        frame = x[idx].copy()
        frame -= frame.mean()
        for j in range(size - 1, 0, -1):
            frame[j] -= 0.97 * frame[j - 1]
        frame[0] -= 0.97 * frame[0]
        power = np.abs(np.fft.rfft(frame * win, n_fft)) ** 2
        out.append(np.log(np.maximum(banks @ power[: n_fft // 2], FLOAT32_EPS)))
    return np.array(out)


@pytest.mark.parametrize("window,snip", [("povey", True), ("povey", False), ("hamming", True)])
def test_matches_numpy_loop_reference(window, snip):
    x = _signal(4321)
    ours = kaldi_fbank(torch.from_numpy(x).double(), window_type=window, snip_edges=snip).numpy()  # float64 path
    ref = _numpy_fbank(x, window=window, snip=snip)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-8, rtol=0)
    ours32 = kaldi_fbank(torch.from_numpy(x), window_type=window, snip_edges=snip).numpy()
    assert np.abs(ours32 - ref).max() < 2e-3  # float32 rounding only


# ------------------------------------------------------------------ kaldi-native-fbank oracle


def _knf(x: np.ndarray, bins=80, window="povey", snip=True, low=20.0, high=0.0) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = snip
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = low
    opts.mel_opts.high_freq = high
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(SR, x.tolist())
    fb.input_finished()
    return np.stack([np.asarray(fb.get_frame(i)) for i in range(fb.num_frames_ready)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"snip": False},
        {"window": "hamming"},
        {"window": "hanning"},
        {"window": "rectangular"},
        {"bins": 40},
        {"low": 60.0, "high": -400.0},
    ],
    ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "campplus",
)
def test_matches_kaldi_native_fbank(kwargs):
    x = _signal(16000 * 2 + 77, seed=3)
    ref = _knf(x, **kwargs)
    ours = kaldi_fbank(
        torch.from_numpy(x),
        num_mel_bins=kwargs.get("bins", 80),
        window_type=kwargs.get("window", "povey"),
        snip_edges=kwargs.get("snip", True),
        low_freq=kwargs.get("low", 20.0),
        high_freq=kwargs.get("high", 0.0),
    ).numpy()
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    # knf builds its mel weights in float32; the largest gaps sit in the 2-3 lowest bins (few FFT bins each).
    assert diff.max() < 1e-3 and diff.mean() < 2e-5, (diff.max(), diff.mean())


def test_matches_kaldi_native_fbank_on_int16_scale_and_silence():
    x = _signal(9000, seed=5)
    x[3000:6000] = 0.0  # digital silence hits the epsilon floor in both
    ref = _knf(x * 32768.0)
    ours = kaldi_fbank(torch.from_numpy(x * 32768.0)).numpy()
    assert np.abs(ours - ref).max() < 1e-3


# ------------------------------------------------------------------ hand-checked properties


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 48123])
def test_frame_count(n):
    x = torch.from_numpy(_signal(n))
    assert kaldi_fbank(x).shape == (1 + (n - 400) // 160, 80)
    assert kaldi_fbank(x, snip_edges=False).shape == ((n + 80) // 160, 80)


def test_tone_peaks_in_the_right_mel_bin():
    for hz in (300.0, 1000.0, 3000.0, 6000.0):
        t = torch.arange(SR) / SR
        feats = kaldi_fbank(0.5 * torch.sin(2 * math.pi * hz * t))
        def mel(f):
            return 1127.0 * math.log(1 + f / 700.0)

        step = (mel(SR / 2) - mel(20.0)) / 81
        centres = [mel(20.0) + (b + 1) * step for b in range(80)]
        expected = min(range(80), key=lambda b: abs(centres[b] - mel(hz)))
        assert abs(int(feats.mean(0).argmax()) - expected) <= 1, hz


def test_mel_banks_shape_and_unused_nyquist():
    banks = kaldi_mel_banks(CAMPPLUS_FBANK)
    assert banks.shape == (80, 257)
    assert float(banks[:, -1].abs().max()) == 0.0
    assert float(banks.max()) <= 1.0 and bool((banks.sum(1) > 0).all())  # every bin covers some FFT bin


def test_scale_only_shifts_log_energies_and_campplus_features_remove_it():
    x = torch.from_numpy(_signal(8000))
    shift = kaldi_fbank(x * 32768.0) - kaldi_fbank(x)
    torch.testing.assert_close(shift, torch.full_like(shift, 2 * math.log(32768.0)), atol=2e-3, rtol=0)
    a, b = campplus_features(x), campplus_features(x * 32768.0)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
    torch.testing.assert_close(a.mean(0), torch.zeros(80), atol=1e-4, rtol=0)


def test_silence_sits_on_the_floor():
    feats = kaldi_fbank(torch.zeros(1600))
    torch.testing.assert_close(feats, torch.full_like(feats, math.log(FLOAT32_EPS)))


def test_dither_is_seeded_and_changes_the_output():
    x = torch.from_numpy(_signal(4000))
    a = kaldi_fbank(x, dither=1e-3, generator=torch.Generator().manual_seed(7))
    b = kaldi_fbank(x, dither=1e-3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert float((a - kaldi_fbank(x)).abs().max()) > 1e-4


def test_one_row_batch_equals_mono():
    x = torch.from_numpy(_signal(3000))
    torch.testing.assert_close(kaldi_fbank(x[None]), kaldi_fbank(x))


@pytest.mark.parametrize(
    "wave,match",
    [
        (torch.zeros(399), "shorter than one 400-sample"),
        (torch.tensor([0.0, float("nan")] * 400), "NaN or Inf"),
        (torch.zeros(2, 1600), r"\(S,\) or \(1, S\)"),
        (torch.zeros(1600, dtype=torch.int16), r"float \(S,\)"),
    ],
)
def test_bad_waveforms(wave, match):
    with pytest.raises(FbankError, match=match):
        kaldi_fbank(wave)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"window_type": "kaiser"}, "window_type"),
        ({"low_freq": 9000.0}, "low_freq"),
        ({"num_mel_bins": 0}, "num_mel_bins"),
        ({"frame_length_ms": 0.05}, "frames"),
        ({"no_such_field": 1}, "unknown setting"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(FbankError, match=match):
        kaldi_fbank(torch.zeros(1600), **kwargs)


def test_config_defaults_are_kaldi_with_campplus_bins():
    cfg = FbankConfig()
    assert (cfg.window_size, cfg.window_shift, cfg.padded_window_size) == (400, 160, 512)
    assert (cfg.num_mel_bins, cfg.dither, cfg.preemphasis, cfg.low_freq, cfg.window_type) == (80, 0.0, 0.97, 20.0, "povey")
    assert FbankConfig(round_to_power_of_two=False).padded_window_size == 400
