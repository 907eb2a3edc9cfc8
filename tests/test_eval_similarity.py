"""Speaker similarity plumbing: the transformers WavLM x-vector (tiny random weights), windows, drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgm_omni.eval import drift
from mgm_omni.eval.drift import minute_similarity
from mgm_omni.eval.similarity import get_similarity_encoder, speaker_similarity
from mgm_omni.models.speaker import SpeakerEncoderError


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(16, 20), conv_kernel=(16, 20),  # 320x down, like the real model
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8, num_buckets=16,
        max_bucket_distance=20,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wavlm")
    transformers.WavLMForXVector(cfg).save_pretrained(path)
    return path


def _voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    rng = np.random.default_rng(seed)
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    wave = harmonics * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))  # a 3 Hz "syllable" envelope
    return (0.1 * wave + 0.005 * rng.standard_normal(t.shape)).astype(np.float32)


def test_wavlm_sv_encoder_from_a_local_directory(tiny_wavlm):
    enc = get_similarity_encoder(f"wavlm-sv:{tiny_wavlm}")
    assert enc.dim == 8 and enc.name == f"wavlm-sv:{tiny_wavlm.name}"
    a = _voice(1.0, 120.0, 0)
    assert speaker_similarity(enc, a, a) == pytest.approx(1.0, abs=1e-5)
    emb = enc.embed(torch.from_numpy(a))
    assert emb.shape == (8,) and torch.isfinite(emb).all()
    # a long file is embedded in windows of at most 30 s (attention memory), short ones in one go
    calls = []
    enc.embed = lambda w, f=enc.embed: calls.append(w.shape[0]) or f(w)
    long = np.concatenate([a] * 65)  # 65 s -> three windows of about 21.7 s
    assert speaker_similarity(enc, long, a) > 0.9
    assert sorted(calls) == [16000, 346666, 346667, 346667]


def test_missing_encoders_fail_with_one_line(tmp_path):
    with pytest.raises(SpeakerEncoderError, match="wavlm-sv encoder is unavailable here"):
        get_similarity_encoder(f"wavlm-sv:{tmp_path / 'nothing'}")
    with pytest.raises(SpeakerEncoderError, match="unknown speaker encoder 'nope'"):
        get_similarity_encoder("nope")
    assert get_similarity_encoder("none") is None


def test_minute_similarity_tracks_a_voice_change(tiny_wavlm, monkeypatch):
    monkeypatch.setattr(drift, "MINUTE", 5.0)  # 5 s "minutes" keep the test fast; the logic is the same
    enc = get_similarity_encoder(f"wavlm-sv:{tiny_wavlm}")
    ref = _voice(3.0, 120.0, 1)
    long = np.concatenate([_voice(5.0, 120.0, 2), _voice(5.0, 120.0, 3), _voice(2.5, 300.0, 4)])
    out = minute_similarity(enc, long, enc.embed(torch.from_numpy(ref)))
    assert out["sim_reference"] == "reference" and len(out["sim"]) == 3
    first, second, third = out["sim"]
    assert abs(first - second) < 0.05 and third < min(first, second)
    self_ref = minute_similarity(enc, long)  # no reference voice: compare with the first minute
    assert self_ref["sim_reference"] == "first_minute" and self_ref["sim"][0] == pytest.approx(1.0, abs=1e-5)
