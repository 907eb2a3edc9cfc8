"""Long audio: window counts (no phantom window), padded-tail trimming, streaming == all windows at once,
bounded look-ahead on chunked input, and clear errors on bad audio. A tiny random dual tower keeps it fast;
the windows are the real 30 s / (128, 3000) geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mgm_omni.audio import WHISPER_128, whisper_features
from mgm_omni.generation.mllm.long_audio import (
    LongAudioError,
    WindowGeometry,
    encode_long_audio,
    iter_windows,
    stream_audio_tokens,
)
from mgm_omni.models.audio_encoder import AudioEncoderConfig, DualAudioTower
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig

SR, W = 16000, 480000
K = 5  # 150 tokens per 30 s window


def tiny_models(d: int = 16, out_dim: int = 24, seed: int = 0):
    torch.manual_seed(seed)
    enc = dict(d_model=d, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=2 * d,
               num_mel_bins=128, max_source_positions=1500)
    tower = DualAudioTower(AudioEncoderConfig(model_type="qwen2_audio_encoder", **enc),
                           AudioEncoderConfig(model_type="whisper", **enc)).eval()
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=d, aux_dim=d, ds_rate=K, out_dim=out_dim,
                                                        mlp_dim=32)).eval()
    return tower, proj


@pytest.fixture(scope="module")
def models():
    return tiny_models()


def synthetic(seconds: float, seed: int = 0) -> torch.Tensor:
    """Chirps and noise that change over time, so every window encodes differently."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(round(seconds * SR))) / SR
    return 0.3 * torch.sin(2 * math.pi * (100 + 40 * t) * t) + 0.05 * torch.randn(t.shape, generator=g)


def official_all_at_once(wave: torch.Tensor, tower, proj) -> torch.Tensor:
    """The official path: every window's mel stacked, both encoders and the projector over the whole batch."""
    with torch.no_grad():
        main, aux = tower(whisper_features(wave))  # (N, 750, d), (N, 1500, d)
        return proj(main, aux).flatten(0, 1)


@pytest.mark.parametrize("seconds, windows", [(0.1, 1), (29.99, 1), (30.0, 1), (30.01, 2), (60.0, 2),
                                              (65.0, 3), (7200.0, 240)])
def test_window_count_has_no_phantom_window(seconds, windows):
    geo = WindowGeometry(W, 750, K)
    n = int(round(seconds * SR))
    assert geo.window_count(n) == windows  # official: n // W + 1 (one more at exact multiples)
    assert sum(1 for _ in range(0, n, W)) == windows


def test_kept_tokens_are_those_starting_before_the_padding():
    geo = WindowGeometry(W, 750, K)  # one token = 5 frames = 3200 samples
    assert geo.tokens_per_window == 150
    assert geo.kept_tokens(1, trim_padding=True) == 1
    assert geo.kept_tokens(3200, trim_padding=True) == 1  # token 1 starts at sample 3200: all padding
    assert geo.kept_tokens(3201, trim_padding=True) == 2
    assert geo.kept_tokens(5 * SR, trim_padding=True) == 25
    assert geo.kept_tokens(W, trim_padding=True) == 150
    assert geo.kept_tokens(1, trim_padding=False) == 150
    assert WindowGeometry(W, 750, 4).kept_tokens(W, trim_padding=True) == 187  # 750 // 4, 2 frames dropped


@pytest.mark.parametrize("seconds, tokens, trimmed", [(65.0, 450, 325), (60.0, 300, 300), (0.1, 150, 1)])
def test_streaming_equals_all_windows_at_once(models, seconds, tokens, trimmed):
    tower, proj = models
    wave = synthetic(seconds)
    ref = official_all_at_once(wave, tower, proj)
    assert ref.shape == (tokens, 24)
    for batch in (1, 2):
        got = encode_long_audio(wave, tower, proj, batch_windows=batch)
        assert got.n_windows == math.ceil(tokens / 150) and got.n_samples == wave.shape[0]
        torch.testing.assert_close(got.embeddings, ref, atol=1e-5, rtol=1e-5)
    cut = encode_long_audio(wave, tower, proj, trim_padding=True)
    assert cut.embeddings.shape == (trimmed, 24)
    assert cut.window_tokens == [150] * (cut.n_windows - 1) + [trimmed - 150 * (cut.n_windows - 1)]
    # A prefix of the untrimmed tokens: only the tail inside the padding goes.
    torch.testing.assert_close(cut.embeddings, ref[:trimmed], atol=1e-5, rtol=1e-5)


def test_chunked_source_matches_tensor_and_streams_lazily(models):
    tower, proj = models
    wave = synthetic(65.0, seed=1)
    ref = encode_long_audio(wave, tower, proj).embeddings
    sizes = [7_000, 333_333, 1, 480_000]  # chunk boundaries that do not line up with windows
    pulled = []

    def chunks():
        start, i = 0, 0
        while start < wave.shape[0]:
            size = sizes[i % len(sizes)]
            pulled.append(start + size)
            yield wave[start:start + size].numpy()
            start, i = start + size, i + 1

    stream = stream_audio_tokens(chunks(), tower, proj)
    first, kept, valid = next(stream)
    assert first.shape == (150, 24) and kept == [150] and valid == [W]
    assert max(pulled) < 2 * W  # only the chunks of the first window were read so far
    rest = [block for block, _, _ in stream]
    torch.testing.assert_close(torch.cat([first, *rest]), ref, atol=1e-5, rtol=1e-5)
    whole = encode_long_audio(chunks(), tower, proj, trim_padding=True)
    assert whole.n_samples == wave.shape[0] and whole.window_tokens == [150, 150, 25]
    sized = encode_long_audio(chunks(), tower, proj, n_samples=wave.shape[0])  # preallocated output
    torch.testing.assert_close(sized.embeddings, ref, atol=1e-5, rtol=1e-5)
    for wrong in (wave.shape[0] - 1, wave.shape[0] + 1, 2 * W):
        with pytest.raises(LongAudioError, match="announced n_samples"):
            encode_long_audio(chunks(), tower, proj, n_samples=wrong)


