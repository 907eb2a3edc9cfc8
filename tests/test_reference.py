"""S3 tokenizer wrapper and the reference prompt (spec §3.2), run through tiny ONNX models with the official I/O
signatures: blocking, concatenation, alignment, output validation, and the bad-input contract."""

import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch

from mgm_omni.audio import COSYVOICE2_24K, WHISPER_128, load_audio, log_mel, resample
from mgm_omni.audio.fbank import campplus_features
from mgm_omni.generation.wave.reference import (
    ReferenceAudioError,
    ReferenceConfig,
    OfficialFrontEnd,
    ReferencePromptError,
    build_reference_prompt,
    load_reference_frontends,
    prepare_reference_audio,
)
from mgm_omni.models.onnx_session import OnnxAssetError
from mgm_omni.models.speaker import CampPlusOnnx, SpeakerEncoder
from mgm_omni.models.speech_tokenizer import S3Tokenizer, SpeechTokenizerError

pytest.importorskip("onnx", reason="the tiny stand-in models are built with onnx (test dependency)")
pytest.importorskip("onnxruntime", reason="the ONNX front ends run on onnxruntime")
import tiny_onnx  # after the skips: it needs onnx

SR = 16000


def _speechy(seconds: float, sr: int = SR, seed: int = 0) -> torch.Tensor:
    """A voiced-sounding test signal: a vibrato harmonic complex with syllable-rate amplitude, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    f0 = 140 + 20 * torch.sin(2 * math.pi * 3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 8)) * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t))
    x = 0.15 * x + 0.01 * torch.randn(t.shape, generator=g, dtype=torch.float64)
    return x.float()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cosyvoice2")
    tiny_onnx.s3_tokenizer(d / "speech_tokenizer_v2.onnx")
    tiny_onnx.campplus(d / "campplus.onnx")
    return d


@pytest.fixture(scope="module")
def frontends(assets):
    return load_reference_frontends(assets)


def _expected_codes(wave16k: torch.Tensor) -> np.ndarray:
    """Official blocking: 30 s pieces, each with its own whisper log-mel, codes concatenated."""
    block = 30 * SR
    pieces = [wave16k[i : i + block] for i in range(0, wave16k.shape[0], block)]
    return np.concatenate([tiny_onnx.s3_codes(log_mel(p, WHISPER_128).numpy()) for p in pieces if len(p) >= 640])


# ------------------------------------------------------------------ S3 tokenizer


def test_tokenizer_codes_follow_the_onnx_contract(frontends):
    tok, _ = frontends
    wave = _speechy(3.37)
    codes = tok.tokenize(wave)
    assert codes.shape == (1, math.ceil((wave.shape[0] // 160) / 4)) and codes.dtype == torch.int64
    np.testing.assert_array_equal(codes[0].numpy(), _expected_codes(wave))
    assert int(codes.min()) >= 0 and int(codes.max()) <= 6560
    torch.testing.assert_close(tok.tokenize(wave[None]), codes)


def test_tokenizer_cuts_30_s_blocks_and_concatenates(frontends):
    tok, _ = frontends
    wave = _speechy(70.0, seed=1)
    wave[40 * SR :] *= 0.05  # a quiet second half: per-block max-8 floors differ from a whole-clip mel
    codes = tok.tokenize(wave)[0].numpy()
    assert codes.shape == (750 + 750 + 250,)
    np.testing.assert_array_equal(codes, _expected_codes(wave))
    np.testing.assert_array_equal(codes[:750], tok.tokenize_block(wave[: 30 * SR]).numpy())


@pytest.mark.parametrize("tail,extra", [(639, 0), (640, 1), (1000, 2)])
def test_tokenizer_drops_a_tail_shorter_than_one_token(frontends, tail, extra):
    tok, _ = frontends
    assert tok.tokenize(_speechy(30.0 + tail / SR)).shape == (1, 750 + extra)


def test_tokenizer_rejects_bad_models_and_input(tmp_path, frontends):
    tok, _ = frontends
    wave = _speechy(1.5)
    bad = {
        "offset": ({"offset": 7000}, r"outside 0\.\.6560"),
        "float": ({"out_type": tiny_onnx.TensorProto.FLOAT}, "expected integer codes"),
        "v1rate": ({"stride": 2}, "about 50 Hz.*v2 tokenizer"),
    }
    for name, (kwargs, match) in bad.items():
        model = S3Tokenizer(tiny_onnx.s3_tokenizer(tmp_path / f"{name}.onnx", **kwargs))
        with pytest.raises(SpeechTokenizerError, match=match):
            model.tokenize(wave)
    with pytest.raises(OnnxAssetError, match=r"speech_tokenizer_v2\.onnx.*wcy1122/MGM-Omni-TTS-2B-0927"):
        S3Tokenizer(tmp_path / "nothing.onnx")
    with pytest.raises(OnnxAssetError, match="does not look like speech_tokenizer_v2.onnx"):
        S3Tokenizer(tiny_onnx.campplus(tmp_path / "cp.onnx"))
    with pytest.raises(SpeechTokenizerError, match="shorter than one speech token"):
        tok.tokenize(torch.zeros(639))
    with pytest.raises(SpeechTokenizerError, match="NaN or Inf"):
        tok.tokenize(torch.full((1600,), float("nan")))
    with pytest.raises(SpeechTokenizerError, match="longer than the tokenizer's 30 s limit"):
        tok.tokenize_block(torch.zeros(30 * SR + 1))
    with pytest.raises(SpeechTokenizerError, match="mono"):
        tok.tokenize(torch.zeros(2, 16000))


# ------------------------------------------------------------------ reference prompt


@pytest.mark.parametrize("sr,seconds", [(16000, 2.0), (16000, 2.0 + 300 / 16000), (24000, 3.3), (44100, 1.23)])
def test_reference_prompt_parts_and_alignment(frontends, sr, seconds):
    tok, spk = frontends
    wave = _speechy(seconds, sr=sr, seed=2)
    prompt = build_reference_prompt(wave, sr, tok, spk, text="Hello there.")
    # independent recomputation of every part from the same 16 kHz clip
    wave16k = resample(wave, sr, SR) if sr != SR else wave
    mel = log_mel(resample(wave16k, SR, 24000), COSYVOICE2_24K).T  # (T_mel, 80)
    codes = _expected_codes(wave16k)
    n = min(mel.shape[0] // 2, codes.shape[0])
    assert prompt.tokens.shape == (1, n) and prompt.tokens.dtype == torch.int64
    assert prompt.mel.shape == (1, 2 * n, 80) and prompt.xvector.shape == (1, 192)
    np.testing.assert_array_equal(prompt.tokens[0].numpy(), codes[:n])
    torch.testing.assert_close(prompt.mel[0], mel[: 2 * n])
    xvec = tiny_onnx.campplus_embedding(campplus_features(wave16k).numpy())
    np.testing.assert_allclose(prompt.xvector[0].numpy(), xvec, atol=1e-5, rtol=1e-5)
    assert prompt.text == "Hello there." and prompt.n_tokens == n


def test_alignment_takes_the_shorter_side(frontends):
    tok, spk = frontends
    # 2 s + 300 samples: 201 whisper frames -> 51 codes, but only 100 mel frames -> 50 tokens kept
    prompt = build_reference_prompt(_speechy(2.0 + 300 / SR), SR, tok, spk)
    assert tok.tokenize(_speechy(2.0 + 300 / SR)).shape[1] == 51
    assert prompt.n_tokens == 50 and prompt.mel.shape[1] == 100


def test_reference_duration_limits(frontends):
    tok, spk = frontends
    with pytest.raises(ReferenceAudioError, match=r"0\.90 s long; at least 1 s"):
        build_reference_prompt(_speechy(0.9), SR, tok, spk)
    with pytest.raises(ReferenceAudioError, match=r"31\.0 s long, over the 30 s limit.*too_long='trim'"):
        build_reference_prompt(_speechy(31.0), SR, tok, spk)


def test_too_long_trim_keeps_the_first_30_s_and_warns(frontends):
    tok, spk = frontends
    wave = _speechy(31.5, seed=3)
    with pytest.warns(UserWarning, match="keeping its first 30 s"):
        trimmed = build_reference_prompt(wave, SR, tok, spk, config=ReferenceConfig(too_long="trim"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = build_reference_prompt(wave[: 30 * SR], SR, tok, spk)
    torch.testing.assert_close(trimmed.tokens, exact.tokens)
    torch.testing.assert_close(trimmed.mel, exact.mel)
    assert trimmed.n_tokens == 750


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(5 * SR),  # digital silence
        lambda: 3e-4 * torch.randn(5 * SR, generator=torch.Generator().manual_seed(0)),  # -70 dBFS hiss
        lambda: torch.cat([torch.zeros(2 * SR), _speechy(0.3), torch.zeros(2 * SR)]),  # 0.3 s of sound
    ],
    ids=["zeros", "hiss", "blip"],
)
def test_silent_reference_is_rejected(frontends, make):
    tok, spk = frontends
    with pytest.raises(ReferenceAudioError, match="silent or nearly so"):
        build_reference_prompt(make(), SR, tok, spk)


@pytest.mark.parametrize(
    "wave,sr,match",
    [
        (torch.full((2 * SR,), float("nan")), SR, "NaN or Inf"),
        (torch.zeros(2, 2 * SR), SR, "mono"),
        (torch.zeros(2 * SR, dtype=torch.int16), SR, "float mono"),
        (torch.zeros(2 * SR), 0, "sample rate"),
        (torch.zeros(2 * SR), 16000.0, "sample rate"),
    ],
)
def test_bad_reference_input(frontends, wave, sr, match):
    tok, spk = frontends
    with pytest.raises(ReferenceAudioError, match=match):
        build_reference_prompt(wave, sr, tok, spk)


class _Scorer(SpeakerEncoder):
    name, dim, normalized = "scorer", 256, True

    def embed(self, wave16k):
        return torch.ones(256) / 16


def test_offline_256d_encoders_are_refused_for_the_flow(frontends):
    tok, _ = frontends
    with pytest.raises(ReferencePromptError, match="256-d embeddings.*192-d CAMPPlus x-vector"):
        build_reference_prompt(_speechy(2.0), SR, tok, _Scorer())


def test_missing_assets_are_named(tmp_path, assets):
    with pytest.raises(OnnxAssetError, match=r"speech_tokenizer_v2\.onnx and campplus\.onnx.*MGM-Omni-TTS-2B-0927"):
        load_reference_frontends(tmp_path)
    shutil.copy(assets / "speech_tokenizer_v2.onnx", tmp_path)
    with pytest.raises(OnnxAssetError, match=r"need campplus\.onnx in"):
        load_reference_frontends(tmp_path)
    shutil.copy(assets / "campplus.onnx", tmp_path)
    tok, spk = load_reference_frontends(tmp_path)
    assert isinstance(tok, S3Tokenizer) and isinstance(spk, CampPlusOnnx)


def test_voice_checks_its_parts():
    from mgm_omni.generation.voice import Voice, VoiceError

    tokens = torch.zeros(1, 5, dtype=torch.int64)
    with pytest.raises(VoiceError, match="mel must be"):
        Voice(tokens, torch.zeros(1, 9, 80), torch.zeros(1, 192))
    with pytest.raises(VoiceError, match="tokens must be"):
        Voice(tokens.int(), torch.zeros(1, 10, 80), torch.zeros(1, 192))
    assert issubclass(ReferencePromptError, VoiceError)
    with pytest.raises(ValueError, match="too_long"):
        ReferenceConfig(too_long="cut")


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed (apt-get install flite)")
def test_real_speech_passes_the_silence_check_and_a_whisper_of_it_does_not(tmp_path):
    out = tmp_path / "slt.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", "The birch canoe slid on the smooth planks.", "-o", str(out)],
                   check=True, capture_output=True)
    wave, sr = load_audio(out)
    assert prepare_reference_audio(wave, sr).shape[0] == pytest.approx(wave.shape[0] * SR / sr, abs=1)
    with pytest.raises(ReferenceAudioError, match="silent"):
        prepare_reference_audio(wave * 1e-3, sr)  # about -70 dBFS


def test_reference_prompt_is_a_voice_and_a_token2wav_prompt(frontends):
    from mgm_omni.generation.voice import Voice
    from mgm_omni.generation.wave.token2wav import ReferencePrompt as FlowPrompt

    tok, spk = frontends
    prompt = build_reference_prompt(_speechy(1.5), SR, tok, spk)
    assert isinstance(prompt, Voice) and isinstance(prompt, FlowPrompt)
    assert prompt.n_tokens == prompt.tokens.shape[1] == prompt.mel.shape[1] // 2


def test_official_front_end_makes_the_same_voice(assets, tmp_path):
    """The VoiceFrontEnd behind a mouth's ``s3-v2`` + ``campplus`` declaration is build_reference_prompt on the
    folder's ONNX files, loaded on first use; through Voice.from_audio it also gets the transcript."""
    import soundfile as sf

    from mgm_omni.generation.voice import Voice

    wave = _speechy(2.0, seed=4)
    sf.write(str(tmp_path / "ref.wav"), wave.numpy(), SR)
    frontend = OfficialFrontEnd(assets)
    voice = Voice.from_audio(tmp_path / "ref.wav", "Hello there.", frontend)
    direct = build_reference_prompt(*load_audio(tmp_path / "ref.wav"), *load_reference_frontends(assets))
    assert torch.equal(voice.tokens, direct.tokens) and torch.allclose(voice.mel, direct.mel)
    assert voice.text == "Hello there." and voice.frontend == "cosyvoice2" and voice.seconds == 2.0