def test_windows_are_padded_only_at_the_end():
    wave = synthetic(65.0)
    windows = list(iter_windows(wave, W))
    assert [v for _, v in windows] == [W, W, 5 * SR]
    assert torch.equal(windows[1][0], wave[W:2 * W])
    assert torch.equal(windows[2][0][: 5 * SR], wave[2 * W:]) and not windows[2][0][5 * SR:].any()
    assert [v for _, v in iter_windows(np.zeros(2 * W, dtype=np.float32), W)] == [W, W]


def test_output_is_an_ordinary_tensor(models):
    tower, proj = models
    out = encode_long_audio(synthetic(1.0), tower, proj).embeddings
    out.mul_(2)  # no inference-mode tensor escapes to the caller
    assert not out.requires_grad


@pytest.mark.parametrize("audio, match", [
    (torch.zeros(0), "empty"),
    (iter([]), "empty"),
    (iter([np.zeros(0, dtype=np.float32)]), "empty"),
    (torch.zeros(2, 16000), r"mono 16 kHz samples of shape \(S,\)"),
    (torch.zeros(16000, dtype=torch.int16), "float"),
    (torch.tensor([0.0, float("nan")]), "NaN"),
    ([np.zeros(100, dtype=np.float32), np.zeros((2, 5), dtype=np.float32)], "mono"),
    ("speech.wav", "not a path"),
])
def test_bad_audio_gives_clear_errors(models, audio, match):
    tower, proj = models
    with pytest.raises(LongAudioError, match=match):
        encode_long_audio(audio, tower, proj)


def test_mismatched_front_end_and_batch_size_are_rejected(models):
    import dataclasses

    tower, proj = models
    with pytest.raises(LongAudioError, match="80 bins but the encoders take 128"):
        encode_long_audio(synthetic(1.0), tower, proj, mel_cfg=dataclasses.replace(WHISPER_128, n_mels=80))
    with pytest.raises(LongAudioError, match="batch_windows"):
        encode_long_audio(synthetic(1.0), tower, proj, batch_windows=0)


@pytest.mark.slow
def test_two_hours_go_through_untruncated():
    tower, proj = tiny_models(d=8, out_dim=8)
    n = 2 * 3600 * SR

    def chunks():  # generated on the fly: the 2 h waveform itself is never held in memory
        for start in range(0, n, 10 * SR):
            yield synthetic(10.0, seed=start // SR).numpy()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded 2-core machine one thread is several times faster
    try:
        out = encode_long_audio(chunks(), tower, proj, trim_padding=True)
    finally:
        torch.set_num_threads(threads)
    assert out.n_samples == n and out.n_windows == 240
    assert out.embeddings.shape == (240 * 150, 8) and bool(torch.isfinite(out.embeddings).all())


def test_front_end_follows_the_towers_mel_bins():
    """80-bin towers (Whisper base / tiny.en, the default brain) get an 80-bin Whisper mel by default, equal to
    faster-whisper's feature extractor; 128-bin towers keep ``WHISPER_128``."""
    from mgm_omni.generation.mllm.long_audio import tower_mel

    torch.manual_seed(0)
    enc = dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=80,
               max_source_positions=1500)
    tower = DualAudioTower(AudioEncoderConfig(model_type="qwen2_audio_encoder", **enc),
                           AudioEncoderConfig(model_type="whisper", **enc)).eval()
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=16, aux_dim=16, out_dim=24, mlp_dim=32)).eval()
    mel80 = tower_mel(tower)
    assert mel80.n_mels == 80 and tower_mel(tiny_models()[0]) is WHISPER_128
    wave = synthetic(7.0)
    default = encode_long_audio(wave, tower, proj).embeddings
    assert torch.equal(default, encode_long_audio(wave, tower, proj, mel_cfg=mel80).embeddings)
    fw = pytest.importorskip("faster_whisper.feature_extractor")
    ref = fw.FeatureExtractor(feature_size=80)(wave.numpy(), padding=W - len(wave))[:, :3000]
    ours = whisper_features(wave, mel80)[0]
    assert ours.shape == (80, 3000) and np.abs(ours.numpy() - ref).max() < 1e-4


def test_a_brain_trained_without_padding_tokens_never_reads_them(models):
    """``trim_padding`` in the projector config (``speech_trim_padding`` of a brain) trims whatever is asked."""
    import dataclasses

    tower, proj = models
    trimmed = DualMLPSpeechProjector(dataclasses.replace(proj.cfg, trim_padding=True)).eval()
    trimmed.load_state_dict(proj.state_dict())
    wave = synthetic(31.0)
    out = encode_long_audio(wave, tower, trimmed)
    assert out.window_tokens == [150, 5] and out.embeddings.shape[0] == 155
    assert torch.equal(out.embeddings, encode_long_audio(wave, tower, proj, trim_padding=True).embeddings)
